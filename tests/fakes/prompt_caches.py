"""The providers' prompt caches as the fakes model them (model names containing ``prefixcache``).

OpenAI (automatic): every request's message prefixes are remembered; a later request's
``cached_tokens`` is its longest remembered prefix, when that is 1,024 tokens or more, rounded down
to 1,024 + a multiple of 128 (OpenAI's cache hits come in 128-token steps).

Anthropic (explicit): only prefixes ending at a ``cache_control`` breakpoint are cached. A request
reads the longest of its breakpoint prefixes already written (``cache_read_input_tokens``) and
writes its last breakpoint's prefix if it is new (``cache_creation_input_tokens``: the tokens
between the read and that breakpoint); a prefix under 1,024 tokens is neither read nor written.
No breakpoint, no caching. ``cache_control`` markers are not part of a prefix's identity.

Token counts follow the fakes' own counting (words; 3 per message, 3 per tool). Each cache is per
upstream API key; ``clear()`` forgets everything (the lifetime is not modelled: tests are short).
"""
from __future__ import annotations

import hashlib

import orjson

MINIMUM, STEP = 1024, 128


def _words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _text(content) -> str:
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if isinstance(b, dict):
            if isinstance(b.get("text"), str):
                out.append(b["text"])
            elif b.get("type") == "tool_result":
                out.append(_text(b.get("content")))
    return " ".join(out)


def _strip(value):
    """The value without cache_control markers (they do not change what is cached)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _has_marker(value) -> bool:
    return b'"cache_control"' in orjson.dumps(value)


class _Chain:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, piece) -> str:
        self.h.update(orjson.dumps(_strip(piece), option=orjson.OPT_SORT_KEYS) + b"\x1e")
        return self.h.hexdigest()


class OpenAICache:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def cached(self, key: str, messages: list) -> int:
        chain, total, best, digests = _Chain(), 0, 0, []
        for m in messages:
            total += 3 + _words(_text(m.get("content") if isinstance(m, dict) else None))
            digest = chain.add(m)
            digests.append(digest)
            if (key, digest) in self.seen:
                best = total
        self.seen.update((key, d) for d in digests)
        if best < MINIMUM:
            return 0
        return MINIMUM + (best - MINIMUM) // STEP * STEP

    def clear(self) -> None:
        self.seen.clear()


class AnthropicCache:
    def __init__(self) -> None:
        self.written: set[tuple[str, str]] = set()

    def usage(self, key: str, body: dict) -> tuple[int, int]:
        """(cache reads, cache writes) of a request, remembering what it writes."""
        chain, total, marks = _Chain(), 0, []  # (digest, tokens up to it) at each breakpoint
        tools = body.get("tools") or []
        for t in tools:
            total += 3 + _words(t.get("description") or "") if isinstance(t, dict) else 0
        if tools:
            digest = chain.add(tools)
            if _has_marker(tools):
                marks.append((digest, total))
        system = body.get("system")
        if system:
            total += _words(_text(system))
            digest = chain.add(system)
            if _has_marker(system):
                marks.append((digest, total))
        for m in body.get("messages") or []:
            total += 3 + _words(_text(m.get("content"))) if isinstance(m, dict) else 0
            digest = chain.add(m)
            if _has_marker(m):
                marks.append((digest, total))
        marks = [(d, n) for d, n in marks if n >= MINIMUM]
        read = max((n for d, n in marks if (key, d) in self.written), default=0)
        write = 0
        if marks and (key, marks[-1][0]) not in self.written:
            write = marks[-1][1] - read
            self.written.add((key, marks[-1][0]))
        return read, write

    def clear(self) -> None:
        self.written.clear()
