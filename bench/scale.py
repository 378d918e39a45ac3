"""Scale-out throughput: `python -m bench --only scale [--quick] [--seconds S] [--keep]`.

Measures requests per second of one closed-loop load (OpenAI chat, non-stream, temperature 0.7 so
no cache answers it: every request goes through auth, the gate, routing, the savings layers'
checks, the upstream call, metering and the ledger) against:
  sqlite, 1 process     `python -m gateway serve`, the default deployment;
  pg+redis, N workers   `gunicorn -k gateway.gunicorn_worker.Worker -w N app:app` for N = 1, 2, 4,
                        with GATEWAY_DATABASE_URL (PostgreSQL) and GATEWAY_REDIS_URL: every worker's
                        holds, budgets, rate limits and caches go through Redis.
PostgreSQL and Redis are started here as the tests start them: a private cluster from Debian's
binaries (initdb + pg_ctl in a temp dir, as `postgres` when root) and a private redis-server, each on
a free loopback port, stopped at the end. The fake upstream is bench/upstream.py.

Scaling is stated per core: the report says how many cores the machine has, and the speed-up of N
workers over one is bounded by that count, which PostgreSQL, Redis, the fake upstream and the load
generator share with the workers (processes are not pinned here).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench import load, scenarios
from bench.procs import Child, free_port
from bench.suite import GATEWAY_CONFIG

ROOT = Path(__file__).resolve().parent.parent
WORKERS = (1, 2, 4)
CONCURRENCY = 32


class Postgres:
    """A throwaway PostgreSQL cluster (fsync off, trust auth on loopback)."""

    def __init__(self) -> None:
        found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
        if not found:
            raise RuntimeError("PostgreSQL is not installed: `make postgres` installs Debian's")
        self.bindir = Path(max(found, key=lambda p: int(Path(p).parts[-3].split(".")[0]))).parent
        import tempfile

        self.root = Path(tempfile.mkdtemp(prefix="gateway-bench-pg-"))  # its own: `postgres` must reach it
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.port = free_port()

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        proc = subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd,
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr or proc.stdout}")

    def start(self) -> None:
        data = self.root / "data"
        self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale",
                  "--no-sync")
        self._run("pg_ctl", "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o",
                  f"-F -p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200",
                  "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


def _wait_port(port: int, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on port {port}") from None
            time.sleep(0.05)


def _measure(port: int, api_key: str, seconds: float, warmup: float) -> dict:
    mix = [load.chat_request(port, api_key, scenarios.MODEL, False, extra={"temperature": 0.7})]
    load.run(port, mix, CONCURRENCY, seconds=warmup)
    result = load.run(port, mix, CONCURRENCY, seconds=seconds)
    if result.ok == 0:
        raise RuntimeError(f"no request succeeded: {result.first_error}")
    return {"rps": round(result.ok / result.seconds, 1), "ok": result.ok, "errors": result.errors,
            "p50_ms": round((load.percentile(result.latencies, 0.5) or 0) * 1000, 2)}


def run(seconds: float, warmup: float, keep: bool, log=print) -> dict:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-scale-"))
    children: list[Child] = []
    pg = Postgres()
    py = sys.executable
    results: dict = {"cores": os.cpu_count(), "concurrency": CONCURRENCY, "seconds": seconds, "targets": []}
    failed = True
    try:
        up_port = free_port()
        upstream = Child("upstream", [py, "-m", "bench.upstream", "--port", str(up_port)], tmp)
        children.append(upstream)
        redis_bin = shutil.which("redis-server")
        if redis_bin is None:
            raise RuntimeError("redis-server is not installed: `make redis` installs Debian's")
        redis_port = free_port()
        children.append(Child("redis", [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                        "--appendonly", "no", "--dir", str(tmp)], tmp))
        log(f"starting PostgreSQL, Redis and the fake upstream (logs in {tmp})")
        pg.start()
        _wait_port(redis_port)
        upstream.wait_http(up_port, "/", {404})
        config = tmp / "gateway.yaml"
        config.write_text(GATEWAY_CONFIG.format(port=up_port, key=scenarios.UPSTREAM_KEY, model=scenarios.MODEL,
                                                claude=scenarios.CLAUDE))
        base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        base |= {"GATEWAY_CONFIG": str(config), "PYTHONUNBUFFERED": "1", "GATEWAY_SECRET_KEY": "bench-secret",
                 "PYTHONPATH": str(ROOT)}

        # sqlite, one process: the default deployment
        env = base | {"GATEWAY_INSTANCE": str(tmp / "sqlite")}
        port = free_port()
        server = Child("sqlite", [py, "-m", "gateway", "serve", "--port", str(port)], tmp, env=env)
        children.append(server)
        api_key = re.search(r"API key:\s+(gw-\S+)", server.wait_stdout("API key:")).group(1)
        server.wait_http(port, "/readyz", {200})
        log("measuring sqlite, 1 process")
        results["targets"].append({"name": "sqlite, 1 process", "workers": 1, **_measure(port, api_key, seconds,
                                                                                          warmup)})
        server.stop()

        # PostgreSQL + Redis, N gunicorn gevent workers on one database
        env = base | {"GATEWAY_INSTANCE": str(tmp / "pg"), "GATEWAY_DATABASE_URL": pg.url(),
                      "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}
        init = subprocess.run([py, "-m", "gateway", "init"], env=env, capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        if init.returncode != 0:
            raise RuntimeError(f"gateway init failed: {init.stderr[-2000:]}")
        api_key = re.search(r"API key:\s+(gw-\S+)", init.stdout).group(1)
        gunicorn = str(Path(py).parent / "gunicorn")
        for n in WORKERS:
            port = free_port()
            server = Child(f"gunicorn-{n}", [gunicorn, "-k", "gateway.gunicorn_worker.Worker", "-w", str(n),
                                             "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "app:app"],
                           tmp, env=env | {"GATEWAY_WORKERS": str(n)})
            children.append(server)
            server.wait_http(port, "/readyz", {200}, timeout=120)
            log(f"measuring pg+redis, {n} worker(s)")
            results["targets"].append({"name": f"pg+redis, {n} worker{'s' if n > 1 else ''}", "workers": n,
                                       **_measure(port, api_key, seconds, warmup)})
            server.stop()
        failed = False
    finally:
        for child in reversed(children):
            child.stop()
        pg.stop()
        if failed:
            for child in children:
                log(child.log_tail())
        if keep or failed:
            log(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    one = next(t["rps"] for t in results["targets"] if t["name"] == "pg+redis, 1 worker")
    for t in results["targets"]:
        t["vs_1_worker"] = round(t["rps"] / one, 2)
        t["per_core_rps"] = round(t["rps"] / min(t["workers"], results["cores"] or 1), 1)
    return results


def markdown(results: dict) -> str:
    cores = results["cores"]
    lines = [f"## Scale-out throughput ({cores} cores on this machine)", "",
             f"Non-stream chat, cache misses, {results['concurrency']} connections, {results['seconds']:g} s "
             "per target. Workers, PostgreSQL, Redis, the fake upstream and the load generator all share "
             f"these {cores} cores: past {cores} workers no speed-up is possible here.", "",
             "| target | req/s | p50 ms | vs 1 worker | req/s per core used |", "|---|---:|---:|---:|---:|"]
    for t in results["targets"]:
        lines.append(f"| {t['name']} | {t['rps']:.1f} | {t['p50_ms']:.2f} | {t['vs_1_worker']:.2f}x | "
                     f"{t['per_core_rps']:.1f} |")
    return "\n".join(lines)
