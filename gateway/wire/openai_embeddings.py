"""OpenAI Embeddings dialect: request checks and the response shape.

Embeddings are not chat-shaped, so they skip the pass-through/translate split: dispatch hands the
client's body to the route adapter's optional `embeddings(call, route) -> (dict, Usage)`, and
adapters of providers that do not speak OpenAI's embeddings build the reply with `response`.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from gateway.errors import InvalidRequest, UpstreamError
from gateway.wire.canonical import Usage
from gateway.wire.openai_chat import check_model

MAX_INPUTS = 2048
ENCODINGS = ("float", "base64")


def check_request(body: Any) -> None:
    """Reject what OpenAI would reject with a 400 naming the param (CreateEmbeddingRequest)."""
    check_model(body)
    if "input" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if not _valid_input(body["input"]):
        raise InvalidRequest("'input' must be a non-empty string, an array of up to 2048 non-empty strings, "
                             "an array of token ids, or an array of token-id arrays.", param="input")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ENCODINGS:
        raise InvalidRequest("Invalid value for 'encoding_format': expected 'float' or 'base64'.",
                             param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise InvalidRequest("Invalid 'dimensions': must be an integer of at least 1.", param="dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise InvalidRequest("Invalid type for 'user': expected a string.", param="user")
    if "stream" in body:  # embeddings never stream; the decode stage would otherwise meter it as a stream
        raise InvalidRequest("Unrecognized request argument supplied: stream", param="stream")


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in value)


def _valid_input(value: Any) -> bool:
    if isinstance(value, str):
        return value != ""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_INPUTS:
        return False
    if all(isinstance(v, str) for v in value):
        return all(v != "" for v in value)
    return _is_tokens(value) or all(_is_tokens(v) for v in value)


def texts(body: dict[str, Any]) -> list[str] | None:
    """The inputs as a list of strings, or None when the client sent token ids."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def usage_from(obj: dict | None) -> Usage:
    """OpenAI embeddings `usage` -> Usage (prompt tokens only; embeddings have no output)."""
    if not isinstance(obj, dict):
        return Usage()
    return Usage(input_tokens=int(obj.get("prompt_tokens") or obj.get("total_tokens") or 0))


def encode_vector(vector: list[float], encoding: str | None) -> list[float] | str:
    """A vector as OpenAI sends it: floats, or base64 of little-endian float32 when asked."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def response(vectors: list[list[float]], model: str, usage: Usage, encoding: str | None) -> dict[str, Any]:
    """Vectors in CreateEmbeddingResponse's shape."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, encoding)}
                 for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
    }


def unsupported() -> UpstreamError:
    """This route cannot embed. Retryable, so a fallback route that can still serves the request."""
    return UpstreamError("The model does not support embeddings.", status=400, retryable=True,
                         type="invalid_request_error", anthropic_type="invalid_request_error",
                         code="model_not_supported")
