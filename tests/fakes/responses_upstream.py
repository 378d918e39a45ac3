"""Fake OpenAI upstream that also speaks the Responses API (``POST /v1/responses``).

``FakeResponsesOpenAI`` extends ``FakeOpenAI``: ``POST /v1/responses`` is answered here, every
other route is delegated to the chat fake (same recorded ``requests`` list, same behaviours).

Behaviour is picked from ``model`` as in the chat fake:
  error-<status>  that status with an OpenAI error body.
  reset           stream: created, in_progress, output_item.added, content_part.added and two
                  text deltas, then the connection drops (no terminal event).
  fail            stream: ... two text deltas, then ``error`` + ``response.failed`` (their message
                  echoes the key without its ``sk-`` prefix).
  tool            with function ``tools``: one ``function_call`` item (``parallel``: two) whose
                  arguments are built from the parameter schema ("Paris"/"London", 42, ...). When
                  the last input item is a ``function_call_output``: "Tool result: <output>".
  echo            the reply text is the orjson dump of the received body.
  (default)       "Hello from fake <model>."
``max_output_tokens`` below the reply's word count cuts it: status "incomplete".
``previous_response_id`` must name a response this fake created with ``store`` not false, else
404 ``previous_response_not_found``; the fake keeps each stored response's conversation
(``fake.conversations[id]``) so tests can see what the upstream would continue from.
Usage: input = sum over input items of (3 + words); output = words of the reply (function
calls: 5 + words of the arguments). Streams split text on words and arguments every 5 characters.
"""
from __future__ import annotations

import re
import time

import orjson

from .openai_upstream import _SSE_HEADERS, FakeOpenAI, _arg_value, _error_body, _hash, _upstream_error, words


def _item_text(item: dict) -> str:
    content = item.get("content", item.get("output"))
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _items(body: dict) -> list[dict]:
    inp = body.get("input")
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    return [i for i in inp or [] if isinstance(i, dict)]


