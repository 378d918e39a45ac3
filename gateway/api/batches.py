"""OpenAI's Files and Batches API on /v1: `POST /v1/files` (purpose `batch`, JSONL), `GET /v1/files`,
`GET /v1/files/{id}`, `GET /v1/files/{id}/content`, `DELETE /v1/files/{id}`, `POST /v1/batches`,
`GET /v1/batches/{id}`, `GET /v1/batches`, `POST /v1/batches/{id}/cancel`. Thin over
services/batches.py; ids are the gateway's own, every read is within the key's org (another org's
batch or file is a 404), errors are OpenAI-shaped."""

from __future__ import annotations

import functools
from typing import Any

import orjson
from flask import Response, request
from sqlalchemy import select

from gateway import db
from gateway.api.account import page_limit
from gateway.api.blueprint import accepts, bp, error_response
from gateway.api.principals import as_json, json_object, principal
from gateway.errors import GatewayError, InvalidRequest
from gateway.models import Batch, BatchFile
from gateway.providers.batch_api import TERMINAL
from gateway.services import batches
from gateway.services.batches import epoch, unz


def openai_errors(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except GatewayError as e:
            return error_response(e, "openai")
    return wrapped


def file_json(f: BatchFile) -> dict[str, Any]:
    return {"id": f.public_id, "object": "file", "bytes": f.bytes, "created_at": epoch(f.created_at),
            "expires_at": epoch(f.expires_at), "filename": f.filename, "purpose": f.purpose, "status": "processed"}


def batch_json(b: Batch) -> dict[str, Any]:
    """A Batch object as OpenAI shapes it; `completed`/`failed` counts once the batch has finished."""
    done = b.status in TERMINAL and b.settled
    out: dict[str, Any] = {
        "id": b.public_id, "object": "batch", "endpoint": b.endpoint,
        "errors": orjson.loads(b.errors_json) if b.errors_json else None,
        "input_file_id": b.input_file_id or "", "completion_window": b.completion_window, "status": b.status,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id, "created_at": epoch(b.created_at),
        "request_counts": {"total": b.total, "completed": b.succeeded if done else 0,
                           "failed": b.errored + b.canceled + b.expired if done else 0},
        "metadata": orjson.loads(b.metadata_json) if b.metadata_json else None,
    }
    for name in ("in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
                 "cancelling_at", "cancelled_at"):
        out[name] = epoch(getattr(b, name))
    if done:
        out["usage"] = {"input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
                        "total_tokens": b.input_tokens + b.output_tokens,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens_details": {"reasoning_tokens": 0}}
    # Fields not set yet are left out, as the published schema has them (not nullable).
    return {k: v for k, v in out.items() if v is not None}


@bp.post("/files")
@accepts()
@openai_errors
def files_create():
    p = principal()
    purpose = request.form.get("purpose")
    upload = request.files.get("file")
    if not purpose:
        raise InvalidRequest("Missing required parameter: 'purpose'.", param="purpose")
    if upload is None:
        raise InvalidRequest("Missing required parameter: 'file'.", param="file")
    f = batches.upload(p, purpose, upload.filename or "input.jsonl", upload.read())
    return as_json(file_json(f))


@bp.get("/files")
@accepts("purpose", "limit", "order", "after")
@openai_errors
def files_list():
    p = principal()
    limit = page_limit(default=100) if request.args.get("limit") else 100
    order = request.args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    with db.session_scope() as session:
        q = select(BatchFile).where(BatchFile.org_id == p.org_id)
        if purpose := request.args.get("purpose"):
            q = q.where(BatchFile.purpose == purpose)
        if after := request.args.get("after"):
            anchor = batches.get_file(session, p.org_id, after[:64])
            q = q.where(BatchFile.id < anchor.id if order == "desc" else BatchFile.id > anchor.id)
        q = q.order_by(BatchFile.id.desc() if order == "desc" else BatchFile.id.asc()).limit(limit + 1)
        rows = list(session.scalars(q))
        data = [file_json(f) for f in rows[:limit]]
    return as_json({"object": "list", "data": data, "first_id": data[0]["id"] if data else "",
                    "last_id": data[-1]["id"] if data else "", "has_more": len(rows) > limit})


@bp.delete("/files/<file_id>")
@accepts()
@openai_errors
def files_delete(file_id: str):
    p = principal()
    with db.write_lock, db.session_scope() as session:
        f = batches.get_file(session, p.org_id, file_id[:64])
        session.delete(f)
    return as_json({"id": f.public_id, "object": "file", "deleted": True})


@bp.get("/files/<file_id>")
@accepts()
@openai_errors
def files_get(file_id: str):
    p = principal()
    with db.session_scope() as session:
        return as_json(file_json(batches.get_file(session, p.org_id, file_id[:64])))


@bp.get("/files/<file_id>/content")
@accepts()
@openai_errors
def files_content(file_id: str):
    p = principal()
    with db.session_scope() as session:
        f = batches.get_file(session, p.org_id, file_id[:64])
        content = unz(f.content_z)
    return Response(content, content_type="application/jsonl" if f.filename.endswith(".jsonl")
                    else "application/octet-stream")


@bp.post("/batches")
@accepts()
@openai_errors
def batches_create():
    p = principal()
    body = json_object()
    for name in ("input_file_id", "endpoint", "completion_window"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise InvalidRequest(f"Missing required parameter: '{name}'.", param=name)
    if body["endpoint"] not in batches.OPENAI_ENDPOINTS:
        raise InvalidRequest(f"'endpoint' must be one of {', '.join(batches.OPENAI_ENDPOINTS)}.", param="endpoint")
    if body["completion_window"] != "24h":
        raise InvalidRequest("'completion_window' must be '24h'.", param="completion_window")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
            isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in metadata.items())):
        raise InvalidRequest("'metadata' must be an object of at most 16 string keys (64 characters) and "
                             "string values (512 characters).", param="metadata")
    with db.session_scope() as session:
        f = batches.get_file(session, p.org_id, body["input_file_id"][:64])
        if f.purpose != "batch":
            raise InvalidRequest("The input file must have purpose 'batch'.", param="input_file_id")
        content = unz(f.content_z)
    lines = batches.parse_openai_jsonl(content)
    wrong = next((n for n, url in _urls(content) if url != body["endpoint"]), None)
    if wrong is not None:
        raise InvalidRequest(f"Line {wrong}: its 'url' does not match the batch's endpoint {body['endpoint']}.",
                             param="endpoint")
    key = request.headers.get("Idempotency-Key")
    b = batches.submit(p, api="openai", endpoint=batches.OPENAI_ENDPOINTS[body["endpoint"]],
                       client_endpoint=body["endpoint"], lines=lines, input_file_id=f.public_id, metadata=metadata,
                       idempotency_key=key, print_=batches.fingerprint("openai", body["endpoint"], content, metadata))
    return as_json(batch_json(b))


def _urls(content: bytes):
    for number, raw in enumerate(content.splitlines(), start=1):
        if raw.strip():
            yield number, orjson.loads(raw).get("url")


@bp.get("/batches/<batch_id>")
@accepts()
@openai_errors
def batches_get(batch_id: str):
    p = principal()
    with db.session_scope() as session:
        return as_json(batch_json(batches.get(session, p.org_id, batch_id[:64], "openai")))


@bp.get("/batches")
@accepts("limit", "after")
@openai_errors
def batches_list():
    p = principal()
    limit = page_limit()
    with db.session_scope() as session:
        rows, more = batches.page(session, p.org_id, "openai", limit, request.args.get("after"))
        data = [batch_json(b) for b in rows]
    return as_json({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None, "has_more": more})


@bp.post("/batches/<batch_id>/cancel")
@accepts()
@openai_errors
def batches_cancel(batch_id: str):
    p = principal()
    return as_json(batch_json(batches.cancel(p.org_id, batch_id[:64], "openai")))
