"""Fake Gemini API upstream (generativelanguage.googleapis.com, v1beta) for gateway tests.

``FakeGemini`` is a WSGI app with recorded state; ``serve_gemini(fake)`` runs it on gevent at
``http://127.0.0.1:<port>`` (the base URL Google's SDK takes).

Routes (``x-goog-api-key: <api_key>`` or ``?key=``; none -> 403 PERMISSION_DENIED, wrong -> 400
INVALID_ARGUMENT with reason API_KEY_INVALID, as Google answers):
  POST /v1beta/models/{model}:generateContent          GenerateContentResponse
  POST /v1beta/models/{model}:streamGenerateContent    ?alt=sse: one ``data:`` event per chunk
                                                       (CRLF framed); otherwise a JSON array
  POST /v1beta/models/{model}:batchEmbedContents       {"embeddings": [{"values": [...]}]}
Errors are ``{"error": {"code", "message", "status"[, "details"]}}``.

Checks Google makes and the fake repeats (400 INVALID_ARGUMENT): ``contents`` non-empty, roles
user/model, every part has exactly one data field, schema keys outside Gemini's OpenAPI subset
(``Unknown name "additionalProperties"``), and a turn of functionResponses must answer the previous
model turn's functionCalls one for one, by name.

Behaviour by model name (substrings): ``error-<status>`` (message carries LEAK_MARKER; 429 adds a
RetryInfo of 7s), ``reset`` (non-stream: connection dropped; stream: 2 chunks then dropped, never a
finishReason), ``tool`` (a functionCall to the first declared function, or the one
allowedFunctionNames names; ``parallel``: two calls; after functionResponses: "Tool result: ..."),
``thinking`` (a thought part and a thoughtSignature on calls), ``cached`` (cachedContentTokenCount
= prompt // 2), ``safety`` (finishReason SAFETY), ``echo`` (the reply is the received body), else
"Hello from fake gemini <model>." ``maxOutputTokens`` below the reply's word count truncates it
with MAX_TOKENS. Tokens: prompt = 3 per content + words of its text; output = reply words (5 per
call plus words of its args).
"""
from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs

import gevent
import orjson
from gevent.pywsgi import WSGIServer

LEAK_MARKER = "AIzaSyLEAKLEAKLEAKLEAKLEAKLEAKLEAK00000"
SCHEMA_FIELDS = frozenset({"type", "format", "title", "description", "nullable", "enum", "maxItems",
                           "minItems", "properties", "required", "minProperties", "maxProperties",
                           "minLength", "maxLength", "pattern", "example", "anyOf", "propertyOrdering",
                           "default", "items", "minimum", "maximum"})
PART_FIELDS = ("text", "inlineData", "inline_data", "fileData", "file_data", "functionCall",
               "function_call", "functionResponse", "function_response")
STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED",
          500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
ROUTE = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent|batchEmbedContents)$")


def words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


def _error(code: int, message: str, details: list | None = None) -> bytes:
    err = {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}
    if details:
        err["details"] = details
    return orjson.dumps({"error": err}, option=orjson.OPT_INDENT_2)


class BadRequest(Exception):
    pass


def _check_schema(schema, where: str) -> None:
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        if key not in SCHEMA_FIELDS:
            raise BadRequest(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': '
                             "Cannot find field.")
        if key == "properties":
            for name, sub in value.items():
                _check_schema(sub, f"{where}.properties[{name}].value")
        elif key == "items":
            _check_schema(value, f"{where}.items")


def _check(body: dict) -> None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise BadRequest("* GenerateContentRequest.contents: contents is not specified")
    previous = None
    for i, content in enumerate(contents):
        if content.get("role", "user") not in ("user", "model"):
            raise BadRequest("Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be "
                             "empty.")
        for j, part in enumerate(parts):
            if sum(1 for f in PART_FIELDS if f in part) != 1:
                raise BadRequest(f"* GenerateContentRequest.contents[{i}].parts[{j}].data: required oneof "
                                 "field 'data' must have one initialized field")
        answers = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
        if answers:
            asked = [p["functionCall"]["name"] for p in (previous or {}).get("parts", [])
                     if "functionCall" in p]
            if sorted(asked) != sorted(answers):
                raise BadRequest("Please ensure that the number of function response parts is equal to the "
                                 "number of function call parts of the function call turn.")
        previous = content
    for i, tool in enumerate(body.get("tools") or []):
        for j, decl in enumerate(tool.get("functionDeclarations") or []):
            _check_schema(decl.get("parameters"), f"tools[{i}].function_declarations[{j}].parameters")
    schema = (body.get("generationConfig") or {}).get("responseSchema")
    _check_schema(schema, "generation_config.response_schema")


