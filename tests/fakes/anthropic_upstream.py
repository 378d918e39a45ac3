"""Fake Anthropic Messages API upstream (wire-exact JSON and SSE) for gateway tests.

``FakeAnthropic`` is a plain WSGI app with recorded state; ``serve(fake)`` runs it on
``gevent.pywsgi`` and returns its base URL ``http://127.0.0.1:<port>`` (what the Anthropic SDK
takes as ``base_url``; requests go to ``{base_url}/v1/messages``).

Routes (all require ``x-api-key: <api_key>``, else 401 ``authentication_error``, and an
``anthropic-version`` header, else 400 ``invalid_request_error``):
  POST /v1/messages                message object / SSE stream (message_start, content_block_start,
                                   ping, content_block_delta..., content_block_stop, message_delta,
                                   message_stop), as the Anthropic docs show it
  POST /v1/messages/count_tokens   {"input_tokens": N}
Errors have Anthropic's shape ``{"type":"error","error":{"type","message"},"request_id"}``; missing
``model`` / ``messages`` / ``max_tokens`` -> 400 naming the field; unknown path -> 404.

Behaviour is picked from the request's ``model`` (substrings; they combine):
  slow-<ms>      sleep <ms> first.
  error-<status> respond <status> with an Anthropic error (400 invalid_request_error,
                 401 authentication_error, 403 permission_error, 404 not_found_error,
                 413 request_too_large, 429 rate_limit_error with ``retry-after: 1``,
                 529 overloaded_error, other 5xx api_error). Messages contain LEAK_MARKER.
  reset          non-stream: connection dropped; stream: message_start, the first block's start,
                 ping and 2 text deltas, then the connection is dropped (no message_stop).
  midstream-error stream: after 2 text deltas an ``event: error`` (overloaded_error, its message
                 echoing the key without its ``sk-`` prefix), then the end.
  bad-sse-list   stream: as ``reset`` up to the cut, then ``data: ["a list"]`` as a content_block_delta
                 event, then the rest of the stream.
  bad-sse-json   stream: as ``bad-sse-list`` with ``data: {bad json`` instead.
  echo           the reply text is the orjson dump of the received body.
  thinking       a thinking block (signed) comes first; ``redacted`` adds a redacted_thinking block.
                 Thinking blocks sent back in assistant turns must carry the signature this fake
                 made for their text, else 400 (as Anthropic rejects tampered thinking).
  tool           with ``tools`` (tool_choice not "none"): a text block "Let me check." and one
                 tool_use block (the first tool, or tool_choice's), input built from input_schema
                 (string "Paris", integer 42, number 1.5, boolean true, array [], object {}; enum
                 -> first). ``parallel`` -> two tool_use blocks (second: next tool, strings
                 "London") unless disable_parallel_tool_use. stop_reason "tool_use". If the last
                 user turn has tool_result blocks: "Tool result: <texts joined by ' | '>".
  (default)      "Hello from fake <model>." stop_reason "end_turn".
  cached         usage: of the P prompt tokens, P//2 are cache reads and P//4 cache writes;
                 input_tokens is the rest.
  prefixcache    reads and writes at the request's cache_control breakpoints, as
                 prompt_caches.AnthropicCache models Anthropic's cache (no breakpoint: no caching).
``max_tokens`` below the reply's word count truncates it (stop_reason "max_tokens"); a
``stop_sequences`` entry found in the text cuts it there (stop_reason "stop_sequence").

Token counts: prompt P = words of the system text + sum over messages of (3 + words of its text,
tool_result text included) + per tool (3 + words of its description). Output = words of text
blocks + words of thinking + per tool_use 5 + words of its JSON input. count_tokens returns P.
"""
from __future__ import annotations

import hashlib
import re

import gevent
import orjson
from gevent.pywsgi import WSGIServer

from tests.fakes.openai_upstream import BAD_SSE, LEAK_MARKER, words
from tests.fakes.prompt_caches import AnthropicCache, content_text

API_VERSION_HEADER = "anthropic-version"
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                405: "Method Not Allowed", 413: "Request Entity Too Large", 429: "Too Many Requests",
                500: "Internal Server Error", 503: "Service Unavailable", 529: "Overloaded"}
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
                529: "overloaded_error"}


def _hash(*parts) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def signature_for(thinking: str) -> str:
    """The opaque signature this fake puts on (and expects back with) a thinking block."""
    return "EqQBCgIYAh" + _hash("sig", thinking)[:48] + "=="


def prompt_tokens(body: dict) -> int:
    system = body.get("system")
    total = words(content_text(system) if system else "")
    total += sum(3 + words(content_text(m.get("content")))
                 for m in body.get("messages") or [] if isinstance(m, dict))
    total += sum(3 + words(t.get("description") or "")
                 for t in body.get("tools") or [] if isinstance(t, dict))
    return total


def _error(status: int, message: str, type_: str | None = None) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_ or _ERROR_TYPES.get(status, "api_error"),
                                                    "message": message},
                         "request_id": "req_011" + _hash(status, message)[:21]})


