"""POST /v1/embeddings through the openai SDK: OpenAI-kind pass-through, Ollama and OpenRouter
translated/forwarded, checks, auth and gate, fallbacks, ledger rows."""

import base64
import struct

import openai
import orjson
import pytest

from gateway.providers import ollama
from tests.conftest import OPENROUTER_UPSTREAM_KEY
from tests.fakes import LEAK_MARKER
from tests.fakes.ollama_upstream import _vector
from tests.openapi import validate


@pytest.fixture
def gw(fake_ollama, fake_openrouter, gateway_factory):
    return gateway_factory()


def floats(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_openai_kind_passes_through_and_is_billed(gw, fake_openai):
    raw = gw.sdk().embeddings.with_raw_response.create(model="test/embed", input=["hello world", "bye"],
                                                       encoding_format="float")
    body = orjson.loads(raw.content)
    validate(body, "CreateEmbeddingResponse")
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == 8
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert fake_openai.requests[-1]["path"] == "/v1/embeddings"
    assert fake_openai.requests[-1]["body"] == {"model": "text-embedding-3-small", "input": ["hello world", "bye"],
                                                "encoding_format": "float"}
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.requested_model, row.provider, row.stream) == ("embeddings", "test/embed", "fake", False)
    assert (row.input_tokens, row.output_tokens, row.status) == (3, 0, 200)
    assert row.charge_micros == row.benchmark_micros == 3 * 100  # 3 tokens at $100/Mtok
    assert raw.headers["x-gateway-charge"] == "0.000300"


def test_sdk_default_base64_decodes_to_the_same_vectors(gw):
    sdk = gw.sdk()
    as_floats = sdk.embeddings.create(model="test/embed", input="hello world", encoding_format="float")
    decoded = sdk.embeddings.create(model="test/embed", input="hello world")  # the SDK asks for base64
    assert decoded.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-6)


def test_ollama_is_translated_to_openai_shape(gw, fake_ollama):
    raw = gw.sdk().embeddings.with_raw_response.create(model="ollama-test/embed", input=["why is the sky blue?", "hi"],
                                                       encoding_format="float", dimensions=4)
    body = orjson.loads(raw.content)
    validate(body, "CreateEmbeddingResponse")
    assert body["model"] == "ollama-test/embed"
    assert [d["embedding"] for d in body["data"]] == [_vector("why is the sky blue?", 4), _vector("hi", 4)]
    assert body["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert fake_ollama.requests[-1]["path"] == "/api/embed"
    assert fake_ollama.requests[-1]["body"] == {"model": "nomic-embed-text", "input": ["why is the sky blue?", "hi"],
                                                "dimensions": 4}
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.endpoint, row.provider, row.input_tokens, row.charge_micros) == ("embeddings", "fakeollama", 6, 600)


def test_ollama_base64_is_little_endian_float32(gw):
    r = gw.post("/v1/embeddings", {"model": "ollama-test/embed", "input": "hello", "encoding_format": "base64"})
    (item,) = r.json()["data"]
    assert isinstance(item["embedding"], str)
    assert floats(item["embedding"]) == pytest.approx(_vector("hello", 8), abs=1e-6)
    sdk_vector = gw.sdk().embeddings.create(model="ollama-test/embed", input="hello").data[0].embedding
    assert sdk_vector == pytest.approx(_vector("hello", 8), abs=1e-6)


def test_ollama_rejects_token_arrays_naming_input(gw, fake_ollama):
    before = len(fake_ollama.requests)
    with pytest.raises(openai.BadRequestError) as e:
        gw.sdk().embeddings.create(model="ollama-test/embed", input=[[1, 2, 3]])
    assert e.value.param == "input"
    assert len(fake_ollama.requests) == before


