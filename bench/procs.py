"""Child processes of the benchmark: start, wait until ready, read CPU time and RSS, stop.

Each child runs in its own session (process group), logs to files in the run's temp dir, and
is stopped with SIGTERM then SIGKILL on its whole group. CPU and memory come from /proc.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 2.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def machine_cpu_seconds() -> float:
    """CPU time all processes on the machine have used (busy jiffies in /proc/stat), in seconds."""
    fields = Path("/proc/stat").read_text().split()[1:9]  # user nice system idle iowait irq softirq steal
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


class Child:
    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None,
                 cpus: set[int] | None = None) -> None:
        self.name = name
        self.stdout_path = logdir / f"{name}.out"
        self.stderr_path = logdir / f"{name}.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
            )
        self.pid = self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}\n{self.log_tail()}")

    def wait_http(self, port: int, path: str, ok: set[int], timeout: float = 60.0) -> None:
        """Poll GET path until its status is in `ok`."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            try:
                if http_get(port, path) in ok:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_stdout(self, marker: str, timeout: float = 60.0) -> str:
        """The first stdout line containing `marker` (the child must run unbuffered)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout_path.read_text(errors="replace").splitlines():
                if marker in line:
                    return line
            self.check_alive()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no line with {marker!r} on stdout\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(out)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it if it has not exited within `timeout`."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                return
        try:
            os.killpg(self.pid, signal.SIGKILL)  # stragglers in the group, if any
        except ProcessLookupError:
            pass
        self.proc.wait()
