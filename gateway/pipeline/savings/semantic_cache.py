"""Semantic cache: a request that differs from a cached one only in the wording of its last user
message is answered from the cached response, in the client's dialect, stream or not.

Advisory: a failure here (no embedder, a failing embeddings route) skips the cache, never the request.

Eligible requests are those the exact cache would serve (cache_keys.eligible: a reproducible chat
request; `x-gateway-cache: bypass` and `Cache-Control: no-store` skip) whose last message is a
user message of plain text, in a conversation of at most `max_turns` user turns. The context
key is a sha256 of everything but that text (endpoint, scope, resolved model, parameters, system
prompt, tools, earlier turns) and of the embedder's id; only entries with the same context key
are compared. The last message is embedded (gateway.pipeline.savings.embeddings) and looked up in the scope's
index (gateway.stores.semantic_index); the best entry at cosine >= `threshold` that also passes the
near-miss guard answers. Embeddings alone rate "What is 15% of 80?" and "What is 25% of 80?"
as close, so the guard (`agree`) also requires that numbers, negations, names and identifiers,
quoted strings, units, time words, polar words (bigger/smaller, enable/disable...) and the
direction of "X to Y" agree. The default threshold was chosen by bench/semantic_threshold.py on
tests/data/semantic_pairs.py: the lowest with no false hit there, plus a margin.

A hit answers with `x-gateway-cache: semantic` and `x-gateway-similarity` (cosine, 4 decimals),
mechanism `semantic_cache`, charge 0; the replayed usage is the benchmark. A clean miss is
captured as the exact cache captures it and stored. Settings (savings.semantic_cache): enabled
(off by default), threshold, max_turns, ttl_seconds, max_entries (per scope and model),
embeddings_model (a gateway embeddings model slug instead of the local model), shared_scope.
Headers: `x-gateway-semantic-cache: on|off`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from hashlib import sha256
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.pipeline import savings
from gateway.pipeline.context import Reply, RequestContext
from gateway.pipeline.savings import cache_keys, embeddings, exact_cache

log = logging.getLogger(__name__)

name, enforcing = "semantic_cache", False

MAX_CAPTURE_BYTES = exact_cache.MAX_CAPTURE_BYTES
CANDIDATES = 5  # entries above the threshold checked by the guard, best first
STORED_FINISH = ("stop", "length", "tool_calls")  # answers worth replaying


# ---- the stage ----------------------------------------------------------------------------------

def before(ctx: RequestContext) -> Reply | None:
    if not savings.enabled(ctx, name) or not cache_keys.eligible(ctx) or ctx.model is None:
        return None
    values = savings.settings(ctx, name)
    parts = split(ctx.body)
    if parts is None or parts[2] > int(values["max_turns"]):
        return None
    context, text, _ = parts
    embedder = embeddings.for_settings(values)
    if embedder is None:  # no local model installed: logged once by embeddings.local()
        return None
    try:
        vector = embedder.embed(text, ctx)
    except GatewayError as e:  # an embeddings route failed: skip, the request goes on
        log.warning("semantic cache skipped: embeddings model %s failed (%s)", values.get("embeddings_model"),
                    e.message)
        return None
    scope = savings.scope(ctx, name)
    key = context_key(ctx.endpoint, scope, ctx.model.slug, embedder.id, context)
    ctx.extra[name] = {"scope": scope, "key": key, "text": text, "vector": vector}
    threshold = float(values["threshold"])
    from gateway.stores.semantic_index import INDEX  # numpy loads only once the layer is used

    for score, entry in INDEX.search(scope, ctx.model.slug, key, vector, threshold, CANDIDATES):
        if agree(text, entry.text):
            reply = exact_cache.answer(ctx, entry.response, cache="semantic", mechanism=name)
            reply.headers["x-gateway-similarity"] = f"{min(score, 1.0):.4f}"
            return reply
    return None


def on_reply(ctx: RequestContext, reply: Reply) -> Reply:
    return exact_cache.capture(ctx, reply, name)


def after(ctx: RequestContext, reply: Reply | None) -> None:
    """Store a clean miss (runs after metering, so ctx.usage is what the upstream reported)."""
    state = ctx.extra.get(name)
    if (state is None or reply is None or ctx.cache != "miss" or ctx.error is not None
            or reply.status != 200 or ctx.usage_estimated):
        return
    resp = exact_cache.captured(ctx, state)
    if resp is None or resp.finish_reason not in STORED_FINISH:
        return
    resp.usage = dataclasses.replace(ctx.usage)  # a relay may hide usage from the client; this is the cost
    values = savings.settings(ctx, name)
    assert ctx.principal is not None and ctx.model is not None
    from gateway.stores.semantic_index import INDEX

    INDEX.put(state["scope"], ctx.model.slug, state["key"], state["text"], state["vector"], resp,
              org_id=ctx.principal.org_id, ttl=float(values["ttl_seconds"]),
              max_entries=int(values["max_entries"]))


# ---- what is compared -----------------------------------------------------------------------------

def split(body: dict[str, Any]) -> tuple[dict[str, Any], str, int] | None:
    """(the body without the last user message's text, that text, the number of user turns), or
    None when the last message is not a user message of plain text (images, tool results...)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    text = _plain_text(last.get("content"))
    if not text or not text.strip():
        return None
    turns = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    context = {k: v for k, v in body.items() if k not in cache_keys.VOLATILE and k != "model"}
    context["messages"] = [*messages[:-1], {**last, "content": None}]
    return context, text, turns


def _plain_text(content: Any) -> str | None:
    """A message's text when all of it is text (OpenAI and Anthropic shapes); None otherwise."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "\n".join(p["text"] for p in content)
    return None


def context_key(endpoint: str, scope: str, model: str, embedder_id: str, context: dict[str, Any]) -> str:
    digest = sha256(f"{endpoint}\0{scope}\0{model}\0{embedder_id}\0".encode())
    digest.update(orjson.dumps(context, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


# ---- the near-miss guard --------------------------------------------------------------------------

_QUOTED = re.compile(r"`([^`]+)`|\"([^\"]+)\"|“([^”]+)”|(?<!\w)'([^']+)'(?!\w)")
_TOKEN = re.compile(r"[A-Za-z0-9_][\w.'’^-]*(?:\(\))?|%|[.!?;:\n]")
_DIGITS = re.compile(r"\d+(?:[.,]\d+)*")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
_IDENTIFIER = re.compile(r".*(?:[a-z][A-Z]|_|[A-Za-z]\.[A-Za-z]|\(\)).*|[A-Za-z]+\d[\w]*")

NEGATIONS = frozenset("not no never none nothing neither nor nobody nowhere without cannot".split())
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
NUMBER_WORDS.update({"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
                     "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000",
                     "million": "1000000", "billion": "1000000000", "half": "0.5", "twice": "2x",
                     "double": "2x", "triple": "3x", "last": "last"})
NUMBER_WORDS.update({w: str(i) for i, w in enumerate(
    "zeroth first second third fourth fifth sixth seventh eighth ninth tenth".split()) if i})
TIME_WORDS = frozenset("today tomorrow yesterday tonight".split())
# Words whose opposite changes the answer: word -> axis and sign (synonyms share a label).
_POLES = {  # comparatives and superlatives mostly: base forms ("light", "fast") are too often not poles
    "size": ("big bigger biggest large larger largest greater greatest", "small smaller smallest lesser"),
    "amount": ("more most", "less least fewer fewest"),
    "level": ("high higher highest above upper increase increases increasing raise",
              "low lower lowest below decrease decreases decreasing reduce"),
    "weight": ("heavy heavier heaviest", "lighter lightest"),
    "speed": ("faster fastest quicker", "slower slowest"),
    "length": ("longer longest taller tallest", "shorter shortest"),
    "age": ("older oldest", "younger youngest newer newest"),
    "heat": ("hot hotter hottest warm warmer", "cold colder coldest cooler"),
    "price": ("expensive pricier", "cheap cheaper cheapest"),
    "quality": ("better best", "worse worst"),
    "merit": ("advantage advantages pro pros benefit benefits",
              "disadvantage disadvantages con cons drawbacks"),
    "order": ("ascending asc", "descending desc"),
    "extreme": ("max maximum", "min minimum"),
    "plan": ("upgrade upgrading", "downgrade downgrading"),
    "switch": ("enable enabled enabling activate", "disable disabled disabling deactivate"),
    "edit": ("add create insert", "remove delete drop"),
    "permit": ("allow accept include", "deny block reject exclude"),
    "run": ("start begin", "stop end"),
    "door": ("open", "close"),
    "transfer": ("import upload push buy", "export download pull sell"),
    "cipher": ("encrypt encode", "decrypt decode"),
    "time": ("before earlier", "after later"),
    "truth": ("true positive", "false negative"),
    "outcome": ("win", "lose"),
    "io": ("read input receive", "write output send"),
    "visibility": ("show", "hide"),
    "accessor": ("get getter", "set setter"),
}
NEGATING_PREFIXES = ("un", "dis", "de", "in", "im", "non")  # install/uninstall, like/dislike...
POLAR = {w: f"{axis}{sign}" for axis, poles in _POLES.items()
         for sign, ws in zip("+-", poles, strict=True) for w in ws.split()}
_UNIT_FORMS = {
    "mm": "mm millimeter millimeters millimetre millimetres",
    "cm": "cm centimeter centimeters centimetre centimetres",
    "m": "meter meters metre metres", "km": "km kilometer kilometers kilometre kilometres",
    "in": "inch inches", "ft": "ft foot feet", "yd": "yard yards", "mi": "mile miles",
    "mg": "mg milligram milligrams", "g": "gram grams", "kg": "kg kilogram kilograms kilo kilos",
    "lb": "lb lbs pound pounds", "oz": "oz ounce ounces", "t": "ton tons tonne tonnes",
    "ml": "ml milliliter milliliters millilitre millilitres", "l": "liter liters litre litres",
    "gal": "gallon gallons", "cup": "cup cups", "tbsp": "tablespoon tablespoons tbsp",
    "tsp": "teaspoon teaspoons tsp",
    "c": "celsius", "f": "fahrenheit", "k": "kelvin", "%": "% percent percentage",
    "kb": "kb kilobyte kilobytes", "mb": "mb megabyte megabytes", "gb": "gb gigabyte gigabytes",
    "tb": "tb terabyte terabytes", "usd": "usd dollar dollars", "eur": "eur euro euros",
    "gbp": "gbp sterling", "jpy": "jpy yen",
}
UNITS = {form: unit for unit, forms in _UNIT_FORMS.items() for form in forms.split()}
DIRECTIONAL = frozenset("to into than from vs versus".split())
# Words that open a sentence capitalised without being a name; any other capitalised opener counts as one.
OPENERS = frozenset("""what what's how how's why when where who whom whose which is are was were do does did
can could should would will may might must shall have has had please i i'm i've i'd explain describe tell give
write list show summarize summarise translate convert calculate compute find create make generate help define
compare name in on at for if the a an my our your there it it's this that these those let let's hey hi hello
so and but also now then you we they any some all each every one to from with by about as yes no ok okay hmm
thanks thank""".split())
PRONOUNS = frozenset("i i'm i've i'd i'll".split())
FILLER = frozenset("a an the my your our their his her its this that these those some".split())


def signature(text: str) -> dict[str, Any]:
    """What two messages must share for one's answer to serve the other."""
    quoted = sorted(next(g for g in m.groups() if g is not None).strip().lower()
                    for m in _QUOTED.finditer(text))
    rest = _QUOTED.sub(" ", text)
    numbers: list[str] = []
    names: list[str] = []
    polar: list[str] = []
    units: list[str] = []
    times: list[str] = []
    words: list[str] = []
    negations = 0
    sentence_start = True
    for token in _TOKEN.findall(rest):
        if token in ".!?;:\n":
            sentence_start = True
            continue
        ends_sentence = token.endswith(".")
        token = token.rstrip(".'’-")
        if not token:
            continue
        low = re.sub(r"['’]s$", "", token.lower())
        words.append(low)
        if low.endswith("n't") or low.endswith("n’t") or low in NEGATIONS:
            negations += 1
        elif (ordinal := _ORDINAL.fullmatch(low)) is not None:
            numbers.append(ordinal.group(1))
        elif any(ch.isdigit() for ch in low) and not _IDENTIFIER.fullmatch(token):
            numbers += [d.replace(",", "") for d in _DIGITS.findall(low)]
            units += [UNITS[u] for u in re.findall(r"[a-z%]+", low) if u in UNITS]
        elif low in NUMBER_WORDS:
            numbers.append(NUMBER_WORDS[low])
        if _IDENTIFIER.fullmatch(token) or (len(token) > 1 and token.isupper()) or (
                token[:1].isupper() and low not in PRONOUNS and not (sentence_start and low in OPENERS)):
            names.append(low)
        if low in POLAR:
            polar.append(POLAR[low])
        if low in UNITS:
            units.append(UNITS[low])
        if low in TIME_WORDS:
            times.append(low)
        sentence_start = ends_sentence
    return {"numbers": numbers, "negations": negations, "names": names, "quoted": quoted, "polar": polar,
            "units": sorted(units), "times": sorted(times), "directions": _directions(words),
            "words": set(words)}


def _directions(words: list[str]) -> set[tuple[str, str]]:
    """(word before, word after) around each "to", "than", "from"...: "a list to a tuple" -> (list, tuple)."""
    content = [w for w in words if w not in FILLER]
    return {(content[i - 1], content[i + 1]) for i in range(1, len(content) - 1) if content[i] in DIRECTIONAL}


def agree(a: str, b: str) -> bool:
    """True when nothing that changes an answer differs between `a` and `b` (see the module docstring)."""
    sa, sb = signature(a), signature(b)
    if any(sa[k] != sb[k] for k in sa if k not in ("directions", "words")):
        return False
    if any((y, x) in sb["directions"] and (x, y) not in sb["directions"] for x, y in sa["directions"]):
        return False
    only_a, only_b = sa["words"] - sb["words"], sb["words"] - sa["words"]
    return not any(p + w in other for words, other in ((only_a, only_b), (only_b, only_a))
                   for w in words if len(w) > 2 for p in NEGATING_PREFIXES)
