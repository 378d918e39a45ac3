"""The benchmark run: start the three targets, run every scenario against each, collect numbers.

Targets, each its own process on 127.0.0.1:
  direct       the fast fake upstream itself (bench/upstream.py): the baseline for *added* latency;
  passthrough  the bare gevent + requests reference proxy (bench/passthrough.py);
  gateway      `python -m gateway serve` on a fresh GATEWAY_INSTANCE with a GATEWAY_CONFIG routing
               `bench/fast` to the fake upstream as an OpenAI-kind provider and `bench/claude` to it
               as an Anthropic-kind one (auth, routing, savings at their defaults, metering and the
               ledger all on).
What each scenario sends to which target is in bench/scenarios.py.
With 2+ CPUs the target under test gets CPU 0 to itself; the fake upstream and this process
(the load generator) share the last CPU, so neither steals the measured server's CPU.
Each scenario checks one request per target, warms every target up at its concurrency, then
measures them in interleaved rounds (direct, pass-through, gateway, direct, ...), so outside noise
hits them alike.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gevent

from bench import load, scenarios
from bench.procs import Child, free_port, machine_cpu_seconds
from bench.scenarios import Scenario

ROOT = Path(__file__).resolve().parent.parent

GATEWAY_CONFIG = """\
providers:
  - name: bench-upstream
    kind: openai
    base_url: http://127.0.0.1:{port}/v1
    api_key: {key}
    allow_private: true
  - name: bench-anthropic
    kind: anthropic
    base_url: http://127.0.0.1:{port}
    api_key: {key}
    allow_private: true
models:
  - slug: {model}
    routes:
      - {{provider: bench-upstream, upstream_model: fast-model, input_per_mtok: 0.01, output_per_mtok: 0.04}}
  - slug: {claude}
    routes:
      - {{provider: bench-anthropic, upstream_model: fast-claude, input_per_mtok: 0.01,
          output_per_mtok: 0.04}}
  - slug: bench/faulty
    routes:
      - {{provider: bench-upstream, upstream_model: fault-mix, input_per_mtok: 0.01, output_per_mtok: 0.04}}
