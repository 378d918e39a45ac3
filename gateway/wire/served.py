"""The `model` a client reads: the slug of the catalog model that actually served, in every dialect.

A translated reply is rendered with that slug; a pass-through reply carries the upstream's own name
(`gpt-4o-2024-08-06`, a fallback's model), so its `"model": "..."` fields are rewritten in the
relayed bytes. A stream is rewritten event by event (a chunk that ends mid-event waits for the rest
of its event), so a field split across chunks is still found; everything else passes unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import orjson

_MODEL = re.compile(rb'"model"\s*:\s*"(?:[^"\\]|\\.)*"')


def _field(slug: str) -> bytes:
    return b'"model":' + orjson.dumps(slug)


def body(raw: bytes, slug: str) -> bytes:
    """A whole JSON reply with its top-level `model` (the first one, which comes before any content) set."""
    if b'"model"' not in raw:
        return raw
    return _MODEL.sub(lambda _: _field(slug), raw, count=1)


def stream(chunks: Iterator[bytes], slug: str) -> Iterator[bytes]:
    """SSE chunks with every event's `model` set to `slug`; closing this closes `chunks`."""
    field = _field(slug)
    pending = b""
    try:
        for chunk in chunks:
            buf = pending + chunk if pending else chunk
            end = _event_end(buf)
            pending = buf[end:]
            head = buf[:end]
            if head:
                yield _MODEL.sub(lambda _: field, head) if b'"model"' in head else head
        if pending:
            yield _MODEL.sub(lambda _: field, pending) if b'"model"' in pending else pending
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _event_end(buf: bytes) -> int:
    """Where the last complete event of `buf` ends (0: none has)."""
    lf = buf.rfind(b"\n\n")
    crlf = buf.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)
