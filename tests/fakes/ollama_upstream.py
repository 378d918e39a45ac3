"""Fake Ollama server (native API: JSON and NDJSON exactly as Ollama's API docs show) for gateway tests.

``FakeOllama`` is a plain WSGI app with recorded state; ``serve(fake)`` runs it on ``gevent.pywsgi``
and returns its base URL ``http://127.0.0.1:<port>`` (what Ollama's own clients take).

Routes (no auth, as a local Ollama; with ``api_key`` set, ``Authorization: Bearer <key>`` is required):
  POST /api/chat    ``stream`` defaults to true: NDJSON (``application/x-ndjson``), one object a line,
                    ``{"model","created_at","message":{"role":"assistant","content":<piece>},"done":false}``,
                    then a final object with ``done: true``, ``done_reason``, durations,
                    ``prompt_eval_count`` and ``eval_count``. ``stream: false``: one object.
  POST /api/embed   ``{"model","embeddings":[[...]],"total_duration","load_duration","prompt_eval_count"}``
  GET  /api/tags    ``{"models":[{"name","model","modified_at","size","digest","details"}]}`` (``tags``,
                    TAGS by default); ``tags_fault`` makes it hostile: ``hang`` (no answer for 30 s),
                    ``malformed`` (cut JSON), ``huge`` (8 MB), ``error-500``
Errors are ``{"error": "<message>"}``; an unknown model (``missing`` in its name) -> 404
``model '<name>' not found``; bad JSON -> 400; unknown path -> 404 ``404 page not found`` (text).

Behaviour is picked from the request's ``model`` (substrings; they combine):
  error-<status> respond <status> with ``{"error": ...}``; the message contains LEAK_MARKER.
  truncate       stream: the role/content objects for 2 words, then the connection ends (no done).
  midstream-error stream: 2 content objects, then ``{"error": "..."}`` (status stays 200), then the end.
  think          ``message.thinking`` comes first ("Let me think."), as its own objects when streaming.
  echo           reply content is the orjson dump of the received body.
  tool           with ``tools``: content "", ``tool_calls`` to the first tool, ``arguments`` an object
                 built from its parameters (string "Paris", integer 42, number 1.5, boolean true,
                 array [], object {}; enum -> first); ``parallel``: a second call (next tool,
                 strings "London"). Streaming sends each call in its own ``done: false`` object, as
                 Ollama does. If the last message has role ``tool``: "Tool result: <content> (<tool_name>)".
  (default)      "Hello from ollama <model>."
``options.num_predict`` below the reply's word count truncates it (done_reason "length").

Token counts: prompt_eval_count = sum over messages of (3 + words of content) + 10 per image;
eval_count = words of content and thinking + per tool call 5 + words of its JSON arguments.
Embeddings: prompt_eval_count = words per input; vectors have ``dimensions`` (default 8) floats.
"""
from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import gevent
import orjson
from gevent.pywsgi import WSGIServer

from tests.fakes.openai_upstream import LEAK_MARKER, words

TAGS = ["llama3.2:latest", "nomic-embed-text:latest", "qwen3:8b"]
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_STATS = {"total_duration": 4883583458, "load_duration": 1334875, "prompt_eval_duration": 342546000,
          "eval_duration": 4535599000}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _arg(schema: dict, alt: bool):
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type") if isinstance(schema, dict) else None
    return {"integer": 42, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
        kind, "London" if alt else "Paris")


def _tool_calls(tools: list, parallel: bool) -> list[dict]:
    funcs = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not funcs:
        return []
    picks = [funcs[0]] + ([funcs[1] if len(funcs) > 1 else funcs[0]] if parallel else [])
    return [{"function": {"name": fn.get("name", ""), "arguments": {
        k: _arg(v, i == 1) for k, v in ((fn.get("parameters") or {}).get("properties") or {}).items()}}}
        for i, fn in enumerate(picks)]