class FakeResponsesOpenAI(FakeOpenAI):
    def reset(self) -> None:
        super().reset()
        self.conversations: dict[str, list[dict]] = {}
        self.created = 0

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/v1/responses/") and environ["REQUEST_METHOD"] == "DELETE":
            return self._delete(environ, start_response, path.rsplit("/", 1)[1])
        if path != "/v1/responses" or environ["REQUEST_METHOD"] != "POST":
            return super().wsgi(environ, start_response)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        raw = environ["wsgi.input"].read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append({"method": "POST", "path": "/v1/responses", "headers": headers, "body": body})

        def respond(status, payload: bytes, extra=()):
            start_response(f"{status} X", [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(payload))), *extra])
            return [payload]

        if headers.get("authorization") != f"Bearer {self.api_key}":
            return respond(401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                            code="invalid_api_key"))
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return respond(400, _error_body("Missing required parameter: 'model'.", "invalid_request_error",
                                            "model", "missing_required_parameter"))
        model = body["model"]
        if m := re.search(r"error-(\d{3})", model):
            payload, extra = _upstream_error(int(m.group(1)))
            return respond(int(m.group(1)), payload, extra)
        history: list[dict] = []
        if prev := body.get("previous_response_id"):
            if prev not in self.conversations:
                return respond(404, _error_body(f"Previous response with id '{prev}' not found.",
                                                "invalid_request_error", "previous_response_id",
                                                "previous_response_not_found"))
            history = self.conversations[prev]
        items = history + _items(body)
        text, calls = self._answer(body, model, items)
        status = "completed"
        limit = body.get("max_output_tokens")
        if text is not None and isinstance(limit, int) and limit < words(text):
            text, status = " ".join(text.split()[:limit]), "incomplete"
        self.created += 1
        rid = "resp_" + _hash(body, self.created)[:40]
        output = []
        if text is not None:
            output.append({"id": "msg_" + _hash(rid, "m")[:40], "type": "message", "status": status,
                           "role": "assistant", "content": [{"type": "output_text", "text": text,
                                                             "annotations": [], "logprobs": []}]})
        output += calls
        usage_in = sum(3 + words(_item_text(i)) for i in items)
        usage_out = sum(5 + words(c["arguments"]) for c in calls) + words(text or "")
        response = {
            "id": rid, "object": "response", "created_at": int(time.time()), "status": status,
            "background": False, "completed_at": int(time.time()) if status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": body.get("instructions"), "max_output_tokens": limit, "model": model,
            "output": output, "parallel_tool_calls": True, "previous_response_id": prev,
            "reasoning": {"effort": None, "summary": None}, "service_tier": "default",
            "store": body.get("store") is not False, "temperature": 1.0, "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [], "top_p": 1.0,
            "truncation": "disabled", "metadata": body.get("metadata") or {},
            "usage": {"input_tokens": usage_in,
                      "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                      "output_tokens": usage_out, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": usage_in + usage_out},
        }
        if body.get("store") is not False:
            self.conversations[rid] = items + output
        if body.get("stream") is not True:
            return respond(200, orjson.dumps(response))
        start_response("200 OK", list(_SSE_HEADERS))
        return self._stream(response, model)

    def _delete(self, environ, start_response, rid: str):
        """DELETE /v1/responses/{id}: `{"id", "object": "response", "deleted": true}`, or OpenAI's 404."""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests.append({"method": "DELETE", "path": f"/v1/responses/{rid}", "headers": headers, "body": None})
        if headers.get("authorization") != f"Bearer {self.api_key}":
            status, payload = 401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                               code="invalid_api_key")
        elif self.conversations.pop(rid, None) is None:
            status, payload = 404, _error_body(f"Response with id '{rid}' not found.", "invalid_request_error")
        else:
            status, payload = 200, orjson.dumps({"id": rid, "object": "response", "deleted": True})
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    @staticmethod
    def _answer(body: dict, model: str, items: list[dict]):
        """-> (text or None, function_call items)."""
        if "tool" in model:
            if items and items[-1].get("type") == "function_call_output":
                return f"Tool result: {_item_text(items[-1])}", []
            funcs = [t for t in body.get("tools") or []
                     if isinstance(t, dict) and t.get("type") == "function"]
            if funcs:
                picks = funcs[:1] + ([funcs[min(1, len(funcs) - 1)]] if "parallel" in model else [])
                calls = []
                for i, fn in enumerate(picks):
                    props = (fn.get("parameters") or {}).get("properties") or {}
                    args = orjson.dumps({k: _arg_value(v, k, i == 1) for k, v in props.items()}).decode()
                    calls.append({"id": "fc_" + _hash(body, i)[:40], "type": "function_call",
                                  "status": "completed", "arguments": args,
                                  "call_id": "call_" + _hash(body, i, "c")[:24], "name": fn.get("name", "")})
                return None, calls
        if "echo" in model:
            return orjson.dumps(body).decode(), []
        return f"Hello from fake {model}.", []

    def _stream(self, response: dict, model: str):
        start = {**response, "status": "in_progress", "output": [], "usage": None, "completed_at": None}
        events = [{"type": "response.created", "response": start},
                  {"type": "response.in_progress", "response": start}]
        for index, item in enumerate(response["output"]):
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                text = item["content"][0]["text"]
                part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
                events.append({"type": "response.output_item.added", "output_index": index,
                                  "item": {**item, "status": "in_progress", "content": []}})
                events.append({"type": "response.content_part.added", **where, "content_index": 0,
                               "part": part})
                for piece in re.findall(r"\s*\S+", text):
                    events.append({"type": "response.output_text.delta", **where, "content_index": 0,
                                      "delta": piece, "logprobs": []})
                events.append({"type": "response.output_text.done", **where, "content_index": 0, "text": text,
                                  "logprobs": []})
                events.append({"type": "response.content_part.done", **where, "content_index": 0,
                                  "part": {**part, "text": text}})
            else:
                args = item["arguments"]
                events.append({"type": "response.output_item.added", "output_index": index,
                                  "item": {**item, "status": "in_progress", "arguments": ""}})
                for j in range(0, len(args), 5):
                    events.append({"type": "response.function_call_arguments.delta", **where,
                                      "delta": args[j:j + 5]})
                events.append({"type": "response.function_call_arguments.done", **where,
                                  "name": item["name"], "arguments": args})
            events.append({"type": "response.output_item.done", "output_index": index, "item": item})
        terminal = "response.completed" if response["status"] == "completed" else "response.incomplete"
        events.append({"type": terminal, "response": response})
        if "reset" in model or "fail" in model:  # created, in_progress, added, part, 2 deltas; then cut
            events = events[:6]
            if "fail" in model:
                boom = f"boom (key {self.api_key[3:]})"  # careless: echoes the key
                failed = {**start, "status": "failed", "error": {"code": "server_error", "message": boom}}
                events += [{"type": "error", "code": "server_error", "message": boom, "param": None},
                           {"type": "response.failed", "response": failed}]
        record = {"model": model, "chunks_sent": 0, "completed": False, "closed_early": False}
        self.streams.append(record)

        def gen():
            for n, obj in enumerate(events):
                obj = {"type": obj["type"], "sequence_number": n, **obj}
                yield f"event: {obj['type']}\ndata: ".encode() + orjson.dumps(obj) + b"\n\n"
                record["chunks_sent"] += 1
            if "reset" in model:
                raise ConnectionResetError(104, "fake upstream reset")
            record["completed"] = True

        return gen()