routing: {{retries: 0, breaker_failures: 1000000}}
"""


@dataclass
class Target:
    name: str
    port: int
    server: Child  # the process whose CPU is charged to this target
    api_key: str = "unused"
    served: int = 0


def _cpu_sets(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(CPUs for the server under test, CPUs for the fake upstream and the load generator)."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[-1]}


class Bench:
    def __init__(self, seconds: float, warmup: float, rounds: int, pin: bool, log=print) -> None:
        self.seconds, self.warmup, self.rounds, self.log = seconds, warmup, rounds, log
        self.tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
        self.server_cpus, self.side_cpus = _cpu_sets(pin)
        self.children: list[Child] = []
        self.targets: dict[str, Target] = {}

    # ---- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               cpus: set[int] | None = None) -> Child:
        child = Child(name, argv, self.tmp, env=env, cpus=cpus)
        self.children.append(child)
        return child

    def start(self) -> None:
        if self.side_cpus:
            os.sched_setaffinity(0, self.side_cpus)
        py = sys.executable
        up_port, pt_port, gw_port = free_port(), free_port(), free_port()
        upstream = self._spawn("upstream", [py, "-m", "bench.upstream", "--port", str(up_port)],
                               cpus=self.side_cpus)
        passthrough = self._spawn("passthrough", [py, "-m", "bench.passthrough", "--port", str(pt_port),
                                                  "--upstream", f"http://127.0.0.1:{up_port}/v1"],
                                  cpus=self.server_cpus)
        config = self.tmp / "gateway.yaml"
        config.write_text(GATEWAY_CONFIG.format(port=up_port, key=scenarios.UPSTREAM_KEY,
                                                model=scenarios.MODEL, claude=scenarios.CLAUDE))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env |= {"GATEWAY_INSTANCE": str(self.tmp / "instance"), "GATEWAY_CONFIG": str(config),
                "PYTHONUNBUFFERED": "1"}
        gateway = self._spawn("gateway", [py, "-m", "gateway", "serve", "--port", str(gw_port)], env=env,
                              cpus=self.server_cpus)
        upstream.wait_http(up_port, "/", {404})
        passthrough.wait_http(pt_port, "/", {200})
        line = gateway.wait_stdout("API key:")
        api_key = re.search(r"API key:\s+(gw-\S+)", line).group(1)
        gateway.wait_http(gw_port, "/readyz", {200})
        self.targets = {
            "direct": Target("direct", up_port, upstream),
            "passthrough": Target("passthrough", pt_port, passthrough),
            "gateway": Target("gateway", gw_port, gateway, api_key=api_key),
        }

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def cleanup(self, keep: bool) -> None:
        if keep:
            self.log(f"(kept {self.tmp})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- measurements ----------------------------------------------------------------------
    def _mixes(self, scenario: Scenario) -> dict[str, tuple[Target, list[load.Request]]]:
        """label -> (the process it measures, the requests it sends)."""
        out = {}
        for label, process in scenarios.TARGETS[scenario.kind]:
            target = self.targets[process]
            out[label] = (target, [scenarios.request(scenario, label, target.port, target.api_key)])
        return out

    def _check(self, scenario: Scenario, label: str, target: Target, mix: list[load.Request]) -> None:
        """Fail fast on a misconfiguration: two requests must succeed, and a cache must answer as expected."""
        conn = load.Conn(target.port)
        try:
            for _ in range(2):
                status, _, _, body = conn.request(mix[0][0])
                target.served += 1
                if status != 200 or (mix[0][1] is not None and mix[0][1] not in body):
                    raise RuntimeError(f"{scenario.name} / {label}: smoke request failed: HTTP {status}: "
                                       f"{body[:300]!r}\n{target.server.log_tail()}")
        finally:
            conn.close()
        expected = scenarios.EXPECT_CACHE.get((scenario.kind, label))
        if expected and conn.headers.get("x-gateway-cache") != expected:
            raise RuntimeError(f"{scenario.name} / {label}: x-gateway-cache is "
                               f"{conn.headers.get('x-gateway-cache')!r}, expected {expected!r}")

    def _slice(self, scenario: Scenario, target: Target, mix: list[load.Request],
               seconds: float) -> tuple[load.Result, list[float]]:
        """One measured slice, with CPU counters (server, upstream, client, ours, machine) read around it."""
        upstream = self.targets["direct"].server

        def counters() -> list[float]:
            return [target.server.cpu_seconds(), upstream.cpu_seconds(), _own_cpu(), self._our_cpu(),
                    machine_cpu_seconds()]

        before = counters()
        result = load.run(target.port, mix, scenario.concurrency, seconds=seconds)
        used = [b - a for a, b in zip(before, counters(), strict=True)]
        target.served += result.ok + result.errors
        target.server.check_alive()
        return result, used

    def measure(self, scenario: Scenario) -> list[dict]:
        """The scenario against every target: a check and a warm-up each, then `rounds` interleaved
        slices per target (so load from outside the benchmark, if any, falls on all targets alike)."""
        mixes = self._mixes(scenario)
        for label, (target, mix) in mixes.items():
            self._check(scenario, label, target, mix)
            warm = load.run(target.port, mix, scenario.concurrency, seconds=self.warmup)
            target.served += warm.ok + warm.errors
        labels = list(mixes)
        slices: dict[str, list] = {label: [] for label in labels}
        for i in range(self.rounds):
            shift = i % len(labels)
            for label in labels[shift:] + labels[:shift]:
                target, mix = mixes[label]
                slices[label].append(self._slice(scenario, target, mix, self.seconds / self.rounds))
        return [_summary(scenario, label, slices[label]) for label in labels]

    def _our_cpu(self) -> float:
        return _own_cpu() + sum(child.cpu_seconds() for child in self.children)

    def run_scenarios(self, selected: tuple[Scenario, ...] = scenarios.SCENARIOS) -> list[dict]:
        runs = []
        for scenario in selected:
            for run in self.measure(scenario):
                runs.append(run)
                self.log(f"  {scenario.name:<26} {run['target']:<21} {run['rps']:8.0f} req/s"
                         f"  p50 {run['p50_ms']:.3f} ms  p99 {run['p99_ms']:.3f} ms  errors {run['errors']}"
                         f"  other load {run['other_load_cores']:.2f} cores")
        return runs

    def memory_soak(self, total: int, every: int = 10_000) -> dict:
        """`total` gateway requests at c=32 (one stream in four), sampling RSS every `every`; one
        request in four meets a fault (an upstream 500, malformed JSON or SSE, wrong-typed usage,
        a stream cut short: bench/upstream.py's `fault-mix`), which is counted among the errors."""
        gateway = self.targets["gateway"]
        every = min(every, max(1, total // 10))
        mix = [load.chat_request(gateway.port, gateway.api_key, model, stream)
               for model, stream in ((scenarios.MODEL, False), (scenarios.MODEL, False), (scenarios.MODEL, True),
                                     ("bench/faulty", False), (scenarios.MODEL, False), (scenarios.MODEL, False),
                                     (scenarios.MODEL, True), ("bench/faulty", True))]
        samples = [{"requests": 0, "rss_mb": round(gateway.server.rss_mb(), 1)}]

        def on_done(done: int) -> None:
            if done % every == 0:
                samples.append({"requests": done, "rss_mb": round(gateway.server.rss_mb(), 1)})
                self.log(f"  memory: {done:>8} requests  RSS {samples[-1]['rss_mb']:.1f} MB")

        started = time.perf_counter()
        result = load.run(gateway.port, mix, 32, requests=total, on_done=on_done)
        gateway.served += result.ok + result.errors
        faults = sum(1 for i in range(total) if i % len(mix) in (3, 7))  # the bench/faulty requests
        return {"requests": total, "errors": result.errors, "fault_requests": faults, "first_error": result.first_error,
                "seconds": round(time.perf_counter() - started, 1), "samples": samples}

    def memory_peak(self, connections: int = 256, total: int = 5_000) -> dict:
        """`total` requests over `connections` keep-alive connections at once, mixing OpenAI chat
        (stream and not), Anthropic pass-through and translation; the gateway's RSS is sampled
        every 50 ms throughout, and its peak reported (the goal: <= 120 MB)."""
        gateway = self.targets["gateway"]
        port, key = gateway.port, gateway.api_key
        # A ~3 KB prompt is one the prompt-cache layer must count (1,024 tokens is its threshold).
        long_prompt = {"messages": [{"role": "system", "content": "You are a careful, terse assistant. " * 90},
                                    *load.MESSAGES[1:]]}
        mix = [load.chat_request(port, key, scenarios.MODEL, False), load.chat_request(port, key, scenarios.MODEL, True),
               load.chat_request(port, key, scenarios.MODEL, False, extra=long_prompt),
               load.messages_request(port, key, scenarios.CLAUDE, False),
               load.messages_request(port, key, scenarios.CLAUDE, True),
               load.chat_request(port, key, scenarios.CLAUDE, True)]
        start = round(gateway.server.rss_mb(), 1)
        peak = [start]

        def sample() -> None:
            while True:
                peak[0] = max(peak[0], gateway.server.rss_mb())
                gevent.sleep(0.05)

        sampler = gevent.spawn(sample)
        started = time.perf_counter()
        try:
            result = load.run(port, mix, connections, requests=total)
        finally:
            sampler.kill()
        gateway.served += result.ok + result.errors
        end = round(gateway.server.rss_mb(), 1)
        self.log(f"  memory: {connections} connections, {total} requests  RSS {start:.1f} -> {end:.1f} MB "
                 f"(peak {peak[0]:.1f})  errors {result.errors}")
        return {"connections": connections, "requests": total, "errors": result.errors,
                "first_error": result.first_error, "seconds": round(time.perf_counter() - started, 1),
                "start_mb": start, "end_mb": end, "peak_mb": round(max(peak[0], end), 1)}

    def environment(self) -> dict:
        return {
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": _cpu_model(), "pinned": self.server_cpus is not None,
            "server_cpus": sorted(self.server_cpus or []), "side_cpus": sorted(self.side_cpus or []),
            "seconds_per_run": self.seconds, "warmup_seconds": self.warmup, "rounds": self.rounds,
        }


def _summary(scenario: Scenario, target: str, slices: list[tuple[load.Result, list[float]]]) -> dict:
    seconds = sum(r.seconds for r, _ in slices)
    ok, errors = sum(r.ok for r, _ in slices), sum(r.errors for r, _ in slices)
    lat = [x for r, _ in slices for x in r.latencies]
    ttfb = [x for r, _ in slices for x in r.ttfbs]
    server, upstream, client, ours, machine = (sum(used[i] for _, used in slices) for i in range(5))
    return {
        "scenario": scenario.name, "group": scenario.group, "kind": scenario.kind, "target": target,
        "stream": scenario.stream,
        "concurrency": scenario.concurrency, "seconds": round(seconds, 3), "rounds": len(slices),
        "requests": ok, "errors": errors,
        "first_error": next((r.first_error for r, _ in slices if r.first_error), None),
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": _ms(load.percentile(lat, 0.50)), "p99_ms": _ms(load.percentile(lat, 0.99)),
        "ttfb_p50_ms": _ms(load.percentile(ttfb, 0.50)) if scenario.stream else None,
        "ttfb_p99_ms": _ms(load.percentile(ttfb, 0.99)) if scenario.stream else None,
        "server_cpu_s": round(server, 3),
        "cpu_ms_per_req": server * 1000 / (ok + errors) if ok + errors else None,
        "upstream_cpu_s": round(upstream, 3),
        "client_cpu_s": round(client, 3),
        # cores kept busy by processes outside the benchmark (noise: ideally ~0)
        "other_load_cores": round(max(0.0, machine - ours) / seconds, 2) if seconds else 0.0,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
