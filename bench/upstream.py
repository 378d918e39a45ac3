"""Fast fake upstream for the benchmark: a raw-WSGI OpenAI chat completions server on gevent.

POST /v1/chat/completions answers at once, with no sleeps:
  non-stream         a fixed small `chat.completion` JSON body with a `usage` object;
  "stream": true     8 `chat.completion.chunk` events, a usage chunk when
                     `stream_options.include_usage` is true, then `data: [DONE]`; each event is
                     its own write, in chunked transfer encoding, as real providers stream.
Anything else is a 404. Run: `python -m bench.upstream --port P` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import socket

import orjson
from gevent.pywsgi import WSGIHandler, WSGIServer

ID, CREATED, MODEL = "chatcmpl-bench0001", 1700000000, "fast-model"
USAGE = {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32}
WORDS = ["Hello", " from", " the", " fast", " fake", " upstream", " model", "."]

COMPLETION = orjson.dumps({
    "id": ID, "object": "chat.completion", "created": CREATED, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": USAGE, "system_fingerprint": "fp_bench",
})


def _event(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(delta: dict, finish: str | None, usage: bool) -> bytes:
    obj = {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if usage:
        obj["usage"] = None
    return _event(obj)


def _stream(include_usage: bool) -> list[bytes]:
    events = [_chunk({"role": "assistant", "content": WORDS[0]}, None, include_usage)]
    events += [_chunk({"content": w}, None, include_usage) for w in WORDS[1:-1]]
    events.append(_chunk({"content": WORDS[-1]}, "stop", include_usage))
    if include_usage:
        events.append(_event({"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                              "choices": [], "usage": USAGE}))
    return events + [b"data: [DONE]\n\n"]


STREAM = {False: _stream(False), True: _stream(True)}
JSON_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(COMPLETION)))]
SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


def app(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/v1/chat/completions":
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    body = orjson.loads(environ["wsgi.input"].read() or b"{}")
    if body.get("stream"):
        start_response("200 OK", SSE_HEADERS)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return iter(STREAM[include_usage])  # no len(): pywsgi sends it chunked, one write per event
    start_response("200 OK", JSON_HEADERS)
    return [COMPLETION]


class NoDelayHandler(WSGIHandler):
    """TCP_NODELAY on accepted sockets (as gateway/server.py does), so no Nagle stall."""

    def __init__(self, sock, address, server, rfile=None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = WSGIServer(("127.0.0.1", args.port), app, handler_class=NoDelayHandler, log=None, backlog=1024)
    server.serve_forever()


if __name__ == "__main__":
    main()
