"""Fake Amazon Bedrock runtime (Converse, ConverseStream, InvokeModel for Titan embeddings).

``FakeBedrock`` is a WSGI app with recorded state; ``serve_bedrock(fake)`` runs it on gevent at
``http://127.0.0.1:<port>``.

Auth, as AWS checks it: ``Authorization: Bearer <api_key>`` (a Bedrock API key), or SigV4. A SigV4
request is VERIFIED: the fake rebuilds the canonical request from what it received (raw path,
query, the headers named in SignedHeaders, the body bytes) and recomputes the signature with
botocore for its own credentials, region and service "bedrock". Unknown key id -> 403
UnrecognizedClientException; wrong scope, stale date or signature mismatch -> 403
InvalidSignatureException ("The request signature we calculated does not match ..."); a missing
session token when the credentials have one -> 403.

Routes: POST /model/{modelId}/converse (JSON), /converse-stream (application/vnd.amazon.eventstream:
binary frames with prelude, string headers and CRC32s, encoded here since botocore only decodes),
/invoke (Titan: {"inputText"} -> {"embedding", "inputTextTokenCount"}). Errors are {"message"} with
the ``x-amzn-ErrorType`` header.

Validation (400 ValidationException): messages non-empty, starting with user and alternating, each
content block one member, no blank text, toolUse/toolResult only with a toolConfig, every
toolResult answering a toolUse of the previous assistant turn.

Behaviour by model id (substrings): ``error-<status>`` (a Bedrock error of that status; the message
carries LEAK_MARKER), ``reset`` (stream cut after 3 frames, before messageStop; non-stream: dropped),
``throttled`` (stream: a throttlingException frame after the first text delta), ``tool`` (a toolUse
of the first tool, or the toolChoice-named one; ``parallel``: two; after toolResults: "Tool result:
..."), ``cached`` (cacheReadInputTokens = half the prompt, cacheWriteInputTokens 3), ``guardrail``
(stopReason guardrail_intervened), ``thinking`` (a reasoningContent block first), else "Hello from
fake bedrock <model>." ``inferenceConfig.maxTokens`` below the reply's words truncates (max_tokens).
Tokens: input = 3 per message + words of its text (cached ones excluded, as Bedrock reports).
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import struct
import uuid
import zlib
from urllib.parse import quote, unquote

import gevent
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from gevent.pywsgi import WSGIHandler, WSGIServer

LEAK_MARKER = "AKIAFAKELEAKLEAK0000"
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check "
                      "your AWS Secret Access Key and signing method. Consult the service documentation for "
                      "details.")
ERRORS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
          424: "ModelErrorException", 429: "ThrottlingException", 500: "InternalServerException",
          503: "ServiceUnavailableException"}
ROUTE = re.compile(r"^/model/([^/]+)/(converse|converse-stream|invoke)$")
AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                  r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})$")


def words(text) -> int:
    return len(text.split()) if isinstance(text, str) else 0


# ---- AWS event-stream framing ------------------------------------------------------------------------

def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack("B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v  # type 7: string


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total, headers length, CRC), headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 16 + len(head) + len(payload), len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, payload: dict) -> bytes:
    payload = {**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGH"[: 5 + len(name)]}  # AWS's length padding
    return frame({":event-type": name, ":content-type": "application/json", ":message-type": "event"},
                 orjson.dumps(payload))


def exception(name: str, message: str) -> bytes:
    return frame({":exception-type": name, ":content-type": "application/json", ":message-type": "exception"},
                 orjson.dumps({"message": message}))


class BadRequest(Exception):
    pass


def _check(body: dict) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("Malformed input request: messages: at least one message is required")
    tools = bool((body.get("toolConfig") or {}).get("tools"))
    asked: set[str] = set()
    for i, m in enumerate(messages):
        if m.get("role") != ("user" if i % 2 == 0 else "assistant"):
            raise BadRequest("A conversation must alternate between user and assistant roles. Make sure the "
                             "conversation alternates between user and assistant roles and try again.")
        answered = set()
        for block in m.get("content") or []:
            if len(block) != 1:
                raise BadRequest(f"ContentBlock object at messages.{i}.content must set one of the following "
                                 "keys: text, image, toolUse, toolResult, document, reasoningContent.")
            if "text" in block and not block["text"].strip():
                raise BadRequest(f"The text field in the ContentBlock object at messages.{i}.content is "
                                 "blank. Add text to the text field, and try again.")
            if ("toolUse" in block or "toolResult" in block) and not tools:
                raise BadRequest("The toolConfig field must be defined when using toolUse and toolResult "
                                 "content blocks.")
            if "toolResult" in block:
                answered.add(block["toolResult"]["toolUseId"])
        if answered - asked:
            raise BadRequest(f"The number of toolResult blocks at messages.{i}.content exceeds the number of "
                             "toolUse blocks of previous turn.")
        asked = {b["toolUse"]["toolUseId"] for b in m.get("content") or [] if "toolUse" in b}


def _text(m: dict) -> str:
    return " ".join(b["text"] for b in m.get("content") or [] if isinstance(b.get("text"), str))


def _arg(schema: dict, alt: bool):
    if schema.get("enum"):
        return schema["enum"][0]
    return {"integer": 42, "number": 1.5, "boolean": True, "array": [], "object": {}}.get(
        schema.get("type"), "London" if alt else "Paris")


class _RawPathHandler(WSGIHandler):
    """Keeps the request line's path as sent (still percent-encoded): SigV4 signs that, not PATH_INFO."""

    def get_environ(self):
        env = super().get_environ()
        env["RAW_PATH"] = self.path.split("?", 1)[0]
        return env


