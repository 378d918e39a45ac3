"""Fake OpenAI Files + Batches API upstream (OpenAI's published shapes) for gateway tests.

``FakeOpenAIBatches`` is a WSGI app; ``serve(fake)`` runs it at ``http://127.0.0.1:<port>/v1``.
Routes (all require ``Authorization: Bearer <api_key>``, else 401 ``invalid_api_key``):
  POST /v1/files                 multipart: ``purpose`` (``batch``) and ``file`` (JSONL) -> File object
  GET  /v1/files/{id}            File object
  GET  /v1/files/{id}/content    the file's bytes (input, output or error JSONL)
  POST /v1/batches               {input_file_id, endpoint, completion_window, metadata} -> Batch (validating)
  GET  /v1/batches/{id}          Batch; each retrieval moves it one step on (unless ``hold`` is set):
                                 validating -> in_progress -> finalizing -> completed (or expired);
                                 cancelling -> cancelled
  GET  /v1/batches               list, newest first, paginated as OpenAI's: ``limit`` (1-100, default
                                 20), ``after`` (a batch id: the page after it); ``has_more``,
                                 ``first_id``, ``last_id``. Each batch carries its ``metadata``.
  POST /v1/batches/{id}/cancel   Batch (cancelling)
Unknown file or batch -> 404 in OpenAI's error shape.

Line behaviour, from the line's ``body.model`` (as FakeOpenAI's chat fake: ``Hello from fake <model>.``,
usage counted the same way):
  error-<status>  the request fails: error file line with ``response.status_code`` <status>
  batch-expire    the batch ends ``expired``: these lines are in the error file (``batch_expired``)
  batch-invalid   validation fails: the batch goes ``failed`` with ``errors.data`` naming the line
Batch behaviour, from the fake's attributes:
  hold = True         retrievals do not move batches on (a batch stays in_progress)
  fail_create = N     POST /v1/batches answers status N with an OpenAI error
  malformed = True    output files are not JSONL
  fail_poll = N       GET /v1/batches/{id} answers status N (a provider down for a while)
  garbage = True      output files also hold a line that is not JSON, a line of the wrong shape, a
                      result for a custom_id nobody sent, and the first result's usage is wrong-typed
  reset_downloads = N the next N file downloads break off mid-body (the connection reset)
  stall_create = ev   POST /v1/batches creates the batch, then answers only once the event is set
On cancel, a batch that was in progress has its first line done and the rest ``batch_cancelled``.
"""
from __future__ import annotations

import hashlib
import itertools
import re
import time
from urllib.parse import parse_qs

import orjson
from gevent.pywsgi import WSGIServer
from werkzeug.formparser import parse_form_data

from tests.fakes.openai_upstream import FakeOpenAI, _error_body

_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}{hashlib.sha256(str(next(_ids)).encode()).hexdigest()[:24]}"


