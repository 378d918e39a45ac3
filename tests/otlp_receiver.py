"""A tiny OTLP/HTTP trace receiver on loopback: POST /v1/traces with a protobuf
ExportTraceServiceRequest (gzip or not), decoded with opentelemetry-proto; the spans it received are
kept as plain dicts (name, kind, ids, attributes, resource attributes)."""

from __future__ import annotations

import gzip

from gevent.pywsgi import WSGIServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

MAX_BODY = 16 * 1024 * 1024


def _value(v) -> object:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attributes(items) -> dict:
    return {a.key: _value(a.value) for a in items}


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.posts = 0
        self.url = ""

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] != "POST" or environ["PATH_INFO"] != "/v1/traces":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
        body = environ["wsgi.input"].read(length)
        if environ.get("HTTP_CONTENT_ENCODING") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.posts += 1
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append({
                        "name": span.name, "kind": span.kind, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(), "parent_span_id": span.parent_span_id.hex(),
                        "attributes": _attributes(span.attributes), "resource": resource,
                        "status": span.status.code,
                    })
        start_response("200 OK", [("Content-Type", "application/x-protobuf")])
        return [ExportTraceServiceResponse().SerializeToString()]


def serve(receiver: OtlpReceiver) -> WSGIServer:
    """Start `receiver` on an ephemeral loopback port; its base URL goes in `receiver.url`."""
    server = WSGIServer(("127.0.0.1", 0), receiver, log=None)
    server.start()
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    return server