def test_openrouter_embeddings_are_forwarded_with_attribution(gw, fake_openrouter):
    raw = gw.sdk().embeddings.with_raw_response.create(model="openrouter-test/embed", input="hello world",
                                                       encoding_format="float")
    validate(orjson.loads(raw.content), "CreateEmbeddingResponse")
    request = fake_openrouter.requests[-1]
    assert request["path"] == "/v1/embeddings" and request["body"]["model"] == "text-embedding-3-small"
    assert request["headers"]["authorization"] == f"Bearer {OPENROUTER_UPSTREAM_KEY}"
    assert request["headers"]["x-title"] and request["headers"]["http-referer"]
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.input_tokens) == ("fakeopenrouter", 2)


def test_fallback_route_serves_when_the_first_fails(gw):
    raw = gw.sdk().embeddings.with_raw_response.create(model="ollama-test/embed-falls-back", input="hello world")
    assert len(raw.parse().data[0].embedding) == 8
    (row,) = gw.rows(request_id=raw.headers["x-request-id"])
    assert (row.provider, row.attempts, row.status) == ("fake", 2, 200)


def test_provider_without_embeddings_is_400(gw, monkeypatch, fake_ollama):
    monkeypatch.delattr(ollama, "embeddings")
    with pytest.raises(openai.BadRequestError) as e:
        gw.sdk().embeddings.create(model="ollama-test/embed", input="hello")
    assert "does not support embeddings" in e.value.message
    validate(e.value.response.json(), "ErrorResponse")


@pytest.mark.parametrize("body, param", [
    ({"input": "x"}, "model"),
    ({"model": "test/embed"}, "input"),
    ({"model": "test/embed", "input": ""}, "input"),
    ({"model": "test/embed", "input": []}, "input"),
    ({"model": "test/embed", "input": ["ok", 3]}, "input"),
    ({"model": "test/embed", "input": [[1, 2], []]}, "input"),
    ({"model": "test/embed", "input": {"text": "x"}}, "input"),
    ({"model": "test/embed", "input": ["x"] * 2049}, "input"),
    ({"model": "test/embed", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "test/embed", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "test/embed", "input": "x", "stream": True}, "stream"),
])
def test_invalid_requests_are_400_naming_the_param(gw, fake_openai, body, param):
    before = len(fake_openai.requests)
    r = gw.post("/v1/embeddings", body)
    assert r.status_code == 400
    validate(r.json(), "ErrorResponse")
    assert r.json()["error"]["param"] == param
    assert len(fake_openai.requests) == before


@pytest.mark.parametrize("value", ["one", ["one", "two"], [1, 2, 3], [[1, 2], [3]]])
def test_every_input_form_is_accepted(gw, fake_openai, value):
    r = gw.post("/v1/embeddings", {"model": "test/embed", "input": value, "encoding_format": "float"})
    assert r.status_code == 200
    validate(r.json(), "CreateEmbeddingResponse")
    assert fake_openai.requests[-1]["body"]["input"] == value


def test_auth_gate_and_routing_apply(gw, fake_openai):
    r = gw.post("/v1/embeddings", {"model": "test/embed", "input": "x"}, headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    gw.new_org("broke", usd=0)
    before = len(fake_openai.requests)
    with pytest.raises(openai.APIStatusError) as e:
        gw.sdk(gw.new_key("broke")).embeddings.create(model="test/embed", input="x")
    assert e.value.status_code == 402 and len(fake_openai.requests) == before
    with pytest.raises(openai.PermissionDeniedError):
        gw.sdk(gw.new_key(scope="read")).embeddings.create(model="test/embed", input="x")
    with pytest.raises(openai.NotFoundError) as e:
        gw.sdk().embeddings.create(model="nope/none", input="x")
    assert e.value.code == "model_not_found"


@pytest.mark.parametrize("model, status", [("test/error-429", 429), ("test/error-503", 502),
                                           ("ollama-test/error-400", 400), ("ollama-test/missing", 502)])
def test_upstream_errors_are_mapped_and_not_leaked(gw, model, status):
    r = gw.post("/v1/embeddings", {"model": model, "input": "x"})
    assert r.status_code == status
    validate(r.json(), "ErrorResponse")
    assert LEAK_MARKER not in r.text
    (row,) = gw.rows(endpoint="embeddings")
    assert (row.status, row.charge_micros) == (status, 0)
