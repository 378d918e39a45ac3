"""Fake OpenAI-compatible upstream (Chat Completions wire format) for gateway tests.

``FakeOpenAI`` is a plain WSGI app with recorded state; ``serve(fake)`` runs it on
``gevent.pywsgi`` at ``http://127.0.0.1:<port>/v1``. Blocking clients in the same
process (requests, the openai SDK) need gevent monkey-patching to reach it.

Routes (all require ``Authorization: Bearer <api_key>`` or a key in ``extra_keys``, else 401
``invalid_api_key``):
  POST /v1/chat/completions   chat.completion / SSE chat.completion.chunk stream
  GET  /v1/models             list of MODELS
  POST /v1/embeddings         deterministic vectors (``dimensions`` default 8,
                              ``encoding_format`` "float" or "base64")
Malformed JSON -> 400; missing ``model``/``messages`` -> 400; unknown path -> 404.

Behaviour is picked from the request's ``model`` (substrings; they combine, e.g.
``fake-tool-parallel-cached``). Checked in this order:
  slow-<ms>      sleep <ms> (gevent.sleep) first, then continue as usual.
  error-<status> respond <status> with an OpenAI error body (429: type "requests",
                 code "rate_limit_exceeded", header ``retry-after: 1``; 5xx:
                 "server_error"; 401: "invalid_api_key"; other 4xx:
                 "invalid_request_error"). The message always contains LEAK_MARKER.
  leak-key       400 whose message echoes the fake's own API key (without its ``sk-``
                 prefix, and two 12-character pieces of it), as careless upstreams do.
  midstream-leak stream: role chunk + 1 content chunk, then an error event echoing the key.
  reset          non-stream: connection dropped without a response; stream: role
                 chunk + 2 content chunks, then the connection is dropped (no
                 finish chunk, no ``[DONE]``).
  drip-<ms>      reply of DRIP_CHUNKS words, one content chunk each, <ms> apart;
                 ``fake.streams[-1]`` records chunks_sent / completed / closed_early.
  hang           sleep HANG_SECONDS before answering anything (an upstream that hangs).
  stall          stream: role chunk + 2 content chunks, then HANG_SECONDS of silence before the
                 rest (a stream that stalls mid-body); non-stream: as ``hang``.
  bad-sse-list   stream: role chunk + 2 content chunks, then ``data: ["a list"]``, then the rest.
  bad-sse-json   stream: as ``bad-sse-list`` with ``data: {bad json`` instead.
  echo           reply content is the orjson dump of the received body.
  say-<word>     reply content is <word> (a judge model answering "yes" or "no").
  tool           with ``tools`` (and tool_choice != "none"): content null, one
                 tool call to the first (or tool_choice-named) function, arguments
                 built from its parameter schema (string "Paris", integer 42,
                 number 1.5, boolean true, array [], object {}; enum -> first value),
                 finish_reason "tool_calls". ``parallel`` too -> two calls (second
                 uses the second tool if any, strings "London"). If the last message
                 has role "tool": reply "Tool result: <its content>".
  (default)      reply "Hello from fake <model>." finish_reason "stop".
  cached         usage.prompt_tokens_details.cached_tokens = prompt_tokens // 2.
  prefixcache    cached_tokens from OpenAI's automatic prefix cache, as prompt_caches.OpenAICache
                 models it (repeated prefixes of 1,024 tokens or more, 128-token steps).
``max_completion_tokens``/``max_tokens`` smaller than the reply's word count
truncates the text reply to that many words with finish_reason "length".

Token counts (see ``prompt_tokens`` / ``words``): prompt = sum over messages of
(3 + whitespace words of its text content); completion = words in the reply text,
or for tool calls 5 per call + words in its arguments string. Embeddings: prompt =
words per string input (or length of a token-id list). IDs are deterministic
(``chatcmpl-<hash>``, ``call_<hash>``); ``created`` is real time.
"""
from __future__ import annotations

import base64
import hashlib
import re
import struct
import time

import gevent
import orjson
from gevent.pywsgi import WSGIServer

from tests.fakes.prompt_caches import OpenAICache