class FakeBedrock:
    def __init__(self, access_key="AKIDFAKEBEDROCK00001",
                 secret_key="fake/secret+KEY0000000000000000000000000", session_token: str | None = None,
                 region="eu-central-1", api_key="bedrock-api-key-test"):
        self.creds = Credentials(access_key, secret_key, session_token)
        self.region, self.api_key = region, api_key
        self.reset()

    def reset(self) -> None:
        # requests: {"path", "raw_path", "headers" (lowercased), "body", "auth": "sigv4"|"bearer"|None}
        self.requests: list[dict] = []
        self.streams: list[dict] = []  # {"model", "frames": [(event name, payload)], "completed"}

    # ---------------------------------------------------------------- auth
    def _verify(self, environ, headers: dict, raw: bytes) -> tuple[str | None, str | None]:
        """(auth kind, None) when the request is authentic, else (None, the AWS error type)."""
        auth = headers.get("authorization", "")
        if auth == f"Bearer {self.api_key}":
            return "bearer", None
        m = AUTH.match(auth)
        if not m:
            return None, "UnrecognizedClientException" if auth else "MissingAuthenticationTokenException"
        key_id, day, region, service, signed, signature = m.groups()
        if key_id != self.creds.access_key:
            return None, "UnrecognizedClientException"
        stamp = headers.get("x-amz-date", "")
        if region != self.region or service != "bedrock" or not stamp.startswith(day) or "host" not in signed:
            return None, "InvalidSignatureException"
        when = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
        if abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) > 300:
            return None, "InvalidSignatureException"
        if self.creds.token and headers.get("x-amz-security-token") != self.creds.token:
            return None, "UnrecognizedClientException"
        query = environ.get("QUERY_STRING", "")
        url = f"http://{headers.get('host', '')}{environ['RAW_PATH']}" + (f"?{query}" if query else "")
        request = AWSRequest(method=environ["REQUEST_METHOD"], url=url, data=raw,
                             headers={name: headers.get(name, "") for name in signed.split(";")})
        request.context["timestamp"] = stamp
        signer = SigV4Auth(self.creds, "bedrock", self.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)),
                                    request)
        if not hmac.compare_digest(expected, signature):
            return None, "InvalidSignatureException"
        return "sigv4", None

    # ---------------------------------------------------------------- WSGI
    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        raw = environ["wsgi.input"].read() if environ["REQUEST_METHOD"] == "POST" else b""
        request_id = str(uuid.uuid4())

        def respond(status: int, payload: dict, error: str | None = None):
            body = orjson.dumps(payload)
            extra = [("x-amzn-ErrorType", f"{error}:http://internal.amazon.com/coral/com.amazon.bedrock/")] \
                if error else []
            start_response(f"{status} {'OK' if status == 200 else error}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("x-amzn-RequestId", request_id), *extra])
            return [body]

        kind, failure = self._verify(environ, headers, raw)
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append({"path": path, "raw_path": environ.get("RAW_PATH"), "headers": headers,
                              "body": body, "auth": kind})
        if failure:
            message = SIGNATURE_MISMATCH if failure == "InvalidSignatureException" else \
                "The security token included in the request is invalid."
            return respond(403, {"message": message}, failure)
        match = ROUTE.match(environ.get("RAW_PATH", ""))
        if environ["REQUEST_METHOD"] != "POST" or not match:
            return respond(404, {"message": "Not Found"}, "UnknownOperationException")
        model, action = unquote(match.group(1)), match.group(2)
        if quote(model, safe="") != match.group(1):
            return respond(400, {"message": "The model identifier is not URL-encoded."},
                           "ValidationException")
        if not isinstance(body, dict):
            return respond(400, {"message": "Malformed input request, please reformat your input and try "
                                            "again."}, "ValidationException")
        if m := re.search(r"error-(\d{3})", model):
            code = int(m.group(1))
            return respond(code, {"message": f"Failure while serving (key {LEAK_MARKER})."},
                           ERRORS.get(code, "InternalServerException"))
        if action == "invoke":
            return respond(200, self._titan(body))
        try:
            _check(body)
        except BadRequest as e:
            return respond(400, {"message": str(e)}, "ValidationException")
        if "reset" in model and action == "converse":
            raise ConnectionResetError(104, "fake upstream reset")
        blocks, stop, usage = self._reply(body, model)
        if action == "converse":
            return respond(200, {"output": {"message": {"role": "assistant", "content": blocks}},
                                 "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 123}})
        start_response("200 OK", [("Content-Type", "application/vnd.amazon.eventstream"),
                                  ("x-amzn-RequestId", request_id)])
        return self._stream(model, blocks, stop, usage)

    # ---------------------------------------------------------------- generation
    def _reply(self, body: dict, model: str):
        """-> (content blocks, stopReason, usage)."""
        messages = body["messages"]
        prompt = sum(3 + words(_text(m)) for m in messages)
        prompt += sum(words(s.get("text")) for s in body.get("system", []))
        results = [b["toolResult"] for b in messages[-1]["content"] if "toolResult" in b]
        tools = [t["toolSpec"] for t in (body.get("toolConfig") or {}).get("tools", []) if "toolSpec" in t]
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
        blocks: list[dict] = []
        if "thinking" in model:
            thought = {"text": "Let me think.", "signature": "sig-1"}
            blocks.append({"reasoningContent": {"reasoningText": thought}})
        if "tool" in model and results:
            text = "Tool result: " + "; ".join(c.get("text", "") for r in results for c in r["content"])
            blocks.append({"text": text})
            stop = "end_turn"
        elif "tool" in model and tools:
            named = [t for t in tools if t["name"] == (choice.get("tool") or {}).get("name")] or tools
            picks = [named[0]] + ([tools[1] if len(tools) > 1 else tools[0]] if "parallel" in model else [])
            for i, spec in enumerate(picks):
                props = (spec["inputSchema"]["json"].get("properties") or {})
                use_id = "tooluse_" + hashlib.sha256(f"{model}{i}".encode()).hexdigest()[:22]
                args = {k: _arg(v, i == 1) for k, v in props.items()}
                blocks.append({"toolUse": {"toolUseId": use_id, "name": spec["name"], "input": args}})
            stop = "tool_use"
        else:
            text = f"Hello from fake bedrock {model}."
            limit = (body.get("inferenceConfig") or {}).get("maxTokens")
            stop = "guardrail_intervened" if "guardrail" in model else "end_turn"
            if isinstance(limit, int) and 0 < limit < words(text):
                text, stop = " ".join(text.split()[:limit]), "max_tokens"
            blocks.append({"text": text})
        output = sum(words(b.get("text")) + (5 + words(orjson.dumps(b["toolUse"]["input"]).decode())
                                             if "toolUse" in b else 0) for b in blocks)
        read, write = (prompt // 2, 3) if "cached" in model else (0, 0)
        usage = {"inputTokens": prompt - read - write, "outputTokens": output,
                 "totalTokens": prompt + output}
        if "cached" in model:
            usage.update(cacheReadInputTokens=read, cacheWriteInputTokens=write)
        return blocks, stop, usage

    def _stream(self, model: str, blocks: list[dict], stop: str, usage: dict):
        frames: list[tuple[str, dict]] = [("messageStart", {"role": "assistant"})]
        for i, block in enumerate(blocks):
            if "toolUse" in block:
                use = block["toolUse"]
                frames.append(("contentBlockStart", {"contentBlockIndex": i, "start": {
                    "toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                args = orjson.dumps(use["input"]).decode()
                frames += [("contentBlockDelta", {"contentBlockIndex": i,
                                                  "delta": {"toolUse": {"input": args[j:j + 7]}}})
                           for j in range(0, len(args), 7)]
            elif "reasoningContent" in block:
                text = block["reasoningContent"]["reasoningText"]
                frames.append(("contentBlockDelta", {"contentBlockIndex": i,
                                                     "delta": {"reasoningContent": {"text": text["text"]}}}))
                frames.append(("contentBlockDelta", {"contentBlockIndex": i, "delta": {
                    "reasoningContent": {"signature": text["signature"]}}}))
            else:
                frames += [("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": piece}})
                           for piece in re.findall(r"\s*\S+", block["text"])]
            frames.append(("contentBlockStop", {"contentBlockIndex": i}))
        frames.append(("messageStop", {"stopReason": stop}))
        frames.append(("metadata", {"usage": usage, "metrics": {"latencyMs": 321}}))
        record = {"model": model, "frames": [], "completed": False}
        self.streams.append(record)

        def gen():
            for n, (name, payload) in enumerate(frames):
                if "reset" in model and n == 3:
                    raise ConnectionResetError(104, "fake upstream reset")
                if "throttled" in model and n == 2:
                    yield exception("throttlingException", f"Too many tokens, please wait ({LEAK_MARKER}).")
                    record["completed"] = True
                    return
                yield event(name, payload)
                record["frames"].append((name, payload))
                gevent.sleep(0)
            record["completed"] = True

        return gen()

    # ---------------------------------------------------------------- embeddings
    @staticmethod
    def _titan(body: dict) -> dict:
        text = body.get("inputText") or ""
        seed = hashlib.sha256(text.encode()).digest()
        dims = body.get("dimensions") or 8
        return {"embedding": [round(seed[d % 32] / 255 - 0.5, 6) for d in range(dims)],
                "embeddingsByType": {}, "inputTextTokenCount": words(text)}


def serve_bedrock(fake: FakeBedrock) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None, handler_class=_RawPathHandler)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
