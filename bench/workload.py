"""`python -m bench.workload [--seed N] [--keep] [--json PATH]`: the replayable savings workload.

Plays the six parts of bench/workload_parts.py (repeated prompts, paraphrases, bursts, RAG with
repeated chunks, long chats, long Anthropic system prompts) twice: straight to the fake upstream
(bench/upstream.py, metered `work-*` models), then through the gateway with every savings layer on
(exact and semantic cache, in-flight dedupe, prompt caching, compression in `trim` mode with a
2,000-token budget, context dedupe, output budget). Each part runs direct, then through the gateway.

Counted per part: upstream calls and the tokens the upstream billed, from the fake's own record
(GET /_bench/usage, diffed around each run); cost direct = those direct calls at the list prices
below (a direct call carries no cache_control, so it is billed at list price); cost through the
gateway = what the gateway charged (GET /v1/usage/summary `totals.charge`, diffed, after the
ledger writer caught up), and saved by mechanism from its `by_mechanism`. The gateway's charge
is checked against the fake's bill for the same calls. Prints two Markdown tables and writes
bench/results/workload.json. Measures; asserts nothing about timings.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import gevent
import orjson

from bench import load, workload_parts, workload_report
from bench.procs import Child, free_port
from bench.scenarios import UPSTREAM_KEY
from bench.workload_parts import Call, Part

RESULTS = Path(__file__).resolve().parent / "results" / "workload.json"
MECHANISMS = ("exact_cache", "semantic_cache", "inflight_dedupe", "prompt_cache", "compression",
              "context_dedupe", "routing")  # what GET /v1/usage/summary attributes savings to


@dataclass(frozen=True)
class Price:
    """USD per million tokens, the catalog's list prices (gateway/default_catalog.yaml)."""

    upstream: str
    provider: str
    input: float
    output: float
    cached: float
    write_premium: float  # cache writes cost input x this (Anthropic: 1.25)


MODELS = {
    workload_parts.GPT: Price("work-gpt-4o", "work-openai", 2.50, 10.00, 1.25, 1.0),
    workload_parts.GPT_SLOW: Price("work-gpt-4o-slow", "work-openai", 2.50, 10.00, 1.25, 1.0),
    workload_parts.CLAUDE: Price("work-claude-sonnet-4-5", "work-anthropic", 3.00, 15.00, 0.30, 1.25),
}
UPSTREAM = {p.upstream: p for p in MODELS.values()}

CONFIG = """\
providers:
  - {{name: work-openai, kind: openai, base_url: "http://127.0.0.1:{port}/v1", api_key: {key},
     allow_private: true}}
  - {{name: work-anthropic, kind: anthropic, base_url: "http://127.0.0.1:{port}", api_key: {key},
     allow_private: true}}
models:
{models}
savings:
  exact_cache: {{enabled: true}}
  semantic_cache: {{enabled: true}}
  inflight_dedupe: {{enabled: true}}
  prompt_cache: {{enabled: true}}
  compression: {{enabled: true, mode: trim, budget_tokens: 2000}}
  context_dedupe: {{enabled: true}}
  output_budget: {{enabled: true}}
"""


def gateway_config(port: int) -> str:
    models = "\n".join(
        f"  - slug: {slug}\n    routes:\n      - {{provider: {p.provider}, upstream_model: {p.upstream}, "
        f"input_per_mtok: {p.input}, output_per_mtok: {p.output}, cached_input_per_mtok: {p.cached}}}"
        for slug, p in MODELS.items())
    return CONFIG.format(port=port, key=UPSTREAM_KEY, models=models)


def upstream_micros(model: str, used: dict[str, int]) -> float:
    """What a model's upstream bills for these token counts (cache reads and writes at their prices)."""
    p = UPSTREAM[model]
    plain = used["input_tokens"] - used["cache_read_tokens"] - used["cache_write_tokens"]
    return (plain * p.input + used["cache_read_tokens"] * p.cached
            + used["cache_write_tokens"] * p.input * p.write_premium + used["output_tokens"] * p.output)


def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


# ---- talking to the fake and the gateway -------------------------------------------------------