LEAK_MARKER = "sk-upstream-secret-LEAK"
HANG_SECONDS = 30  # longer than any deadline the tests set; the gateway must give up first
BAD_SSE = {"bad-sse-list": b'data: ["a list"]\n\n', "bad-sse-json": b"data: {bad json\n\n"}
DRIP_CHUNKS = 50
SYSTEM_FINGERPRINT = "fp_fake0001"
MODELS = [("gpt-4o-mini", 1721172741, "system"), ("gpt-4o", 1715367049, "system"),
          ("text-embedding-3-small", 1705948997, "system")]
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
                404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
                422: "Unprocessable Entity", 429: "Too Many Requests",
                500: "Internal Server Error", 502: "Bad Gateway",
                503: "Service Unavailable", 504: "Gateway Timeout"}
_SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"),
                ("Cache-Control", "no-cache")]


def words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _text_of(content) -> str:
    """Text of a message ``content`` (string, list of parts, or None)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def prompt_tokens(messages) -> int:
    return sum(3 + words(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def _hash(*parts) -> str:
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _error_body(message, type_, param=None, code=None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_,
                                   "param": param, "code": code}})


def _upstream_error(status: int) -> tuple[bytes, list]:
    leak = f"(upstream key {LEAK_MARKER})"
    if status == 429:
        return _error_body(f"Rate limit reached for requests {leak}. Please try again "
                           "in 1s.", "requests", code="rate_limit_exceeded"), \
            [("retry-after", "1")]
    if status == 401:
        return _error_body(f"Incorrect API key provided: {LEAK_MARKER}.",
                           "invalid_request_error", code="invalid_api_key"), []
    if status >= 500:
        return _error_body(f"The server had an error while processing your request "
                           f"{leak}.", "server_error"), []
    return _error_body(f"Invalid request {leak}.", "invalid_request_error"), []


def _arg_value(schema: dict, name: str, alt: bool):
    if isinstance(schema, dict) and schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type") if isinstance(schema, dict) else None
    t = next((x for x in t if x != "null"), None) if isinstance(t, list) else t
    return {"integer": 42, "number": 1.5, "boolean": True, "array": [],
            "object": {}}.get(t, "London" if alt else "Paris")


def _tool_calls(body: dict, parallel: bool) -> list[dict]:
    funcs = [t["function"] for t in body["tools"]
             if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = [f for f in funcs if f.get("name") == choice["function"].get("name")]
        funcs = named or funcs
    if not funcs:
        return []
    picks = [funcs[0]] + ([funcs[1] if len(funcs) > 1 else funcs[0]] if parallel else [])
    calls = []
    for i, fn in enumerate(picks):
        props = (fn.get("parameters") or {}).get("properties") or {}
        args = {k: _arg_value(v, k, i == 1) for k, v in props.items()}
        calls.append({"id": "call_" + _hash(body, i)[:24], "type": "function",
                      "function": {"name": fn.get("name", ""),
                                   "arguments": orjson.dumps(args).decode()}})
    return calls


class FakeOpenAI:
    """State + WSGI app. Records every request it got."""

    def __init__(self, api_key: str = "sk-upstream-test"):
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.prompt_cache = OpenAICache()
        # requests: {"method", "path", "headers" (lowercased), "body" (json or None)}
        self.requests: list[dict] = []
        # streams: {"model", "chunks_sent" (SSE events written), "completed", "closed_early"}
        self.streams: list[dict] = []
        # more keys accepted besides api_key (a customer's own key, for BYOK tests)
        self.extra_keys: set[str] = set()

    @property
    def stream_chunks_sent(self) -> list[int]:
        return [s["chunks_sent"] for s in self.streams]

    # ---------------------------------------------------------------- WSGI
    def __call__(self, environ, start_response):
        return self.wsgi(environ, start_response)

    @property
    def app(self):
        return self.wsgi

    def wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        raw = environ["wsgi.input"].read() if method == "POST" else b""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body, bad_json = None, True
        else:
            bad_json = False
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        rid = "req_" + _hash(len(self.requests), path)[:16]

        def respond(status, payload: bytes, extra=()):
            start_response(f"{status} {_STATUS_TEXT.get(status, 'Error')}",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(payload))),
                            ("x-request-id", rid), *extra])
            return [payload]

        routes = {"/v1/chat/completions": "POST", "/v1/embeddings": "POST", "/v1/models": "GET"}
        if path not in routes:
            return respond(404, _error_body(f"Invalid URL ({method} {path})",
                                            "invalid_request_error"))
        if routes[path] != method:
            return respond(405, _error_body(f"Method not allowed ({method} {path})",
                                            "invalid_request_error"))
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}" and auth[7:] not in self.extra_keys:
            token = auth[7:] if auth.startswith("Bearer ") else ""
            shown = token[:3] + "*" * 10 + token[-4:] if len(token) > 8 else token
            return respond(401, _error_body(
                f"Incorrect API key provided: {shown}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error", code="invalid_api_key"))
        if path == "/v1/models":
            return respond(200, orjson.dumps({"object": "list", "data": [
                {"id": m, "object": "model", "created": c, "owned_by": o}
                for m, c, o in MODELS]}))
        if bad_json or not isinstance(body, dict):
            return respond(400, _error_body(
                "We could not parse the JSON body of your request. (HINT: This likely "
                "means you aren't using your HTTP library correctly. The OpenAI API "
                "expects a JSON payload, but what was sent was not valid JSON.)",
                "invalid_request_error"))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return respond(400, _error_body("you must provide a model parameter",
                                            "invalid_request_error"))
        if m := re.search(r"slow-(\d+)", model):
            gevent.sleep(int(m.group(1)) / 1000)
        stream = path == "/v1/chat/completions" and body.get("stream") is True
        if "hang" in model or ("stall" in model and not stream):
            gevent.sleep(HANG_SECONDS)
        if m := re.search(r"error-(\d{3})", model):
            payload, extra = _upstream_error(int(m.group(1)))
            return respond(int(m.group(1)), payload, extra)
        if "leak-key" in model:
            key = self.api_key
            return respond(400, _error_body(
                f"Invalid request for key {key.removeprefix('sk-')} (starts {key[:12]}, ends {key[-12:]}).",
                "invalid_request_error"))
        if "reset" in model and not stream:
            raise ConnectionResetError(104, "fake upstream reset")  # gevent drops the socket
        if path == "/v1/embeddings":
            return self._embeddings(body, respond)
        if not isinstance(body.get("messages"), list):
            return respond(400, _error_body("Missing required parameter: 'messages'.",
                                            "invalid_request_error", "messages",
                                            "missing_required_parameter"))
        text, calls, finish = self._reply(body, model)
        usage = self._usage(body, model, text, calls)
        if "prefixcache" in model:  # the automatic prompt cache (tests/fakes/prompt_caches.py)
            usage["prompt_tokens_details"]["cached_tokens"] = self.prompt_cache.cached(
                self.api_key, body["messages"])
        cid = "chatcmpl-" + _hash(body)[:29]
        if not stream:
            message = {"role": "assistant", "content": text, "refusal": None,
                       "annotations": []}
            if calls:
                message["tool_calls"] = calls
            return respond(200, orjson.dumps({
                "id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": message,
                                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT}))
        start_response("200 OK", [*_SSE_HEADERS, ("x-request-id", rid)])
        return self._stream(body, model, cid, text, calls, finish, usage)

    # ---------------------------------------------------------------- chat
    @staticmethod
    def _reply(body: dict, model: str):
        """-> (text or None, tool_calls or None, finish_reason)."""
        messages = body["messages"]
        if "tool" in model:
            last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
            if last.get("role") == "tool":
                return f"Tool result: {_text_of(last.get('content'))}", None, "stop"
            calls = (_tool_calls(body, "parallel" in model) if isinstance(body.get("tools"), list)
                     and body.get("tool_choice") != "none" else [])
            if calls:
                return None, calls, "tool_calls"
        if "echo" in model:
            text = orjson.dumps(body).decode()
        elif said := re.search(r"say-([a-z]+)", model):
            text = said.group(1)
        elif "drip" in model:
            text = " ".join(f"chunk-{i}" for i in range(DRIP_CHUNKS))
        else:
            text = f"Hello from fake {model}."
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and 0 < limit < words(text):
            return " ".join(text.split()[:limit]), None, "length"
        return text, None, "stop"

    @staticmethod
    def _usage(body: dict, model: str, text, calls) -> dict:
        prompt = prompt_tokens(body["messages"])
        completion = (sum(5 + words(c["function"]["arguments"]) for c in calls)
                      if calls else words(text))
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {
                    "cached_tokens": prompt // 2 if "cached" in model else 0,
                    "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}

    def _stream(self, body, model, cid, text, calls, finish, usage):
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())
        record = {"model": model, "chunks_sent": 0, "completed": False, "closed_early": False}
        self.streams.append(record)

        def chunk(delta, finish_reason=None):
            obj = {"id": cid, "object": "chat.completion.chunk", "created": created,
                   "model": model, "service_tier": "default",
                   "system_fingerprint": SYSTEM_FINGERPRINT,
                   "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                "finish_reason": finish_reason}]}
            if include_usage:
                obj["usage"] = None
            return b"data: " + orjson.dumps(obj) + b"\n\n"

        events = []
        if calls:
            for i, call in enumerate(calls):
                head = {"index": i, "id": call["id"], "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""}}
                delta = {"tool_calls": [head]}
                if i == 0:
                    delta = {"role": "assistant", "content": None, **delta, "refusal": None}
                events.append(chunk(delta))
                args = call["function"]["arguments"]
                for j in range(0, len(args), 5):
                    events.append(chunk({"tool_calls": [
                        {"index": i, "function": {"arguments": args[j:j + 5]}}]}))
        else:
            events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
            events += [chunk({"content": piece}) for piece in re.findall(r"\s*\S+", text)]
        events.append(chunk({}, finish))
        if include_usage:
            events.append(b"data: " + orjson.dumps({
                "id": cid, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default",
                "system_fingerprint": SYSTEM_FINGERPRINT, "choices": [],
                "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        if "midstream-leak" in model:  # two chunks, then an error event echoing the key, and the end
            events = events[:2] + [b"data: " + orjson.dumps({"error": {
                "message": f"Quota exceeded for key {self.api_key.removeprefix('sk-')}.",
                "type": "server_error", "param": None, "code": None}}) + b"\n\n"]
        m = re.search(r"drip-(\d+)", model)
        delay = int(m.group(1)) / 1000 if m else 0

        bad = next((v for k, v in BAD_SSE.items() if k in model), None)

        def gen():
            try:
                for n, event in enumerate(events):
                    if "reset" in model and n == 3:  # role chunk + 2 content chunks
                        raise ConnectionResetError(104, "fake upstream reset")
                    if "stall" in model and n == 3:
                        gevent.sleep(HANG_SECONDS)
                    if bad is not None and n == 3:
                        yield bad
                    if delay and n:
                        gevent.sleep(delay)
                    yield event
                    record["chunks_sent"] += 1  # resumed => server wrote the event
                record["completed"] = True
            except GeneratorExit:
                record["closed_early"] = True
                raise

        return gen()

    # ---------------------------------------------------------------- embeddings
    @staticmethod
    def _embeddings(body: dict, respond):
        inp = body.get("input")
        if isinstance(inp, str) or (isinstance(inp, list) and inp
                                    and all(isinstance(x, int) for x in inp)):
            inp = [inp]
        if not isinstance(inp, list) or not inp:
            return respond(400, _error_body("'input' is a required property",
                                            "invalid_request_error", "input"))
        dims = body.get("dimensions") or 8
        data, total = [], 0
        for i, item in enumerate(inp):
            total += words(item) if isinstance(item, str) else len(item)
            seed = hashlib.sha256(orjson.dumps(item)).digest()
            raw = b"".join(hashlib.sha256(seed + bytes([k])).digest()
                           for k in range((dims * 2 + 31) // 32))
            vec = [int.from_bytes(raw[2 * d:2 * d + 2], "big") / 32767.5 - 1.0
                   for d in range(dims)]
            norm = sum(v * v for v in vec) ** 0.5 or 1.0
            vec = [struct.unpack("f", struct.pack("f", v / norm))[0] for v in vec]
            emb = (base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
                   if body.get("encoding_format") == "base64" else vec)
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return respond(200, orjson.dumps({
            "object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": total, "total_tokens": total}}))


def serve(fake: FakeOpenAI) -> tuple[WSGIServer, str]:
    """Start ``fake`` on an ephemeral port; returns (server, "http://127.0.0.1:PORT/v1").

    The caller stops it with ``server.stop()``.
    """
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"
