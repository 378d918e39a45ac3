"""Server-sent events: split a relayed byte stream into events without buffering the relay."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

DONE = b"[DONE]"


class EventSplitter:
    """Feed raw chunks, get complete events (bytes between blank lines) back.

    Used only to *observe* a stream (usage, terminal event); the bytes themselves are forwarded
    as received by the caller.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk
        if b"\r\n" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        parts = buf.split(b"\n\n")
        self._buf = parts.pop()
        return [p for p in parts if p]

    @property
    def pending(self) -> bytes:
        return self._buf


def data_of(event: bytes) -> bytes | None:
    """The joined `data:` payload of one event, or None for comments and empty events."""
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(lines)


def json_object(data: bytes) -> dict | None:
    """An event's data as a JSON object, or None when it is not one (bad JSON, a list, a number)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def name_of(event: bytes) -> bytes | None:
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            return line[6:].strip()
    return None


def encode(data: dict | bytes, event: str | None = None) -> bytes:
    payload = data if isinstance(data, bytes) else orjson.dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def comment(text: str) -> bytes:
    return b": " + text.encode() + b"\n\n"


def events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    splitter = EventSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