class FakeOpenAIBatches:
    def __init__(self, api_key: str = "sk-upstream-batch"):
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.requests: list[dict] = []  # {"method", "path", "query"}
        self.hold = False
        self.fail_create: int | None = None
        self.malformed = False
        self.fail_poll: int | None = None
        self.garbage = False
        self.reset_downloads = 0
        self.stall_create = None

    # ---------------------------------------------------------------- WSGI
    def wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        self.requests.append({"method": method, "path": path, "query": environ.get("QUERY_STRING", "")})

        def respond(status: int, payload: bytes, content_type: str = "application/json"):
            start_response(f"{status} {'OK' if status < 400 else 'Error'}",
                           [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
            return [payload]

        if environ.get("HTTP_AUTHORIZATION", "") != f"Bearer {self.api_key}":
            return respond(401, _error_body("Incorrect API key provided.", "invalid_request_error",
                                            code="invalid_api_key"))
        if method == "POST" and path == "/v1/files":
            _, form, files = parse_form_data(environ)
            upload = files.get("file")
            if form.get("purpose") != "batch" or upload is None:
                return respond(400, _error_body("'purpose' must be 'batch' with a 'file'.", "invalid_request_error"))
            content = upload.read()
            return respond(200, orjson.dumps(self._file(content, upload.filename or "input.jsonl", "batch")))
        if m := re.fullmatch(r"/v1/files/([^/]+)(/content)?", path):
            f = self.files.get(m.group(1))
            if f is None:
                return respond(404, _error_body(f"No such File object: {m.group(1)}", "invalid_request_error"))
            if m.group(2):
                if self.reset_downloads:
                    self.reset_downloads -= 1
                    return self._cut(start_response, f["content"])
                return respond(200, f["content"], "application/octet-stream")
            return respond(200, orjson.dumps(f["object"]))
        if method == "POST" and path == "/v1/batches":
            body = orjson.loads(environ["wsgi.input"].read() or b"{}")
            if self.fail_create:
                return respond(self.fail_create, _error_body("The server had an error processing your request.",
                                                             "server_error"))
            if body.get("input_file_id") not in self.files:
                return respond(400, _error_body("Invalid 'input_file_id'.", "invalid_request_error"))
            batch = {"id": _id("batch_"), "object": "batch", "endpoint": body["endpoint"], "errors": None,
                     "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                     "status": "validating", "output_file_id": None, "error_file_id": None,
                     "created_at": int(time.time()), "in_progress_at": None,
                     "expires_at": int(time.time()) + 86400, "finalizing_at": None, "completed_at": None,
                     "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
                     "request_counts": {"total": 0, "completed": 0, "failed": 0},
                     "metadata": body.get("metadata")}
            lines = [orjson.loads(x) for x in self.files[body["input_file_id"]]["content"].splitlines() if x.strip()]
            batch["request_counts"]["total"] = len(lines)
            self.batches[batch["id"]] = {"object": batch, "lines": lines, "done": 0}
            if self.stall_create is not None:  # created, but the answer is late (the caller may be gone)
                self.stall_create.wait(120)
            return respond(200, orjson.dumps(batch))
        if method == "GET" and path == "/v1/batches":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                limit = int(query.get("limit", ["20"])[0])
            except ValueError:
                limit = 0
            if not 1 <= limit <= 100:
                return respond(400, _error_body("'limit' must be between 1 and 100.", "invalid_request_error"))
            data = [b["object"] for b in reversed(self.batches.values())]
            if after := query.get("after", [None])[0]:
                ids = [b["id"] for b in data]
                if after not in ids:
                    return respond(400, _error_body(f"No batch found with id '{after}'.", "invalid_request_error"))
                data = data[ids.index(after) + 1:]
            page = data[:limit]
            return respond(200, orjson.dumps({"object": "list", "data": page, "has_more": len(data) > limit,
                                              "first_id": page[0]["id"] if page else None,
                                              "last_id": page[-1]["id"] if page else None}))
        if m := re.fullmatch(r"/v1/batches/([^/]+)(/cancel)?", path):
            b = self.batches.get(m.group(1))
            if b is None:
                return respond(404, _error_body(f"No batch found with id '{m.group(1)}'.", "invalid_request_error"))
            if m.group(2):
                if method != "POST":
                    return respond(405, _error_body("Method not allowed", "invalid_request_error"))
                obj = b["object"]
                if obj["status"] in ("validating", "in_progress", "finalizing"):
                    b["done"] = 1 if obj["status"] != "validating" else 0
                    obj["status"], obj["cancelling_at"] = "cancelling", int(time.time())
                return respond(200, orjson.dumps(obj))
            if self.fail_poll:
                return respond(self.fail_poll, _error_body("The server is overloaded.", "server_error"))
            if not self.hold:
                self._step(b)
            return respond(200, orjson.dumps(b["object"]))
        return respond(404, _error_body(f"Invalid URL ({method} {path})", "invalid_request_error"))

    @staticmethod
    def _cut(start_response, content: bytes):
        """Headers for the whole body, half of it, then the connection reset."""
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(content)))])

        def body():
            yield content[: len(content) // 2]
            raise ConnectionResetError(104, "fake upstream reset")
        return body()

    # ---------------------------------------------------------------- state
    def _file(self, content: bytes, filename: str, purpose: str) -> dict:
        obj = {"id": _id("file-"), "object": "file", "bytes": len(content), "created_at": int(time.time()),
               "expires_at": None, "filename": filename, "purpose": purpose, "status": "processed",
               "status_details": None}
        self.files[obj["id"]] = {"object": obj, "content": content}
        return obj

    def _step(self, b: dict) -> None:
        obj, now = b["object"], int(time.time())
        status = obj["status"]
        if status == "validating":
            bad = [i for i, line in enumerate(b["lines"], start=1)
                   if "batch-invalid" in str(line.get("body", {}).get("model"))]
            if bad:
                obj["status"], obj["failed_at"] = "failed", now
                obj["errors"] = {"object": "list", "data": [{"code": "invalid_request", "line": bad[0],
                                                             "param": "body.model",
                                                             "message": "This model is not available for batch."}]}
                return
            obj["status"], obj["in_progress_at"] = "in_progress", now
        elif status == "in_progress":
            obj["status"], obj["finalizing_at"] = "finalizing", now
        elif status == "finalizing":
            expire = any("batch-expire" in str(line.get("body", {}).get("model")) for line in b["lines"])
            self._finish(b, "expired" if expire else "completed", len(b["lines"]))
        elif status == "cancelling":
            self._finish(b, "cancelled", b["done"])

    def _finish(self, b: dict, status: str, done: int) -> None:
        obj, now = b["object"], int(time.time())
        out, err = [], []
        for i, line in enumerate(b["lines"]):
            body = line.get("body") or {}
            model = str(body.get("model"))
            rid = _id("batch_req_")
            if i >= done or (status == "expired" and "batch-expire" in model):
                code = "batch_cancelled" if status == "cancelled" else "batch_expired"
                err.append({"id": rid, "custom_id": line["custom_id"], "response": None,
                            "error": {"code": code, "message": "This request could not be executed before the "
                                      "completion window expired." if code == "batch_expired"
                                      else "This request was cancelled."}})
                continue
            if m := re.search(r"error-(\d{3})", model):
                err.append({"id": rid, "custom_id": line["custom_id"], "response": {
                    "status_code": int(m.group(1)), "request_id": _id("req_"),
                    "body": orjson.loads(_error_body(f"Upstream refused ({m.group(1)}).", "invalid_request_error"))},
                    "error": None})
                continue
            text, calls, finish = FakeOpenAI._reply(body, model)
            usage = FakeOpenAI._usage(body, model, text, calls)
            out.append({"id": rid, "custom_id": line["custom_id"], "response": {
                "status_code": 200, "request_id": _id("req_"), "body": {
                    "id": _id("chatcmpl-"), "object": "chat.completion", "created": now, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                         "annotations": []},
                                 "logprobs": None, "finish_reason": finish}],
                    "usage": usage, "service_tier": "default", "system_fingerprint": "fp_fake"}},
                "error": None})
        def encode(rows):
            return (b"".join(orjson.dumps(r) + b"\n" for r in rows))
        if out and self.garbage:
            out[0]["response"]["body"]["usage"] = {"prompt_tokens": "many", "completion_tokens": [1]}
            out += [{"id": _id("batch_req_"), "custom_id": "nobody-sent-this", "response": out[0]["response"],
                     "error": None}, {"custom_id": 5, "response": None, "error": None}]
        if out:
            content = b"{not json\n" if self.malformed else encode(out)
            if self.garbage:
                content = b"{not json at all\n" + content
            obj["output_file_id"] = self._file(content, "batch_output.jsonl", "batch_output")["id"]
        if err:
            obj["error_file_id"] = self._file(encode(err), "batch_errors.jsonl", "batch_output")["id"]
        obj["request_counts"] = {"total": len(b["lines"]), "completed": len(out), "failed": len(err)}
        obj["status"] = status
        obj[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[status]] = now


def serve(fake: FakeOpenAIBatches) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"