def _vector(item: str, dims: int) -> list[float]:
    seed = hashlib.sha256(item.encode()).digest()
    raw = b"".join(hashlib.sha256(seed + bytes([k])).digest() for k in range((dims * 2 + 31) // 32))
    vec = [int.from_bytes(raw[2 * d:2 * d + 2], "big") / 32767.5 - 1.0 for d in range(dims)]
    norm = sum(v * v for v in vec) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in vec]


class FakeOllama:
    """State + WSGI app. Records every request it got."""

    def __init__(self, api_key: str | None = None):
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        # requests: {"method", "path", "headers" (lowercased), "body" (json or None)}
        self.requests: list[dict] = []
        self.tags = list(TAGS)  # what /api/tags lists
        self.tags_fault: str | None = None  # hang | malformed | huge | error-500 (a hostile /api/tags)

    def wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        raw = environ["wsgi.input"].read() if method == "POST" else b""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = ...
        self.requests.append({"method": method, "path": path, "headers": headers,
                              "body": None if body is ... else body})

        def respond(status: int, payload: bytes, content_type: str = "application/json; charset=utf-8"):
            start_response(f"{status} {_STATUS_TEXT.get(status, 'Error')}",
                           [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
            return [payload]

        def error(status: int, message: str):
            return respond(status, orjson.dumps({"error": message}))

        routes = {"/api/chat": "POST", "/api/embed": "POST", "/api/tags": "GET"}
        if routes.get(path) != method:
            return respond(404, b"404 page not found", "text/plain")
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "unauthorized")
        if path == "/api/tags" and self.tags_fault:
            return self._bad_tags(respond, error)
        if path == "/api/tags":
            return respond(200, orjson.dumps({"models": [
                {"name": n, "model": n, "modified_at": "2025-01-01T00:00:00Z", "size": 2019393189,
                 "digest": hashlib.sha256(n.encode()).hexdigest(),
                 "details": {"format": "gguf", "family": "llama", "families": None, "parameter_size": "3.2B",
                             "quantization_level": "Q4_K_M"}} for n in self.tags]}))
        if body is ... or not isinstance(body, dict):
            return error(400, "invalid character '}' looking for beginning of value")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error(400, "model is required")
        if "missing" in model:
            return error(404, f"model '{model}' not found")
        if m := re.search(r"error-(\d{3})", model):
            return error(int(m.group(1)), f"the model failed to generate a response ({LEAK_MARKER})")
        if path == "/api/embed":
            return self._embed(body, model, respond, error)
        if not isinstance(body.get("messages"), list):
            return error(400, "messages is required")
        return self._chat(body, model, start_response, respond)

    def _bad_tags(self, respond, error):
        if self.tags_fault == "hang":  # accepts, then never answers
            gevent.sleep(30)
            return respond(200, b"{}")
        if self.tags_fault == "malformed":
            return respond(200, b'{"models": [{"name": "llama3.2:latest", ')
        if self.tags_fault == "huge":  # 8 MB of valid-looking JSON
            return respond(200, b'{"models": [' + b'{"name": "x"},' * 600_000 + b'{"name": "y"}]}')
        return error(500, "internal error")

    # ---------------------------------------------------------------- chat
    @staticmethod
    def _reply(body: dict, model: str) -> tuple[str, list[dict], str]:
        """-> (content, tool_calls, done_reason)."""
        messages = body["messages"]
        last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
        if "tool" in model:
            if last.get("role") == "tool":
                return f"Tool result: {last.get('content', '')} ({last.get('tool_name', '')})", [], "stop"
            tools = body.get("tools") if isinstance(body.get("tools"), list) else []
            calls = _tool_calls(tools, "parallel" in model)
            if calls:
                return "", calls, "stop"
        text = orjson.dumps(body).decode() if "echo" in model else f"Hello from ollama {model}."
        limit = (body.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 < limit < words(text):
            return " ".join(text.split()[:limit]), [], "length"
        return text, [], "stop"

    def _chat(self, body: dict, model: str, start_response, respond):
        content, calls, reason = self._reply(body, model)
        thinking = "Let me think." if "think" in model else ""
        prompt = sum(3 + words(m.get("content")) + 10 * len(m.get("images") or [])
                     for m in body["messages"] if isinstance(m, dict))
        completion = words(content) + words(thinking) + sum(
            5 + words(orjson.dumps(c["function"]["arguments"]).decode()) for c in calls)
        final = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                 "done_reason": reason, "done": True, **_STATS, "prompt_eval_count": prompt,
                 "eval_count": completion}
        if body.get("stream", True) is False:
            message = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = calls
            return respond(200, orjson.dumps({**final, "message": message}))

        def piece(**message) -> bytes:
            obj = {"model": model, "created_at": _now(), "done": False,
                   "message": {"role": "assistant", "content": "", **message}}
            return orjson.dumps(obj) + b"\n"

        lines = [piece(content="", thinking=t) for t in re.findall(r"\s*\S+", thinking)]
        lines += [piece(content=w) for w in re.findall(r"\s*\S+", content)]
        lines += [piece(tool_calls=[c]) for c in calls]
        if "truncate" in model:
            lines = lines[:2]
        elif "midstream-error" in model:
            lines = lines[:2] + [orjson.dumps({"error": f"an error was encountered while running the model "
                                                        f"({LEAK_MARKER})"}) + b"\n"]
        else:
            lines.append(orjson.dumps(final) + b"\n")
        start_response("200 OK", [("Content-Type", "application/x-ndjson")])
        return iter(lines)

    # ---------------------------------------------------------------- embeddings
    @staticmethod
    def _embed(body: dict, model: str, respond, error):
        inp = body.get("input")
        items = [inp] if isinstance(inp, str) else inp
        if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
            return error(400, "invalid input type")
        dims = body.get("dimensions") or 8
        return respond(200, orjson.dumps({
            "model": model, "embeddings": [_vector(i, dims) for i in items], "total_duration": 14143917,
            "load_duration": 1019500, "prompt_eval_count": sum(words(i) for i in items)}))


def serve(fake: FakeOllama) -> tuple[WSGIServer, str]:
    """Start ``fake`` on an ephemeral port; returns (server, "http://127.0.0.1:PORT")."""
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