class Endpoint:
    """Where calls go: the fake upstream (direct) or the gateway, with the matching credentials."""

    def __init__(self, port: int, key: str, direct: bool) -> None:
        self.port, self.key, self.direct = port, key, direct

    def request(self, call: Call) -> load.Request:
        model = MODELS[call.model].upstream if self.direct else call.model
        body = {"model": model, **call.body}
        stream = bool(body.get("stream"))
        if call.endpoint == "chat":
            headers = {"Authorization": f"Bearer {self.key}"}
            raw = load.post_bytes(self.port, "/v1/chat/completions", headers, body)
            return raw, load.OPENAI_DONE if stream else None
        headers = {"x-api-key": self.key, "anthropic-version": load.ANTHROPIC_VERSION}
        raw = load.post_bytes(self.port, "/v1/messages", headers, body)
        return raw, load.ANTHROPIC_DONE if stream else None

    def get(self, path: str) -> dict:
        raw = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Bearer {self.key}\r\n"
               "Accept: application/json\r\n\r\n").encode()
        conn = load.Conn(self.port)
        try:
            status, _, _, body = conn.request(raw)
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:300]!r}")
        return orjson.loads(body)


def play(endpoint: Endpoint, part: Part) -> Counter:
    """Send the part's calls in order (a burst's calls at once); count `x-gateway-cache` answers."""
    answered: Counter = Counter()
    conns: list[load.Conn] = []

    def send(conn: load.Conn, call: Call) -> None:
        raw, marker = endpoint.request(call)
        status, _, _, body = conn.request(raw)
        if status != 200 or (marker is not None and marker not in body):
            raise RuntimeError(f"part {part.key} ({'direct' if endpoint.direct else 'gateway'}): "
                               f"HTTP {status}: {body[:300]!r}")
        answered[conn.headers.get("x-gateway-cache", "direct")] += 1

    try:
        for step in part.steps:
            while len(conns) < len(step):
                conns.append(load.Conn(endpoint.port))
            if len(step) == 1:
                send(conns[0], step[0])
            else:
                gevent.joinall([gevent.spawn(send, conns[i], call) for i, call in enumerate(step)],
                               raise_error=True)
    finally:
        for conn in conns:
            conn.close()
    return answered


def fake_usage(direct: Endpoint) -> dict[str, dict[str, int]]:
    """What the fake upstream billed so far, per upstream model."""
    return direct.get("/_bench/usage")


def usage_diff(before: dict, after: dict) -> dict[str, dict[str, int]]:
    return {model: {k: v - before.get(model, {}).get(k, 0) for k, v in counts.items()}
            for model, counts in after.items()
            if any(v != before.get(model, {}).get(k, 0) for k, v in counts.items())}


def summary_after(gateway: Endpoint, requests: int, timeout: float = 30.0) -> dict:
    """GET /v1/usage/summary once the ledger writer has rolled up `requests` requests in all."""
    deadline = time.monotonic() + timeout
    while True:
        summary = gateway.get("/v1/usage/summary")
        if summary["totals"]["requests"] >= requests:
            return summary
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway's usage summary shows {summary['totals']['requests']} requests "
                               f"after {timeout:g} s, expected {requests}")
        time.sleep(0.1)


def summary_diff(before: dict, after: dict) -> dict:
    def totals(s: dict) -> dict[str, int]:
        t = s["totals"]
        return {"requests": t["requests"], "errors": t["errors"],
                "benchmark_micros": micros(t["benchmark_cost"]), "charge_micros": micros(t["charge"]),
                "saved_micros": micros(t["saved"])}

    def mechanisms(s: dict) -> dict[str, int]:
        return {m["mechanism"]: micros(m["saved"]) for m in s["by_mechanism"]}

    a, b = totals(before), totals(after)
    ma, mb = mechanisms(before), mechanisms(after)
    return {**{k: b[k] - a[k] for k in a}, "saved_by": {m: mb.get(m, 0) - ma.get(m, 0) for m in MECHANISMS}}


# ---- the run ------------------------------------------------------------------------------------

def side(used: dict[str, dict[str, int]]) -> dict:
    """Totals over models of what the upstream saw and billed."""
    keys = ("calls", "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")
    out = {k: sum(u[k] for u in used.values()) for k in keys}
    out["upstream_micros"] = round(sum(upstream_micros(m, u) for m, u in used.items()))
    out["by_model"] = used
    return out


