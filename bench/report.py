"""Derived numbers (added latency, ratios, goals) and the Markdown report of a run.

*Added* latency of a target is its percentile minus the direct upstream's same percentile in
the same scenario. Goals are reported as pass/fail; nothing here fails the process. Comparisons
(dialects, savings on vs off, cache hits) are reported as ratios, with no pass/fail.
"""

from __future__ import annotations

RSS_LIMIT_MB = 120.0
NOISE_CORES = 0.15  # CPU used by processes outside the benchmark, above which the report warns
RSS_FLAT_MB = 5.0  # growth allowed from the first sample (after the first 10k requests) to the last

GOALS = (
    # key, label, scenario, metric, comparison, limit
    ("throughput", "non-stream c=32 throughput", "non-stream c=32", "rps", ">=", 0.80),
    ("cpu_per_request", "non-stream c=32 CPU per request", "non-stream c=32", "cpu_ms_per_req", "<=", 1.25),
    ("added_p50_c1", "added p50 latency, c=1 keep-alive", "non-stream c=1", "added_p50_ms", "<=", 1.50),
    ("added_ttfb_p50_stream", "added stream TTFB p50, c=32", "stream c=32", "added_ttfb_p50_ms", "<=", 1.25),
)


def add_deltas(runs: list[dict]) -> None:
    """Fill added_* fields of passthrough/gateway runs from the direct run of the same scenario."""
    direct = {r["scenario"]: r for r in runs if r["target"] == "direct"}
    for r in runs:
        base = direct.get(r["scenario"])
        for key in ("p50_ms", "p99_ms", "ttfb_p50_ms", "ttfb_p99_ms"):
            mine, theirs = r.get(key), base.get(key) if base and r["target"] != "direct" else None
            r["added_" + key] = None if mine is None or theirs is None else mine - theirs


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def goals(runs: list[dict], memory: dict | None, rss: dict) -> list[dict]:
    by = {(r["scenario"], r["target"]): r for r in runs}
    out = []
    for key, label, scenario, metric, op, limit in GOALS:
        if (scenario, "gateway") not in by:  # not run (python -m bench --only ...)
            continue
        gw, pt = by[(scenario, "gateway")].get(metric), by[(scenario, "passthrough")].get(metric)
        ratio = _ratio(gw, pt)
        ok = None if ratio is None else (ratio >= limit if op == ">=" else ratio <= limit)
        out.append({"key": key, "label": f"{label}, gateway / pass-through", "gateway": gw, "passthrough": pt,
                    "metric": metric, "ratio": ratio, "target": f"{op} {limit:.2f}x", "pass": ok})
    out.append(memory_goal(memory, rss))
    return out


# label, scenario, (measured target, baseline target), [(measure, metric), ...]
LATENCY = [("p50", "p50_ms"), ("p99", "p99_ms")]
TTFB = [("TTFB p50", "ttfb_p50_ms"), ("TTFB p99", "ttfb_p99_ms")]
VS_DIRECT = ("gateway", "direct")
TRANSLATED = "Translated (OpenAI client → Anthropic)"
COMPARISONS = (
    ("Anthropic pass-through, non-stream c=1", "anthropic non-stream c=1", VS_DIRECT, LATENCY),
    ("Anthropic pass-through, stream c=32", "anthropic stream c=32", VS_DIRECT, TTFB),
    (f"{TRANSLATED}, non-stream c=1", "translated non-stream c=1", VS_DIRECT, LATENCY),
    (f"{TRANSLATED}, stream c=32", "translated stream c=32", VS_DIRECT, TTFB),
    ("Savings miss c=1: layers at defaults vs all off", "savings miss c=1",
     ("gateway", "gateway, savings off"),
     [("added p50", "added_p50_ms"), ("added p99", "added_p99_ms"), ("CPU ms/req", "cpu_ms_per_req")]),
    ("Exact-cache hit c=1 vs direct upstream", "cache hit c=1", VS_DIRECT, LATENCY),
)


def comparisons(runs: list[dict]) -> list[dict]:
    """One row per comparison and measure: value, baseline, difference and ratio (value / baseline)."""
    by = {(r["scenario"], r["target"]): r for r in runs}
    out = []
    for label, scenario, (target, base), measures in COMPARISONS:
        if (scenario, target) not in by:
            continue
        mine, theirs = by[(scenario, target)], by[(scenario, base)]
        for measure, metric in measures:
            a, b = mine.get(metric), theirs.get(metric)
            out.append({"label": label, "scenario": scenario, "target": target, "baseline": base,
                        "measure": measure, "metric": metric, "value": a, "baseline_value": b,
                        "difference": None if a is None or b is None else a - b, "ratio": _ratio(a, b)})
    return out


