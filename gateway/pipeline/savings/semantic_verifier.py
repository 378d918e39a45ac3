"""The semantic cache's optional verifier: a model asked, for a borderline candidate only, whether
the cached answer answers the new question too. Off by default (savings.semantic_cache
`verifier_model`: a gateway model slug or alias; `verifier_timeout_seconds`, default 5).

Borderline: semantic_match refused the candidate only because its question differs from the new
one by a single plain word, one swapped or one added or removed (reasons "a word differs", "a word
was added or removed"), and that word is an ordinary alphabetic word, not a number, a negation, a
scope, direction or comparison word (semantic_match's guarded words), nor a unit. Any other
refusal (pasted context, word order, two or more words) is never sent: those are the near-misses
the rules exist for.

The call goes through the whole pipeline as the caller (auth, routing, the gate, metering), with
the semantic cache and compression off for it, at temperature 0 and a few output tokens, under a
deadline of `verifier_timeout_seconds`; its ledger row (endpoint `semantic_cache.verify`, request
id `<request id>.verify`) keeps its usage, while its charge moves to the request it judged, as the
semantic cache's cost: charged there, and taken from semantic_cache's saving on that row (a hit
saves less; a refusal shows a negative semantic_cache share). Only an answer of exactly "yes" serves
from the cache; "no", anything else, an error or a timeout is a miss: never a wrong hit, never a
failed request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.pipeline import savings, subrequest
from gateway.pipeline.context import RequestContext
from gateway.pipeline.savings import semantic_match
from gateway.pipeline.savings.semantic_match import aligned, split_context, words

log = logging.getLogger(__name__)

ENDPOINT = "semantic_cache.verify"  # decoded and translated as OpenAI chat (see decode)
BORDERLINE_REASONS = frozenset({"a word differs", "a word was added or removed"})
UNITS = frozenset("""mm cm m km inch inches foot feet ft yard yards mile miles kg g mg lb lbs pound pounds ounce
ounces oz ml l liter liters litre litres gallon gallons celsius fahrenheit kelvin second seconds minute minutes
hour hours day days week weeks month months year years percent byte bytes kb mb gb tb""".split())
MAX_ANSWER_CHARS = 4000
PROMPT = (
    "You decide whether a stored answer may be reused for a new question. Question A was answered "
    "with Answer A. Reply with exactly one word: yes if Answer A answers Question B exactly as well "
    "(same meaning; nothing in B changes a number, unit, name, date, direction, format, length, tone, "
    "negation or scope), otherwise no."
)


def configured(values: dict[str, Any]) -> str | None:
    model = values.get("verifier_model")
    return model if isinstance(model, str) and model.strip() else None


def borderline(cached: str, new: str, reason: str) -> bool:
    """Whether a refusal is one the verifier may overturn (see the module docstring)."""
    if reason not in BORDERLINE_REASONS:
        return False
    xs, ys = words(split_context(cached)[1]), words(split_context(new)[1])
    if reason == "a word differs":
        if len(xs) != len(ys):
            return False
        # the words left over once the aligned ones pair up, in order
        extra_x = list(xs)
        extra_y = []
        for y in ys:
            match = next((i for i, x in enumerate(extra_x) if aligned(x, y)), None)
            if match is None:
                extra_y.append(y)
            else:
                extra_x.pop(match)
        differing = extra_x + extra_y
        if len(extra_x) != 1 or len(extra_y) != 1:
            return False
    else:
        short, long = sorted((xs, ys), key=len)
        if len(long) - len(short) != 1:
            return False
        rest = list(long)
        for w in short:
            if w not in rest:
                return False
            rest.remove(w)
        differing = rest
    return all(_plain(w) for w in differing)


def _plain(word: str) -> bool:
    return word.isalpha() and word not in semantic_match._GUARDED and word not in UNITS


def verify(ctx: RequestContext, values: dict[str, Any], cached_text: str, answer: str, new_text: str) -> bool:
    """Ask the verifier model; True only on "yes". Its cost goes to `ctx` (layer_costs)."""
    model = configured(values)
    if model is None:
        return False
    timeout = float(values.get("verifier_timeout_seconds") or 5.0)
    question_a, question_b = split_context(cached_text)[1], split_context(new_text)[1]
    body = {"model": model, "temperature": 0, "max_tokens": 5, "messages": [
        {"role": "system", "content": PROMPT},
        {"role": "user", "content": f"Question A:\n{question_a}\n\nAnswer A:\n{answer[:MAX_ANSWER_CHARS]}\n\n"
                                    f"Question B:\n{question_b}\n\nReply yes or no."}]}
    costs = ctx.extra.setdefault("layer_costs", {})
    sub = RequestContext(endpoint=ENDPOINT, dialect="openai", raw=orjson.dumps(body), raw_key=ctx.raw_key,
                         headers={savings.HEADERS["semantic_cache"]: "off", savings.HEADERS["compression"]: "off"},
                         request_id=f"{ctx.request_id}.verify")
    sub.deadline = time.perf_counter() + timeout
    sub.extra["cost_to"] = (costs, "semantic_cache")
    try:
        reply = subrequest.run(sub)
        choice = (orjson.loads(reply.body or b"{}").get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content")
    except GatewayError as e:
        log.warning("semantic cache verifier %s failed (%s): a miss", model, e.message)
        return False
    except (ValueError, AttributeError, IndexError, TypeError):  # a body that is not a chat completion
        log.warning("semantic cache verifier %s answered something unreadable: a miss", model)
        return False
    return isinstance(content, str) and content.strip().strip(".!").strip().lower() == "yes"
