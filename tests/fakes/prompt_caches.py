"""The providers' prompt caches as the fakes model them (model names containing ``prefixcache``).

OpenAI (automatic): every request's message prefixes are remembered; a later request's
``cached_tokens`` is its longest remembered prefix, when that is 1,024 tokens or more, rounded down
to 1,024 + a multiple of 128 (OpenAI's cache hits come in 128-token steps).

Anthropic (explicit): only prefixes ending at a ``cache_control`` breakpoint are written. A request
reads the longest prefix already written that ends at one of its breakpoints or at most 20 block
boundaries before one (``cache_read_input_tokens``), and writes its last breakpoint's prefix if it
is new (``cache_creation_input_tokens``: the tokens between the read and that breakpoint); a
prefix under 1,024 tokens is neither read nor written.
No breakpoint, no caching. ``cache_control`` markers are not part of a prefix's identity, and a
string content is the text block it stands for.

Token counts follow the fakes' own counting (words; 3 per message, 3 per tool). Each cache is per
upstream API key; ``clear()`` forgets everything (the lifetime is not modelled: tests are short).
"""
from __future__ import annotations

import hashlib

import orjson

MINIMUM, STEP = 1024, 128
LOOKBACK = 20  # block boundaries a breakpoint looks back for an earlier write


def _words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def content_text(content) -> str:
    """Text of a content (string or blocks), tool_result contents included."""
    if isinstance(content, str):
        return content
    out = []
    for b in content or []:
        if isinstance(b, dict):
            if isinstance(b.get("text"), str):
                out.append(b["text"])
            elif b.get("type") == "tool_result":
                out.append(content_text(b.get("content")))
    return " ".join(out)


def _strip(value):
    """The value without cache_control markers (they do not change what is cached)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _blocks(value):
    """A string content as the one text block it stands for (the same prompt to the provider)."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return {**value, "content": _blocks(value["content"])}
    return value


def _has_marker(value) -> bool:
    return b'"cache_control"' in orjson.dumps(value)


class _Chain:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def add(self, piece) -> str:
        self.h.update(orjson.dumps(_strip(_blocks(piece)), option=orjson.OPT_SORT_KEYS) + b"\x1e")
        return self.h.hexdigest()


class OpenAICache:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def cached(self, key: str, messages: list) -> int:
        chain, total, best, digests = _Chain(), 0, 0, []
        for m in messages:
            total += 3 + _words(content_text(m.get("content") if isinstance(m, dict) else None))
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
        """(cache reads, cache writes) of a request, remembering what it writes. As Anthropic does,
        a breakpoint also finds a prefix written at an earlier block boundary (up to LOOKBACK back)."""
        chain, total = _Chain(), 0
        bounds: list[tuple[str, int, bool]] = []  # (digest, tokens up to it, a breakpoint is here)
        tools = body.get("tools") or []
        for t in tools:
            total += 3 + _words(t.get("description") or "") if isinstance(t, dict) else 0
        if tools:
            bounds.append((chain.add(tools), total, _has_marker(tools)))
        system = body.get("system")
        if system:
            total += _words(content_text(system))
            bounds.append((chain.add(system), total, _has_marker(system)))
        for m in body.get("messages") or []:
            total += 3 + _words(content_text(m.get("content"))) if isinstance(m, dict) else 0
            bounds.append((chain.add(m), total, _has_marker(m)))
        marks = [i for i, b in enumerate(bounds) if b[2]]
        if not marks:
            return 0, 0
        read = 0
        for mark in marks:
            for i in range(mark, max(mark - LOOKBACK, -1), -1):
                digest, tokens, _ = bounds[i]
                if tokens >= MINIMUM and (key, digest) in self.written:
                    read = max(read, tokens)
                    break
        digest, tokens, _ = bounds[marks[-1]]
        write = 0
        if tokens >= MINIMUM and (key, digest) not in self.written:
            write = tokens - read
            self.written.add((key, digest))
        return read, write

    def clear(self) -> None:
        self.written.clear()
