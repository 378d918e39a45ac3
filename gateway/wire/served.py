"""The `model` a client reads: the slug of the catalog model that actually served, in every dialect.

A translated reply is rendered with that slug; a pass-through reply carries the upstream's own name
(`gpt-4o-2024-08-06`, a fallback's model), so its `"model": "..."` fields are rewritten in the
relayed bytes. A stream is rewritten event by event (a chunk that ends mid-event waits for the rest
of its event), so a field split across chunks is still found; everything else passes unchanged.
"""

from __future__ import annotations

import re

import orjson

_MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _field(slug: str) -> bytes:
    return b'"model":' + orjson.dumps(slug)


def body(raw: bytes, slug: str) -> bytes:
    """A whole JSON reply with its top-level `model` (the first one, which comes before any content) set."""
    at = raw.find(b'"model":"')
    if at >= 0:  # compact JSON, as providers send it: no pattern needed
        end = raw.find(b'"', at + 9)
        if end > 0 and b"\\" not in raw[at + 9:end] and raw.find(b'"model"') == at:
            return raw[:at] + _field(slug) + raw[end + 1:]
    if b'"model"' not in raw:
        return raw
    return _MODEL.sub(lambda _: _field(slug), raw, count=1)


class StreamRewrite:
    """Feed SSE chunks, get them back with every event's `model` set to the slug. A chunk that
    ends mid-event is held until its event is whole (`tail()` returns what never was).

    Once the upstream's own `"model":"..."` bytes are known (the first event names them), events
    that carry exactly those are rewritten with a plain bytes replace; anything else goes through
    the pattern."""

    __slots__ = ("field", "seen", "pending")

    def __init__(self, slug: str) -> None:
        self.field = _field(slug)
        self.seen: bytes | None = None  # the upstream's literal field, once matched
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self.pending and chunk.endswith(b"\n\n"):  # the usual chunk: whole events
            return self._rewrite(chunk)
        buf = self.pending + chunk if self.pending else chunk
        end = _event_end(buf)
        self.pending = buf[end:]
        return self._rewrite(buf[:end]) if end else b""

    def tail(self) -> bytes:
        pending, self.pending = self.pending, b""
        return self._rewrite(pending) if pending else b""

    def _rewrite(self, head: bytes) -> bytes:
        count = head.count(b'"model"')
        if not count:
            return head
        if self.seen is None and (first := _MODEL.search(head)) is not None:
            self.seen = first.group(0)  # the upstream's own bytes: every later event is a plain replace
        if self.seen is not None and head.count(self.seen) == count:
            return head.replace(self.seen, self.field)
        return _MODEL.sub(self._sub, head)

    def _sub(self, match: re.Match) -> bytes:
        if self.seen is None:
            self.seen = match.group(0)
        return self.field


def _event_end(buf: bytes) -> int:
    """Where the last complete event of `buf` ends (0: none has)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
