"""A hostile upstream for the fault matrix: OpenAI chat, OpenAI Responses and Anthropic messages, each
answering well or failing in one named way.

``FaultyUpstream`` is a WSGI app served by ``serve_faulty`` (gevent pywsgi with its own greenlet pool,
so a test can tell the fake's greenlets from the gateway's). Routes: POST /v1/chat/completions,
POST /v1/responses (OpenAI wire), POST /v1/messages (Anthropic wire). The behaviour is the request's
``model`` (the route's upstream model):

  ok           a normal answer: "Hello there friend" (usage: 5 in, 3 out)
  status-<n>   HTTP <n> with the dialect's error body (429 adds ``retry-after: 1``)
  hang         nothing until ``release()`` is called (or 8 s), then a normal answer
  trickle      a normal answer sent slowly: the body in small pieces, a stream's events 20 ms apart
  reset        non-stream: the connection dropped before any response; stream: two events, then dropped
  badjson      non-stream: a 200 whose body is not JSON; stream: an event whose data is not JSON
  badsse       stream: an event whose data is JSON but not an event object (``["a list"]``)
  badusage-<k> a normal answer whose usage counts are malformed: k = lots (a string), null, list,
               float, neg, huge
  long         a stream of 200 events 20 ms apart (a client can leave in the middle)
"""

from __future__ import annotations

import gevent
import orjson
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

WORDS = ["Hello", " there", " friend"]
INPUT_TOKENS, OUTPUT_TOKENS = 5, 3
BAD_COUNTS = {"lots": "lots", "null": None, "list": [1, 2], "float": 2.5, "neg": -7, "huge": 10**18}
HANG_LIMIT = 8.0


class FaultyUpstream:
    def __init__(self) -> None:
        self.released = Event()
        self.requests: list[dict] = []

    def release(self) -> None:
        """End every hang now (and any started later, until reset_hangs)."""
        self.released.set()

    def reset_hangs(self) -> None:
        self.released = Event()

    # ---- WSGI ------------------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ["PATH_INFO"]
        raw = environ["wsgi.input"].read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = {}
        self.requests.append({"path": path, "body": body})
        model = str(body.get("model", ""))
        stream = bool(body.get("stream"))
        dialect = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}.get(path)
        if dialect is None:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"error": {"message": "no such route", "type": "invalid_request_error"}}']
        if model.startswith("status-"):
            status = int(model.split("-")[1])
            headers = [("Content-Type", "application/json")]
            if status == 429:
                headers.append(("retry-after", "1"))
            start_response(f"{status} Failed", headers)
            return [_error_body(dialect, status)]
        if model == "hang":
            self.released.wait(HANG_LIMIT)
        if model == "reset" and not stream:
            raise ConnectionResetError(104, "fake upstream reset")  # pywsgi drops the socket
        if not stream:
            if model == "badjson":
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b'{"id": "x", "choices": [{"message": ']
            payload = orjson.dumps(_whole(dialect, model, _usage(dialect, model)))
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
            if model == "trickle":
                return _slowly([payload[i:i + 16] for i in range(0, len(payload), 16)])
            return [payload]
        start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
        events = _events(dialect, model, _usage(dialect, model), body)
        if model == "reset":
            return _reset_after(events, 2)
        if model in ("badjson", "badsse"):
            bad = b"data: {\"choices\": [\n\n" if model == "badjson" else b'data: ["a list"]\n\n'
            return iter([*events[:2], bad, *events[2:]])
        if model == "trickle":
            return _slowly(events)
        if model == "long":
            return _slowly([*events[:2], *[events[2]] * 200, *events[2:]])
        return events


def _slowly(parts):
    for i, part in enumerate(parts):
        if i:
            gevent.sleep(0.02)
        yield part


def _reset_after(events, n):
    yield from events[:n]
    raise ConnectionResetError(104, "fake upstream reset")


def serve_faulty(fake: FaultyUpstream) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake, log=None, error_log=None, spawn=Pool(256))
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"


# ---- the three wire formats ----------------------------------------------------------------------

def _error_body(dialect: str, status: int) -> bytes:
    kind = {429: "rate_limit_error", 503: "overloaded_error"}.get(status, "api_error")
    if dialect == "messages":
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": f"fake failure {status}"}})
    return orjson.dumps({"error": {"message": f"fake failure {status}", "type": "server_error", "param": None,
                                   "code": None}})


def _usage(dialect: str, model: str) -> dict:
    counts = {"in": INPUT_TOKENS, "out": OUTPUT_TOKENS}
    if model.startswith("badusage-"):
        counts["in"] = BAD_COUNTS[model.split("-", 1)[1]]
    if dialect == "chat":
        return {"prompt_tokens": counts["in"], "completion_tokens": counts["out"],
                "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}
    if dialect == "responses":
        return {"input_tokens": counts["in"], "output_tokens": counts["out"], "total_tokens": 8,
                "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
    return {"input_tokens": counts["in"], "output_tokens": counts["out"]}


def _message(model: str, text: str, usage: dict | None) -> dict:
    return {"id": "msg_fault1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": usage}


def _response(model: str, text: str, usage: dict | None, status: str = "completed") -> dict:
    output = [{"type": "message", "id": "msg_fault1", "status": "completed", "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": []}]}] if text else []
    obj = {"id": "resp_fault1", "object": "response", "created_at": 1700000000, "status": status, "error": None,
           "incomplete_details": None, "model": model, "output": output, "parallel_tool_calls": True,
           "tool_choice": "auto", "tools": []}
    if usage is not None:
        obj["usage"] = usage
    return obj


def _whole(dialect: str, model: str, usage: dict) -> dict:
    text = "".join(WORDS)
    if dialect == "chat":
        return {"id": "chatcmpl-fault1", "object": "chat.completion", "created": 1700000000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                             "finish_reason": "stop"}], "usage": usage}
    if dialect == "responses":
        return _response(model, text, usage)
    return _message(model, text, usage)


def _sse(obj, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


def _events(dialect: str, model: str, usage: dict, body: dict) -> list[bytes]:
    """A whole stream: [opening event, first content event, more content ..., closing events]."""
    if dialect == "chat":
        base = {"id": "chatcmpl-fault1", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def chunk(delta, finish=None):
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                              "finish_reason": finish}]})
        out = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in WORDS]
        out.append(chunk({}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            out.append(_sse({**base, "choices": [], "usage": usage}))
        return [*out, b"data: [DONE]\n\n"]
    if dialect == "responses":
        text = "".join(WORDS)
        out = [_sse({"type": "response.created", "sequence_number": 0,
                     "response": _response(model, "", None, "in_progress")}, "response.created")]
        out += [_sse({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_fault1",
                      "output_index": 0, "content_index": 0, "delta": w}, "response.output_text.delta")
                for i, w in enumerate(WORDS)]
        out.append(_sse({"type": "response.completed", "sequence_number": 9,
                         "response": _response(model, text, usage)}, "response.completed"))
        return out
    start_usage = {**usage, "output_tokens": 1}
    message = {**_message(model, "", start_usage), "content": [], "stop_reason": None}
    out = [_sse({"type": "message_start", "message": message}, "message_start"),
           _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start")]
    out += [_sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}},
                 "content_block_delta") for w in WORDS]
    out += [_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                  "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta"),
            _sse({"type": "message_stop"}, "message_stop")]
    return out