def _text(content: dict) -> str:
    return " ".join(p["text"] for p in content.get("parts", []) if isinstance(p.get("text"), str))


def prompt_tokens(body: dict) -> int:
    total = sum(3 + words(_text(c)) for c in body.get("contents", []))
    return total + words(_text(body.get("systemInstruction") or {}))


def _arg(schema: dict, alt: bool):
    if schema.get("enum"):
        return schema["enum"][0]
    return {"INTEGER": 42, "NUMBER": 1.5, "BOOLEAN": True, "ARRAY": [], "OBJECT": {}}.get(
        str(schema.get("type", "")).upper(), "London" if alt else "Paris")


class FakeGemini:
    def __init__(self, api_key: str = "gemini-upstream-test"):
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        # requests: {"path", "query", "headers" (lowercased), "body"}
        self.requests: list[dict] = []
        self.streams: list[dict] = []  # {"model", "chunks": [the chunk objects sent], "completed"}

    def wsgi(self, environ, start_response):
        path, query = environ.get("PATH_INFO", ""), parse_qs(environ.get("QUERY_STRING", ""))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        raw = environ["wsgi.input"].read() if environ["REQUEST_METHOD"] == "POST" else b""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append({"path": path, "query": query, "headers": headers, "body": body})

        def respond(status: int, payload: bytes, content_type="application/json; charset=UTF-8"):
            start_response(f"{status} {'OK' if status == 200 else STATUS.get(status, 'Error')}",
                           [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
            return [payload]

        match = ROUTE.match(path)
        if environ["REQUEST_METHOD"] != "POST" or not match:
            return respond(404, _error(404, f"Method not found: {path}"))
        key = headers.get("x-goog-api-key") or (query.get("key") or [""])[0]
        if not key:
            return respond(403, _error(403, "Method doesn't allow unregistered callers (callers without "
                                            "established identity). Please use API Key or other form of API "
                                            "consumer identity to call this API."))
        if key != self.api_key:
            return respond(400, _error(400, "API key not valid. Please pass a valid API key.", [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]))
        if not isinstance(body, dict):
            return respond(400, _error(400, "Invalid JSON payload received. Unexpected token."))
        model, method = match.groups()
        if m := re.search(r"error-(\d{3})", model):
            code = int(m.group(1))
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
            details = [retry] if code == 429 else None
            return respond(code, _error(code, f"Upstream failure for key {LEAK_MARKER}.", details))
        if method == "batchEmbedContents":
            return respond(200, self._embeddings(body))
        try:
            _check(body)
        except BadRequest as e:
            return respond(400, _error(400, str(e)))
        stream = method == "streamGenerateContent"
        if "reset" in model and not stream:
            raise ConnectionResetError(104, "fake upstream reset")
        chunks = self._chunks(body, model)
        if not stream:
            return respond(200, orjson.dumps(self._merge(chunks), option=orjson.OPT_INDENT_2))
        if query.get("alt") != ["sse"]:
            return respond(200, orjson.dumps(chunks, option=orjson.OPT_INDENT_2))
        start_response("200 OK", [("Content-Type", "text/event-stream"),
                                  ("Content-Disposition", "attachment")])
        return self._sse(model, chunks)

    # ---------------------------------------------------------------- generation
    def _reply(self, body: dict, model: str):
        """-> (text or None, calls [{"name", "args"}], finishReason)."""
        last = body["contents"][-1]
        answers = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
        if "tool" in model and answers:
            outputs = [str((a.get("response") or {}).get("output")) for a in answers]
            return "Tool result: " + "; ".join(outputs), [], "STOP"
        decls = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {})
        if "tool" in model and decls and mode.get("mode") != "NONE":
            allowed = mode.get("allowedFunctionNames")
            decls = [d for d in decls if not allowed or d["name"] in allowed] or decls
            picks = [decls[0]] + ([decls[1] if len(decls) > 1 else decls[0]] if "parallel" in model else [])
            calls = []
            for i, d in enumerate(picks):
                props = (d.get("parameters") or {}).get("properties") or {}
                calls.append({"name": d["name"], "args": {k: _arg(v, i == 1) for k, v in props.items()}})
            return None, calls, "STOP"
        text = orjson.dumps(body).decode() if "echo" in model else f"Hello from fake gemini {model}."
        limit = (body.get("generationConfig") or {}).get("maxOutputTokens")
        if isinstance(limit, int) and 0 < limit < words(text):
            return " ".join(text.split()[:limit]), [], "MAX_TOKENS"
        return text, [], "SAFETY" if "safety" in model else "STOP"

    def _chunks(self, body: dict, model: str) -> list[dict]:
        """The response as the stream of GenerateContentResponse chunks Google would send."""
        text, calls, finish = self._reply(body, model)
        prompt = prompt_tokens(body)
        response_id = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:22]
        thoughts = 7 if "thinking" in model else 0
        chunks, produced = [], 0

        def chunk(parts, finish_reason=None):
            usage = {"promptTokenCount": prompt, "candidatesTokenCount": produced,
                     "totalTokenCount": prompt + produced + thoughts,
                     "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}]}
            if thoughts:
                usage["thoughtsTokenCount"] = thoughts
            if "cached" in model:
                usage["cachedContentTokenCount"] = prompt // 2
            candidate = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish_reason:
                candidate["finishReason"] = finish_reason
            chunks.append({"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                           "responseId": response_id})

        if thoughts:
            chunk([{"text": "Let me think about this.", "thought": True}])
        if calls:
            parts = []
            for i, call in enumerate(calls):
                produced += 5 + words(orjson.dumps(call["args"]).decode())
                part = {"functionCall": call}
                if thoughts and i == 0:
                    part["thoughtSignature"] = "c2lnbmF0dXJlLW9mLXRoZS10aG91Z2h0"
                parts.append(part)
            chunk(parts, finish)
            return chunks
        pieces = re.findall(r"\s*\S+", text)
        for n in range(0, len(pieces), 2):  # two words per chunk, the last one carries finishReason
            produced += len(pieces[n:n + 2])
            chunk([{"text": "".join(pieces[n:n + 2])}], finish if n + 2 >= len(pieces) else None)
        return chunks

    @staticmethod
    def _merge(chunks: list[dict]) -> dict:
        """The non-streamed response: the chunks' parts joined, the last chunk's finish and usage."""
        parts: list[dict] = []
        for c in chunks:
            for p in c["candidates"][0]["content"]["parts"]:
                prev = parts[-1] if parts else {}
                if "text" in p and "text" in prev and p.get("thought") == prev.get("thought"):
                    parts[-1] = {**prev, "text": prev["text"] + p["text"]}
                else:
                    parts.append(p)
        last = chunks[-1]
        candidate = {**last["candidates"][0], "content": {"parts": parts, "role": "model"}}
        return {**last, "candidates": [candidate]}

    def _sse(self, model: str, chunks: list[dict]):
        record = {"model": model, "chunks": [], "completed": False}
        self.streams.append(record)

        def gen():
            for n, c in enumerate(chunks):
                if "reset" in model and n == 2:
                    raise ConnectionResetError(104, "fake upstream reset")
                yield b"data: " + orjson.dumps(c) + b"\r\n\r\n"
                record["chunks"].append(c)
                gevent.sleep(0)
            record["completed"] = True

        return gen()

    # ---------------------------------------------------------------- embeddings
    @staticmethod
    def _embeddings(body: dict) -> bytes:
        out = []
        for item in body.get("requests") or []:
            text = " ".join(p.get("text", "") for p in item["content"]["parts"])
            dims = item.get("outputDimensionality") or 8
            seed = hashlib.sha256(text.encode()).digest()
            out.append({"values": [round(seed[d % 32] / 255 - 0.5, 6) for d in range(dims)]})
        return orjson.dumps({"embeddings": out})


def serve_gemini(fake: FakeGemini) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
