"""Fake Anthropic Message Batches API upstream (Anthropic's published shapes) for gateway tests.

``FakeAnthropicBatches`` is a WSGI app; ``serve(fake)`` runs it at ``http://127.0.0.1:<port>``.
Routes (all require ``x-api-key: <api_key>`` and ``anthropic-version``):
  POST /v1/messages/batches                 {requests: [{custom_id, params}]} -> MessageBatch (in_progress)
  GET  /v1/messages/batches/{id}            MessageBatch; each retrieval moves it on (unless ``hold``):
                                            in_progress -> ended; canceling -> ended
  GET  /v1/messages/batches/{id}/results    JSONL: {custom_id, result: {type: succeeded, message} |
                                            {type: errored, error} | {type: canceled} | {type: expired}}
  POST /v1/messages/batches/{id}/cancel     MessageBatch (canceling)
  GET  /v1/messages/batches                 {data, has_more, first_id, last_id}
Errors: ``{"type": "error", "error": {"type", "message"}}``.

Per request, from ``params.model`` (messages as FakeAnthropic answers them): ``error-<status>`` ->
errored; ``batch-expire`` -> expired. On cancel, the first request has finished, the rest are canceled.
Fake attributes: ``hold`` (no progress), ``fail_create`` (status for create), ``malformed`` (results
are not JSONL), ``stall_create`` (an event: create stores the batch, then answers once it is set).
"""
from __future__ import annotations

import hashlib
import itertools
import re
from datetime import UTC, datetime, timedelta

import orjson
from gevent.pywsgi import WSGIServer

from tests.fakes.anthropic_upstream import FakeAnthropic, _error

_ids = itertools.count(1)


def _now(delta: timedelta = timedelta()) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


class FakeAnthropicBatches:
    def __init__(self, api_key: str = "sk-ant-upstream-batch"):
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.batches: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.hold = False
        self.fail_create: int | None = None
        self.malformed = False
        self.stall_create = None

    def wsgi(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        self.requests.append({"method": method, "path": path})

        def respond(status: int, payload: bytes, content_type: str = "application/json"):
            start_response(f"{status} {'OK' if status < 400 else 'Error'}",
                           [("Content-Type", content_type), ("Content-Length", str(len(payload)))])
            return [payload]

        if environ.get("HTTP_X_API_KEY") != self.api_key:
            return respond(401, _error(401, "invalid x-api-key"))
        if not environ.get("HTTP_ANTHROPIC_VERSION"):
            return respond(400, _error(400, "anthropic-version: header is required"))
        if method == "POST" and path == "/v1/messages/batches":
            if self.fail_create:
                return respond(self.fail_create, _error(self.fail_create, "Internal server error"))
            body = orjson.loads(environ["wsgi.input"].read() or b"{}")
            reqs = body.get("requests")
            if not isinstance(reqs, list) or not reqs:
                return respond(400, _error(400, "requests: Field required"))
            bid = "msgbatch_01" + hashlib.sha256(str(next(_ids)).encode()).hexdigest()[:22]
            obj = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
                   "request_counts": {"processing": len(reqs), "succeeded": 0, "errored": 0, "canceled": 0,
                                      "expired": 0},
                   "ended_at": None, "created_at": _now(), "expires_at": _now(timedelta(days=1)),
                   "archived_at": None, "cancel_initiated_at": None, "results_url": None}
            self.batches[bid] = {"object": obj, "requests": reqs, "results": b"", "done": len(reqs)}
            if self.stall_create is not None:  # created, but the answer is late (the caller may be gone)
                self.stall_create.wait(120)
            return respond(200, orjson.dumps(obj))
        if method == "GET" and path == "/v1/messages/batches":
            data = [b["object"] for b in reversed(self.batches.values())]
            return respond(200, orjson.dumps({"data": data, "has_more": False,
                                              "first_id": data[0]["id"] if data else None,
                                              "last_id": data[-1]["id"] if data else None}))
        m = re.fullmatch(r"/v1/messages/batches/([^/]+)(/results|/cancel)?", path)
        if m is None or m.group(1) not in self.batches:
            return respond(404, _error(404, "Not found"))
        b = self.batches[m.group(1)]
        obj = b["object"]
        if m.group(2) == "/cancel":
            if obj["processing_status"] == "in_progress":
                obj["processing_status"], obj["cancel_initiated_at"] = "canceling", _now()
                b["done"] = 1
            return respond(200, orjson.dumps(obj))
        if m.group(2) == "/results":
            if obj["processing_status"] != "ended":
                return respond(400, _error(400, "Batch is still processing"))
            return respond(200, b"{broken\n" if self.malformed else b["results"], "application/binary")
        if not self.hold and obj["processing_status"] != "ended":
            self._end(b, environ)
        return respond(200, orjson.dumps(obj))

    def _end(self, b: dict, environ) -> None:
        obj = b["object"]
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines = []
        for i, req in enumerate(b["requests"]):
            params = req.get("params") or {}
            model = str(params.get("model"))
            if i >= b["done"]:
                result = {"type": "canceled"}
            elif "batch-expire" in model:
                result = {"type": "expired"}
            elif m := re.search(r"error-(\d{3})", model):
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": f"Upstream refused ({m.group(1)})."}}}
            else:
                content, stop_reason, stop_sequence = FakeAnthropic._reply(params, model)
                usage = FakeAnthropic._usage(params, model, content)
                result = {"type": "succeeded", "message": {
                    "id": "msg_01" + hashlib.sha256(req["custom_id"].encode()).hexdigest()[:22], "type": "message",
                    "role": "assistant", "model": model, "content": content, "stop_reason": stop_reason,
                    "stop_sequence": stop_sequence, "usage": usage}}
            counts[result["type"]] += 1
            lines.append(orjson.dumps({"custom_id": req["custom_id"], "result": result}))
        b["results"] = b"\n".join(lines) + b"\n"
        host = environ.get("HTTP_HOST", "127.0.0.1")
        obj.update(processing_status="ended", request_counts=counts, ended_at=_now(),
                   results_url=f"http://{host}/v1/messages/batches/{obj['id']}/results")


def serve(fake: FakeAnthropicBatches) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