def memory_goal(memory: dict | None, rss: dict) -> dict:
    goal = {"key": "memory", "label": "gateway resident memory (RSS)",
            "target": f"<= {RSS_LIMIT_MB:.0f} MB, flat"}
    conns = rss.get("connections")
    if conns:  # the peak under 256 connections counts against the limit too
        goal["peak_connections_mb"] = conns["peak_mb"]
    conns_ok = not conns or (conns["peak_mb"] <= RSS_LIMIT_MB and not conns["errors"])
    conns_text = f"; peak {conns['peak_mb']:.1f} MB at {conns['connections']} connections" if conns else ""
    if memory is None:
        goal |= {"pass": None if conns_ok else False,
                 "measured": f"{rss['before_mb']:.1f} MB -> {rss['after_mb']:.1f} MB after "
                 f"{rss['requests']} requests{conns_text} (flatness: run with --memory 100000)"}
        return goal
    samples = memory["samples"]
    first, last = samples[min(1, len(samples) - 1)], samples[-1]
    growth = last["rss_mb"] - first["rss_mb"]
    peak = max(s["rss_mb"] for s in samples)
    goal |= {"peak_mb": peak, "growth_mb": growth,
             "pass": peak <= RSS_LIMIT_MB and growth <= RSS_FLAT_MB and conns_ok
                    and memory["errors"] <= memory.get("fault_requests", 0),  # only the faults mixed in fail
             "measured": f"{last['rss_mb']:.1f} MB after {last['requests']} requests (peak {peak:.1f}, "
                         f"{growth:+.1f} MB since {first['requests']}){conns_text}"}
    return goal


# ---- Markdown -----------------------------------------------------------------------------------

def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    decimals = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2 if abs(v) >= 1 else 3
    return f"{v:.{decimals}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "**pass**" if ok else "**FAIL**"


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "### Gateway benchmark",
        "",
        f"{env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}; "
        + (f"server under test pinned to CPU {env['server_cpus']}, fake upstream and load generator on "
           f"CPU {env['side_cpus']}; " if env["pinned"] else "no CPU pinning; ")
        + f"{env['seconds_per_run']:g} s per target and scenario ({env['rounds']} interleaved "
        f"round{'s' if env['rounds'] != 1 else ''}) after "
        f"{env['warmup_seconds']:g} s warm-up. Times in ms; "
        "*added* = target minus direct upstream at the same percentile; CPU = server process CPU per "
        "request.",
        "",
        "| scenario | target | req/s | p50 | p99 | added p50 | added p99 | TTFB p50 | TTFB p99 "
        "| added TTFB p50 | added TTFB p99 | CPU ms/req | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results["runs"]:
        cpu = "–" if r["cpu_ms_per_req"] is None else f"{r['cpu_ms_per_req']:.3f}"
        lines.append(
            f"| {r['scenario']} | {r['target']} | {r['rps']:.0f} | {_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} "
            f"| {_ms(r['added_p50_ms'])} | {_ms(r['added_p99_ms'])} | {_ms(r['ttfb_p50_ms'])} "
            f"| {_ms(r['ttfb_p99_ms'])} | {_ms(r['added_ttfb_p50_ms'])} | {_ms(r['added_ttfb_p99_ms'])} "
            f"| {cpu} | {r['errors']} |")
    if results.get("comparisons"):
        lines += ["", "| comparison | measure | measured | baseline | difference (ms) | ratio |",
                  "|---|---|--:|--:|--:|--:|"]
        for c in results["comparisons"]:
            ratio = "–" if c["ratio"] is None else f"{c['ratio']:.2f}x"
            lines.append(f"| {c['label']} | {c['measure']} | {c['target']}: {_ms(c['value'])} | "
                         f"{c['baseline']}: {_ms(c['baseline_value'])} | {_ms(c['difference'])} | {ratio} |")
    lines += ["", "| goal | gateway | pass-through | ratio | target | result |", "|---|--:|--:|--:|--:|---|"]
    for g in results["goals"]:
        if g["key"] == "memory":
            lines.append(f"| {g['label']} | {g['measured']} | | | {g['target']} | {_verdict(g['pass'])} |")
            continue
        fmt = (lambda v: f"{v:.0f} req/s") if g["metric"] == "rps" else (lambda v: f"{_ms(v)} ms")
        gw = "–" if g["gateway"] is None else fmt(g["gateway"])
        pt = "–" if g["passthrough"] is None else fmt(g["passthrough"])
        ratio = "–" if g["ratio"] is None else f"{g['ratio']:.2f}x"
        lines.append(f"| {g['label']} | {gw} | {pt} | {ratio} | {g['target']} | {_verdict(g['pass'])} |")
    noisy = [r for r in results["runs"] if r["other_load_cores"] > NOISE_CORES]
    if noisy:
        worst = max(r["other_load_cores"] for r in noisy)
        lines += ["", f"**Warning:** other processes kept up to {worst:.1f} cores busy during {len(noisy)} "
                  f"of {len(results['runs'])} runs; these numbers are noisy, re-run on a quiet machine."]
    rss = results["gateway_rss"]
    lines += ["", f"Gateway RSS: {rss['before_mb']:.1f} MB at start, {rss['after_mb']:.1f} MB after "
              f"{rss['requests']} requests."]
    conns = rss.get("connections")
    if conns:
        lines.append(f"{conns['connections']} connections at once ({conns['requests']} requests mixing OpenAI chat, "
                     f"Anthropic pass-through and translation, streams and not; {conns['errors']} errors): RSS "
                     f"{conns['start_mb']:.1f} -> {conns['end_mb']:.1f} MB, peak {conns['peak_mb']:.1f} MB.")
    memory = results.get("memory")
    if memory:
        trace = ", ".join(f"{s['requests'] // 1000}k: {s['rss_mb']:.1f}" for s in memory["samples"])
        lines.append(f"Memory soak ({memory['requests']} requests at c=32, one stream in four, "
                     f"{memory.get('fault_requests', 0)} of them meeting an upstream fault, "
                     f"{memory['seconds']:g} s, {memory['errors']} errors), RSS MB: {trace}.")
    return "\n".join(lines) + "\n"
