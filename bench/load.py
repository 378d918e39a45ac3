"""Light load generator: gevent greenlets, each with one raw keep-alive HTTP/1.1 socket.

Kept minimal on purpose (the machine may have 2 cores): requests are pre-encoded bytes and
responses are parsed just enough to frame them (Content-Length or chunked). Closed loop: each
greenlet sends its next request when the previous response is complete.
Times are perf_counter seconds: `total` is request sent -> response complete, `ttfb` is request
sent -> first body byte received (for streams, the first SSE event). A request is pre-encoded as
`(bytes, end marker)`: a stream counts as complete only if its body holds the marker (`data: [DONE]`
for OpenAI chat, `message_stop` for Anthropic Messages); None for a whole JSON body.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import gevent
import orjson
from gevent import socket

MESSAGES = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in a few words."}]


ANTHROPIC_VERSION = "2023-06-01"
OPENAI_DONE, ANTHROPIC_DONE = b"data: [DONE]", b"event: message_stop"
Request = tuple[bytes, bytes | None]  # (raw HTTP request, end-of-stream marker or None)


def post_bytes(port: int, path: str, headers: dict[str, str], body: dict) -> bytes:
    """A raw HTTP/1.1 keep-alive POST of `body` as JSON."""
    payload = orjson.dumps(body)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += ("Content-Type: application/json\r\nAccept: application/json\r\n"
             f"Content-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


def chat_request(port: int, api_key: str, model: str, stream: bool, extra: dict | None = None,
                 headers: dict[str, str] | None = None) -> Request:
    """OpenAI chat completions: the small fixed conversation, `extra` merged into the body."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": 16, **(extra or {})}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    auth = {"Authorization": f"Bearer {api_key}", **(headers or {})}
    raw = post_bytes(port, "/v1/chat/completions", auth, body)
    return raw, OPENAI_DONE if stream else None


def messages_request(port: int, api_key: str, model: str, stream: bool) -> Request:
    """Anthropic Messages: the same conversation (system prompt as the top-level `system`)."""
    body = {"model": model, "max_tokens": 16, "system": MESSAGES[0]["content"], "messages": MESSAGES[1:]}
    if stream:
        body["stream"] = True
    auth = {"x-api-key": api_key, "anthropic-version": ANTHROPIC_VERSION}
    raw = post_bytes(port, "/v1/messages", auth, body)
    return raw, ANTHROPIC_DONE if stream else None


class Conn:
    """One keep-alive connection; `request()` returns (status, ttfb, total, body); `headers` holds the
    last response's headers (lower-cased names)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.buf = b""
        self.last_recv = 0.0
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.last_recv = time.perf_counter()
        self.buf += data

    def _line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._recv()
        line, self.buf = self.buf[:i], self.buf[i + 2:]
        return line

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._recv()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def request(self, raw: bytes) -> tuple[int, float, float, bytes]:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port))
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        self.sock.sendall(raw)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head, self.buf = self.buf[:end].decode("latin-1").split("\r\n"), self.buf[end + 4:]
        status = int(head[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        self.headers = headers
        ttfb = None
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int(self._line().split(b";")[0], 16):
                if ttfb is None:
                    if not self.buf:
                        self._recv()
                    ttfb = self.last_recv - start
                parts.append(self._take(size + 2)[:-2])
            while self._line():  # trailers, then the blank line
                pass
            body = b"".join(parts)
        else:
            length = int(headers.get("content-length", 0))
            if length:
                if not self.buf:
                    self._recv()
                ttfb = self.last_recv - start
            body = self._take(length)
        total = time.perf_counter() - start
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, (ttfb if ttfb is not None else total), total, body


@dataclass
class Result:
    seconds: float = 0.0
    ok: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    first_error: str | None = None


def run(port: int, mix: list[Request], concurrency: int, seconds: float | None = None,
        requests: int | None = None, on_done=None) -> Result:
    """Closed-loop load: `concurrency` connections until `seconds` elapse or `requests` are sent.

    `mix` is a list of (request bytes, end marker), cycled through by each connection. `on_done(n)`
    is called with the running count of completed requests (for RSS sampling).
    """
    result = Result()
    state = {"issued": 0, "done": 0}
    deadline = time.perf_counter() + seconds if seconds else None

    def worker() -> None:
        conn = Conn(port)
        i = 0
        try:
            while True:
                raw, marker = mix[i % len(mix)]
                i += 1
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                if requests is not None:
                    if state["issued"] >= requests:
                        return
                    state["issued"] += 1
                try:
                    status, ttfb, total, body = conn.request(raw)
                except (OSError, ValueError, IndexError) as e:
                    conn.close()
                    status, ttfb, total, body = 0, 0.0, 0.0, repr(e).encode()
                good = status == 200 and (marker is None or marker in body)
                if good:
                    result.ok += 1
                    result.latencies.append(total)
                    result.ttfbs.append(ttfb)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"HTTP {status}: {body[:300]!r}"
                    if status == 0:
                        gevent.sleep(0.01)
                state["done"] += 1
                if on_done is not None:
                    on_done(state["done"])
        finally:
            conn.close()

    started = time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
    result.seconds = time.perf_counter() - started
    return result


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
