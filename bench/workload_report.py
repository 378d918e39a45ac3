"""The Markdown report of a savings workload run (bench/workload.py): calls, tokens and cost per
part, direct vs through the gateway, and what the gateway's ledger says each mechanism saved."""

from __future__ import annotations

MECHANISM_LABELS = {
    "exact_cache": "exact cache", "semantic_cache": "semantic cache", "inflight_dedupe": "in-flight dedupe",
    "prompt_cache": "provider prompt cache", "compression": "compression", "context_dedupe": "context dedupe",
    "routing": "routing",
}


def _usd(value: float) -> str:
    return f"${value / 1e6:.4f}"


def _saved(value: int) -> str:
    """A saving in micro-dollars; a few micros either way are per-request rounding in the meter."""
    return "–" if value == 0 else "≈0" if abs(value) < 50 else _usd(value)


def _cut(direct: float, gateway: float) -> str:
    return "–" if not direct else f"{(direct - gateway) / direct * 100:.0f}%"


def _answered(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def markdown(results: dict) -> str:
    parts = results["parts"]
    rows = [*parts, results["total"]]
    lines = [
        "### Savings workload",
        "",
        f"Seed {results['seed']}, {results['total']['requests']} requests per side, "
        f"{results['elapsed_seconds']:g} s in all. "
        "Direct: the same requests straight to the fake upstream; gateway: every savings layer on "
        "(semantic cache, compression `trim` at 2,000 tokens, context dedupe included). Calls and tokens "
        "as the upstream billed them; input tokens through the gateway include cache reads (in brackets, "
        "billed at the cached price) and writes. Cost direct: list prices; cost through the gateway: "
        "what the gateway charged (its ledger).",
        "",
        "| part | calls direct | calls gateway | input tokens direct | input tokens gateway (cache reads) "
        "| output tokens direct | output tokens gateway | cost direct | cost gateway | cut |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        d, g = r["direct"], r["gateway"]
        name = f"**{r['name']}**" if r["key"] == "total" else f"{r['key']}. {r['name']}"
        lines.append(
            f"| {name} | {d['calls']:,} | {g['calls']:,} | {d['input_tokens']:,} "
            f"| {g['input_tokens']:,} ({g['cache_read_tokens']:,}) | {d['output_tokens']:,} "
            f"| {g['output_tokens']:,} | {_usd(d['cost_micros'])} | {_usd(g['cost_micros'])} "
            f"| {_cut(d['cost_micros'], g['cost_micros'])} |")
    lines += ["", "Saved by mechanism, from the gateway's `GET /v1/usage/summary` (`by_mechanism`, "
              "diffed around each part):", "",
              "| mechanism | " + " | ".join(p["key"] for p in parts) + " | total |",
              "|---|" + "--:|" * (len(parts) + 1)]
    for mechanism, label in MECHANISM_LABELS.items():
        cells = [r["ledger"]["saved_by"].get(mechanism, 0) for r in rows]
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(_saved(c) for c in cells) + " |")
    lines.append("| **all** | " + " | ".join(_usd(r["ledger"]["saved_micros"]) for r in rows) + " |")
    lines.append("| gateway's benchmark (no-savings estimate) | "
                 + " | ".join(_usd(r["ledger"]["benchmark_micros"]) for r in rows) + " |")
    lines += ["", "Gateway answers by `x-gateway-cache`: "
              + "; ".join(f"{r['key']}: {_answered(r['answered'])}" for r in parts) + "."]
    return "\n".join(lines) + "\n"