def _arg_value(schema, alt: bool):
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type") if isinstance(schema, dict) else None
    t = next((x for x in t if x != "null"), None) if isinstance(t, list) else t
    return {"integer": 42, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
        t, "London" if alt else "Paris")


class FakeAnthropic:
    """State + WSGI app. Records every request, and the exact bytes of every stream it sent."""

    def __init__(self, api_key: str = "sk-ant-upstream-test"):
        self.api_key = api_key
        self.url = ""
        self.reset()

    def reset(self) -> None:
        self.prompt_cache = AnthropicCache()
        # requests: {"method", "path", "headers" (lowercased), "body" (json or None), "raw" (bytes)}
        self.requests: list[dict] = []
        # streams: {"model", "sent" (list of SSE events written), "completed", "closed_early"}
        self.streams: list[dict] = []
        # non-stream replies: the exact bytes of each 200 body
        self.replies: list[bytes] = []

    def __call__(self, environ, start_response):
        return self.wsgi(environ, start_response)

    # ---------------------------------------------------------------- WSGI
    def wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        raw = environ["wsgi.input"].read() if method == "POST" else b""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body, "raw": raw})
        rid = "req_011" + _hash(len(self.requests), path)[:21]

        def respond(status, payload: bytes, extra=()):
            start_response(f"{status} {_STATUS_TEXT.get(status, 'Error')}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(payload))),
                            ("request-id", rid), *extra])
            if status == 200:
                self.replies.append(payload)
            return [payload]

        routes = ("/v1/messages", "/v1/messages/count_tokens")
        if path not in routes:
            return respond(404, _error(404, "Not found"))
        if method != "POST":
            return respond(405, _error(405, "Method Not Allowed", "invalid_request_error"))
        if headers.get("x-api-key") != self.api_key:
            return respond(401, _error(401, "invalid x-api-key"))
        if not headers.get(API_VERSION_HEADER):
            return respond(400, _error(400, "anthropic-version: header is required"))
        if not isinstance(body, dict):
            return respond(400, _error(400, "There was an error parsing the body of your request."))
        for field in ("model", "messages") + (("max_tokens",) if path == "/v1/messages" else ()):
            if field not in body:
                return respond(400, _error(400, f"{field}: Field required"))
        if bad := self._tampered_thinking(body):
            return respond(400, _error(400, bad))
        model = str(body["model"])
        if m := re.search(r"slow-(\d+)", model):
            gevent.sleep(int(m.group(1)) / 1000)
        if m := re.search(r"error-(\d{3})", model):
            status = int(m.group(1))
            message = "Overloaded" if status == 529 else f"Upstream failure (key {LEAK_MARKER})"
            return respond(status, _error(status, message), [("retry-after", "1")] if status == 429 else ())
        if path == "/v1/messages/count_tokens":
            return respond(200, orjson.dumps({"input_tokens": prompt_tokens(body)}))
        stream = body.get("stream") is True
        if "reset" in model and not stream:
            raise ConnectionResetError(104, "fake upstream reset")  # gevent drops the socket
        content, stop_reason, stop_sequence = self._reply(body, model)
        usage = self._usage(body, model, content)
        if "prefixcache" in model:  # explicit breakpoints only (tests/fakes/prompt_caches.py)
            read, write = self.prompt_cache.usage(self.api_key, body)
            usage.update(input_tokens=prompt_tokens(body) - read - write, cache_read_input_tokens=read,
                         cache_creation_input_tokens=write)
        mid = "msg_01" + _hash(body)[:22]
        if not stream:
            return respond(200, orjson.dumps({
                "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": stop_sequence,
                "usage": {**usage, "service_tier": "standard"}}))
        start_response("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"),
                                  ("Cache-Control", "no-cache"), ("request-id", rid)])
        return self._stream(model, mid, content, stop_reason, stop_sequence, usage)

    @staticmethod
    def _tampered_thinking(body: dict) -> str | None:
        for i, m in enumerate(body.get("messages") or []):
            content = m.get("content") if isinstance(m, dict) and m.get("role") == "assistant" else None
            for j, b in enumerate(content if isinstance(content, list) else []):
                if isinstance(b, dict) and b.get("type") == "thinking" and \
                        b.get("signature") != signature_for(b.get("thinking", "")):
                    return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
        return None

    # ---------------------------------------------------------------- messages
    @staticmethod
    def _reply(body: dict, model: str):
        """-> (content blocks, stop_reason, stop_sequence)."""
        messages = body["messages"]
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        blocks: list[dict] = []
        if "thinking" in model:
            thought = f"The user wrote {words(content_text(last.get('content')))} words; answer briefly."
            blocks.append({"type": "thinking", "thinking": thought, "signature": signature_for(thought)})
            if "redacted" in model:
                blocks.append({"type": "redacted_thinking",
                               "data": "EmwKAhgB" + _hash("redacted", thought)[:40]})
        content = last.get("content") if isinstance(last.get("content"), list) else []
        results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        choice = body.get("tool_choice") or {}
        if "tool" in model and results:
            text = "Tool result: " + " | ".join(content_text(r.get("content")) for r in results)
        elif "tool" in model and isinstance(body.get("tools"), list) and choice.get("type") != "none":
            tools = [t for t in body["tools"] if isinstance(t, dict) and t.get("name")]
            if choice.get("type") == "tool":
                tools = [t for t in tools if t["name"] == choice.get("name")] or tools
            if tools:
                parallel = "parallel" in model and not choice.get("disable_parallel_tool_use")
                picks = [tools[0]] + ([tools[1] if len(tools) > 1 else tools[0]] if parallel else [])
                blocks.append({"type": "text", "text": "Let me check."})
                for i, tool in enumerate(picks):
                    props = (tool.get("input_schema") or {}).get("properties") or {}
                    blocks.append({"type": "tool_use", "id": "toolu_01" + _hash(body, i)[:22],
                                   "name": tool["name"],
                                   "input": {k: _arg_value(v, i == 1) for k, v in props.items()}})
                return blocks, "tool_use", None
            text = f"Hello from fake {model}."
        elif "echo" in model:
            text = orjson.dumps(body).decode()
        else:
            text = f"Hello from fake {model}."
        stop_reason, stop_sequence = "end_turn", None
        for seq in body.get("stop_sequences") or []:
            if isinstance(seq, str) and seq and seq in text:
                text, stop_reason, stop_sequence = text[:text.index(seq)], "stop_sequence", seq
                break
        limit = body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < words(text):
            text, stop_reason, stop_sequence = " ".join(text.split()[:limit]), "max_tokens", None
        blocks.append({"type": "text", "text": text})
        return blocks, stop_reason, stop_sequence

    @staticmethod
    def _usage(body: dict, model: str, content: list[dict]) -> dict:
        prompt = prompt_tokens(body)
        read, write = (prompt // 2, prompt // 4) if "cached" in model else (0, 0)
        output = 0
        for b in content:
            if b["type"] == "text":
                output += words(b["text"])
            elif b["type"] == "thinking":
                output += words(b["thinking"])
            elif b["type"] == "tool_use":
                output += 5 + words(orjson.dumps(b["input"]).decode())
        return {"input_tokens": prompt - read - write, "cache_creation_input_tokens": write,
                "cache_read_input_tokens": read, "output_tokens": output}

    def _stream(self, model, mid, content, stop_reason, stop_sequence, usage):
        def event(name: str, data: dict) -> bytes:
            return f"event: {name}\n".encode() + b"data: " + orjson.dumps({"type": name, **data}) + b"\n\n"

        events = [event("message_start", {"message": {
            "id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}})]
        for i, block in enumerate(content):
            kind = block["type"]
            start = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "",
                                                                        "signature": ""},
                     "tool_use": {**block, "input": {}}}.get(kind, block)
            events.append(event("content_block_start", {"index": i, "content_block": start}))
            if i == 0:
                events.append(event("ping", {}))
            if kind == "text":
                deltas = [{"type": "text_delta", "text": p} for p in re.findall(r"\s*\S+", block["text"])]
            elif kind == "thinking":
                deltas = [{"type": "thinking_delta", "thinking": p}
                          for p in re.findall(r"\s*\S+", block["thinking"])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "tool_use":
                args = orjson.dumps(block["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": ""}]
                deltas += [{"type": "input_json_delta", "partial_json": args[j:j + 5]}
                           for j in range(0, len(args), 5)]
            else:  # redacted_thinking arrives whole in its start event
                deltas = []
            events += [event("content_block_delta", {"index": i, "delta": d}) for d in deltas]
            events.append(event("content_block_stop", {"index": i}))
        final = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
        events.append(event("message_delta", {"delta": final, "usage": usage}))
        events.append(event("message_stop", {}))
        record = {"model": model, "sent": [], "completed": False, "closed_early": False}
        self.streams.append(record)
        cut = 5 if ("reset" in model or "midstream-error" in model) else None  # start, block, ping, 2 deltas

        bad = next((b"event: content_block_delta\n" + v for k, v in BAD_SSE.items() if k in model), None)

        def gen():
            try:
                for n, ev in enumerate(events):
                    if n == cut and "reset" in model:
                        raise ConnectionResetError(104, "fake upstream reset")
                    if n == 5 and bad is not None:
                        yield bad
                    if n == cut:
                        ev = event("error", {"error": {"type": "overloaded_error",  # careless: echoes the key
                                                       "message": f"Overloaded (key {self.api_key[3:]})"}})
                    record["sent"].append(ev)
                    yield ev
                    if n == cut:
                        break
                record["completed"] = cut is None
            except GeneratorExit:
                record["closed_early"] = True
                raise

        return gen()


def serve(fake: FakeAnthropic) -> tuple[WSGIServer, str]:
    """Start ``fake`` on an ephemeral port; returns (server, "http://127.0.0.1:PORT")."""
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