def run_part(part: Part, direct: Endpoint, gateway: Endpoint, log) -> dict:
    started = time.perf_counter()
    before = fake_usage(direct)
    play(direct, part)
    middle = fake_usage(direct)
    ledger = summary_after(gateway, 0)
    answered = play(gateway, part)
    after = fake_usage(direct)
    ledger_after = summary_after(gateway, ledger["totals"]["requests"] + part.calls)
    d, g = side(usage_diff(before, middle)), side(usage_diff(middle, after))
    charged = summary_diff(ledger, ledger_after)
    g["cost_micros"] = charged["charge_micros"]
    d["cost_micros"] = d["upstream_micros"]  # no cache_control direct: list price
    result = {"key": part.key, "name": part.name, "mechanism": part.mechanism, "requests": part.calls,
              "direct": d, "gateway": g, "ledger": charged, "answered": dict(answered),
              "seconds": round(time.perf_counter() - started, 2)}
    log(f"  {part.key}  {part.name:<34} calls {d['calls']:>4} -> {g['calls']:<4} "
        f"cost ${d['cost_micros'] / 1e6:.5f} -> ${g['cost_micros'] / 1e6:.5f}  answered {dict(answered)}")
    if charged["errors"]:
        log(f"  note: part {part.key}: the gateway's ledger shows {charged['errors']} errors")
    if abs(g["upstream_micros"] - g["cost_micros"]) > part.calls:  # more than rounding: say so
        log(f"  note: part {part.key}: the gateway charged {g['cost_micros']} micros, the upstream billed "
            f"{g['upstream_micros']}")
    return result


def totals(parts: list[dict]) -> dict:
    out: dict = {"key": "total", "name": "total", "requests": sum(p["requests"] for p in parts)}
    for name in ("direct", "gateway"):
        out[name] = {k: sum(p[name][k] for p in parts) for k in parts[0][name] if k != "by_model"}
    out["ledger"] = {k: sum(p["ledger"][k] for p in parts) for k in parts[0]["ledger"] if k != "saved_by"}
    out["ledger"]["saved_by"] = {m: sum(p["ledger"]["saved_by"][m] for p in parts) for m in MECHANISMS}
    answered: Counter = Counter()
    for p in parts:
        answered.update(p["answered"])
    out["answered"] = dict(answered)
    return out


def start(tmp: Path, log) -> tuple[list[Child], Endpoint, Endpoint]:
    py = sys.executable
    up_port, gw_port = free_port(), free_port()
    children = [Child("upstream", [py, "-m", "bench.upstream", "--port", str(up_port)], tmp)]
    children[0].wait_http(up_port, "/", {404})
    config = tmp / "gateway.yaml"
    config.write_text(gateway_config(up_port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {"GATEWAY_INSTANCE": str(tmp / "instance"), "GATEWAY_CONFIG": str(config),
            "PYTHONUNBUFFERED": "1"}
    children.append(Child("gateway", [py, "-m", "gateway", "serve", "--port", str(gw_port)], tmp, env=env))
    key = re.search(r"API key:\s+(gw-\S+)", children[1].wait_stdout("API key:")).group(1)
    children[1].wait_http(gw_port, "/readyz", {200})
    log(f"fake upstream on :{up_port}, gateway on :{gw_port} (logs in {tmp})")
    return children, Endpoint(up_port, UPSTREAM_KEY, True), Endpoint(gw_port, key, False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workload", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, gateway instance)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="gateway-workload-"))
    children: list[Child] = []
    failed, started = True, time.perf_counter()
    try:
        children, direct, gateway = start(tmp, log)
        parts = [run_part(part, direct, gateway, log) for part in workload_parts.build(args.seed)]
        failed = False
    finally:
        for child in reversed(children):
            child.stop()
        if failed:
            for child in children:
                log(child.log_tail())
        if args.keep or failed:
            log(f"(kept {tmp})")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results = {"seed": args.seed, "elapsed_seconds": round(time.perf_counter() - started, 1),
               "prices_per_mtok": {slug: vars(p) for slug, p in MODELS.items()},
               "parts": parts, "total": totals(parts)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(workload_report.markdown(results))
    log(f"results: {args.json} ({results['elapsed_seconds']:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
