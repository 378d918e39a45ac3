"""The hot-path scenarios: what each one sends, to which process, under which label.

A scenario has a `kind`; the kind lists its labelled targets (the first is always `direct`, the
fake upstream itself, the baseline) and how each one's request is built:
  openai      OpenAI chat body: direct, the bare pass-through, the gateway (savings at defaults;
              no temperature, so the caches stay out of the way: a miss).
  anthropic   Anthropic Messages body: direct to the fake's /v1/messages; the gateway's /v1/messages
              on a model of an `anthropic`-kind provider (same dialect: bytes pass through).
  translated  direct: the same Anthropic call; the gateway: an OpenAI chat body on /v1/chat/completions
              for that model, so the gateway translates both ways.
  miss        OpenAI chat body at temperature 0.7 (no seed: never cacheable): direct; the gateway with
              every savings layer at its defaults; the same gateway process with every layer turned
              off by request headers (`x-gateway-<layer>: off`, the same `savings.enabled` check a
              config `enabled: false` goes through; the "on" side sends as many neutral headers).
  hit         OpenAI chat body at temperature 0, always the same: direct; the gateway, which answers
              from its exact cache after the first request (`x-gateway-cache: hit`, checked).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import load

MODEL = "bench/fast"  # OpenAI-kind route to the fake
CLAUDE = "bench/claude"  # Anthropic-kind route to the fake
UPSTREAM_KEY = "sk-bench-upstream"
LAYERS_OFF = {f"x-gateway-{layer}": "off" for layer in (
    "exact-cache", "semantic-cache", "inflight-dedupe", "prompt-cache", "compression", "context-dedupe",
    "output-budget")}  # gateway/pipeline/savings/__init__.py HEADERS
# The "on" side carries as many neutral headers, so both parse the same amount of request head.
LAYERS_PAD = {name.replace("x-gateway-", "x-bench-pad-"): "on" for name in LAYERS_OFF}
GROUPS = ("core", "dialects", "savings")


@dataclass(frozen=True)
class Scenario:
    name: str
    group: str  # one of GROUPS (`python -m bench --only ...`)
    kind: str
    stream: bool
    concurrency: int


SCENARIOS = (
    Scenario("non-stream c=1", "core", "openai", False, 1),
    Scenario("non-stream c=32", "core", "openai", False, 32),
    Scenario("non-stream c=64", "core", "openai", False, 64),
    Scenario("stream c=32", "core", "openai", True, 32),
    Scenario("anthropic non-stream c=1", "dialects", "anthropic", False, 1),
    Scenario("anthropic stream c=32", "dialects", "anthropic", True, 32),
    Scenario("translated non-stream c=1", "dialects", "translated", False, 1),
    Scenario("translated stream c=32", "dialects", "translated", True, 32),
    Scenario("savings miss c=1", "savings", "miss", False, 1),
    Scenario("cache hit c=1", "savings", "hit", False, 1),
)

# kind -> ((label, process), ...): the process is a key of Bench.targets
TARGETS = {
    "openai": (("direct", "direct"), ("passthrough", "passthrough"), ("gateway", "gateway")),
    "anthropic": (("direct", "direct"), ("gateway", "gateway")),
    "translated": (("direct", "direct"), ("gateway", "gateway")),
    "miss": (("direct", "direct"), ("gateway", "gateway"), ("gateway, savings off", "gateway")),
    "hit": (("direct", "direct"), ("gateway", "gateway")),
}
EXPECT_CACHE = {("miss", "gateway"): "miss", ("miss", "gateway, savings off"): "miss",
                ("hit", "gateway"): "hit"}  # x-gateway-cache of the second of two identical requests


def request(scenario: Scenario, label: str, port: int, api_key: str) -> load.Request:
    """The one request `label` sends in `scenario` (to the process listening on `port`)."""
    kind, stream = scenario.kind, scenario.stream
    if kind in ("anthropic", "translated"):
        if label == "direct":
            return load.messages_request(port, UPSTREAM_KEY, "fast-claude", stream)
        if kind == "anthropic":
            return load.messages_request(port, api_key, CLAUDE, stream)
        return load.chat_request(port, api_key, CLAUDE, stream)
    extra = {"temperature": 0.7} if kind == "miss" else {"temperature": 0} if kind == "hit" else None
    headers = None
    if kind == "miss" and label != "direct":
        headers = LAYERS_OFF if label == "gateway, savings off" else LAYERS_PAD
    return load.chat_request(port, api_key, MODEL, stream, extra=extra, headers=headers)


def selected(groups: list[str] | None) -> tuple[Scenario, ...]:
    return tuple(s for s in SCENARIOS if not groups or s.group in groups)
