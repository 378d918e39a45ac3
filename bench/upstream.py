"""Fast fake upstream for the benchmark: a raw-WSGI OpenAI chat completions and Anthropic Messages
server on gevent.

POST /v1/chat/completions answers at once, with no sleeps:
  non-stream         a fixed small `chat.completion` JSON body with a `usage` object;
  "stream": true     8 `chat.completion.chunk` events, a usage chunk when
                     `stream_options.include_usage` is true, then `data: [DONE]`; each event is
                     its own write, in chunked transfer encoding, as real providers stream.
POST /v1/messages (Anthropic; needs `x-api-key` (or a Bearer token, as recent SDKs send) and
`anthropic-version`, else Anthropic's 401 / 400 error body) answers at once too:
  non-stream         a fixed small `message` object with `usage`;
  "stream": true     message_start, content_block_start, ping, 8 content_block_delta (text_delta),
                     content_block_stop, message_delta (stop_reason, usage), message_stop, each
                     `event: <name>` + `data: <json>`, one write per event.
Models named `work-*` get metered replies instead (bench/metered.py: deterministic answers, real
token counts, simulated Anthropic prompt caching, `slow` models); GET /_bench/usage returns what
they billed so far. Anything else is a 404.
Run: `python -m bench.upstream --port P` (binds 127.0.0.1 only).
"""

from __future__ import annotations

import argparse
import itertools
import socket

import orjson
from gevent.pywsgi import WSGIHandler, WSGIServer

from bench import metered

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


# ---- Anthropic Messages (the same 8 words) -------------------------------------------------------
MSG_ID, CLAUDE = "msg_01Bench0000000000000001", "fast-claude"
ANTHROPIC_USAGE = {"input_tokens": 24, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": 8}
MESSAGE = orjson.dumps({
    "id": MSG_ID, "type": "message", "role": "assistant", "model": CLAUDE,
    "content": [{"type": "text", "text": "".join(WORDS)}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": ANTHROPIC_USAGE,
})


def sse_event(name: str, data: dict) -> bytes:
    return f"event: {name}\n".encode() + b"data: " + orjson.dumps({"type": name, **data}) + b"\n\n"


ANTHROPIC_STREAM = [
    sse_event("message_start", {"message": {
        "id": MSG_ID, "type": "message", "role": "assistant", "model": CLAUDE, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**ANTHROPIC_USAGE, "output_tokens": 1}}}),
    sse_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    sse_event("ping", {}),
    *(sse_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}})
      for word in WORDS),
    sse_event("content_block_stop", {"index": 0}),
    sse_event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                "usage": {"output_tokens": len(WORDS)}}),
    sse_event("message_stop", {}),
]
MESSAGE_HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(MESSAGE)))]


def _json(start_response, status: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _anthropic_error(start_response, status: str, kind: str, message: str) -> list[bytes]:
    body = orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    return _json(start_response, status, body)


_FAULTS = itertools.cycle(["500", "json", "usage", "sse", "cut"])


def fault(body: dict, start_response):
    """The memory soak's faults, in turn: a 500, malformed JSON, wrong-typed usage, a malformed SSE
    event, a stream cut before its end."""
    kind = next(_FAULTS)
    if kind == "500":
        return _json(start_response, "500 Internal Server Error", b'{"error": {"message": "boom", "type": "server_error"}}')
    if kind == "json":
        return _json(start_response, "200 OK", b'{"id": "x", "choices": [')
    if kind == "usage":
        broken = orjson.loads(COMPLETION)
        broken["usage"] = {"prompt_tokens": "lots", "completion_tokens": [1], "total_tokens": None}
        return _json(start_response, "200 OK", orjson.dumps(broken))
    start_response("200 OK", SSE_HEADERS)
    if kind == "sse":
        return iter([STREAM[True][0], b'data: ["a list"]\n\n'])
    return iter(STREAM[True][:2])  # no terminal event


def chat_completions(environ, start_response):
    body = orjson.loads(environ["wsgi.input"].read() or b"{}")
    if body.get("model") == "fault-mix":
        return fault(body, start_response)
    if str(body.get("model", "")).startswith("work-"):
        completion, chunks = metered.openai(body)
        if chunks is None:
            return _json(start_response, "200 OK", orjson.dumps(completion))
        start_response("200 OK", SSE_HEADERS)
        return iter([_event(c) for c in chunks] + [b"data: [DONE]\n\n"])
    if body.get("stream"):
        start_response("200 OK", SSE_HEADERS)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return iter(STREAM[include_usage])  # no len(): pywsgi sends it chunked, one write per event
    start_response("200 OK", JSON_HEADERS)
    return [COMPLETION]


def messages(environ, start_response):
    if not environ.get("HTTP_X_API_KEY") and not environ.get("HTTP_AUTHORIZATION", "").startswith("Bearer "):
        return _anthropic_error(start_response, "401 Unauthorized", "authentication_error",
                                "invalid x-api-key")
    if not environ.get("HTTP_ANTHROPIC_VERSION"):
        return _anthropic_error(start_response, "400 Bad Request", "invalid_request_error",
                                "anthropic-version: header is required")
    body = orjson.loads(environ["wsgi.input"].read() or b"{}")
    if str(body.get("model", "")).startswith("work-"):
        message, events = metered.anthropic(body)
        if events is None:
            return _json(start_response, "200 OK", orjson.dumps(message))
        start_response("200 OK", SSE_HEADERS)
        return iter([sse_event(name, data) for name, data in events])
    if body.get("stream"):
        start_response("200 OK", SSE_HEADERS)
        return iter(ANTHROPIC_STREAM)
    start_response("200 OK", MESSAGE_HEADERS)
    return [MESSAGE]


ROUTES = {("POST", "/v1/chat/completions"): chat_completions, ("POST", "/v1/messages"): messages,
          ("GET", "/_bench/usage"): lambda environ, start_response: _json(start_response, "200 OK",
                                                                          metered.snapshot())}


def app(environ, start_response):
    handler = ROUTES.get((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", "2")])
        return [b"{}"]
    return handler(environ, start_response)


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
