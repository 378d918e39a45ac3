"""Parameter fidelity on the Responses API, passed through to an upstream that speaks it: every
layer that touches a Responses request (dlp, prompt cache, output budget; compression and context
dedupe leave Responses alone) and the responses stage's history keep every parameter the client sent
(see test_param_fidelity.py for the other dialects). Its own module: it swaps conftest's fake
upstream for the one that speaks `/v1/responses` too."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy import select

from gateway import db, memo
from gateway.memo import MEMO
from gateway.models import Provider
from gateway.stores.responses import STORE
from tests.conftest import UPSTREAM_KEY, wait_for
from tests.fakes import serve
from tests.fakes.responses_upstream import FakeResponsesOpenAI
from tests.test_dlp import EMAIL
from tests.test_param_fidelity import LAYERS, RESPONSES_PARAMS, UNKNOWN, assert_kept, setup_layer, split


@pytest.fixture(scope="module")
def fake_openai():
    """Overrides conftest's: the same chat fake, speaking `/v1/responses` too."""
    fake = FakeResponsesOpenAI(api_key=UPSTREAM_KEY)
    server, fake.url = serve(fake)
    yield fake
    server.stop()


def speak(gw, value: bool) -> None:
    """Provider "fake" declares whether it speaks the Responses API (as its config would)."""
    with db.write_lock, db.session_scope() as s:
        s.scalar(select(Provider).where(Provider.name == "fake")).responses_api = value
        memo.announce(s, "catalog")
    gw.flush()
    wait_for(lambda: MEMO.catalog.providers["fake"].responses_api is value)


@pytest.fixture
def native(gateway):
    STORE.clear()
    speak(gateway, True)
    yield gateway
    STORE.clear()


def responses_sent(fake, before: int) -> list[dict]:
    return [r["body"] for r in fake.requests[before:] if r["path"] == "/v1/responses"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_responses_keeps_every_parameter(native, fake_openai, layer, stream, request):
    setup_layer(native, layer)
    params = dict(RESPONSES_PARAMS)
    if layer == "output_budget":
        del params["max_output_tokens"]
    sdk = native.sdk()
    named, extra = split(sdk.responses.create, params)
    text = f"Mail the report to {EMAIL}. {request.node.name}"
    before = len(fake_openai.requests)
    result = sdk.responses.create(model="test/echo", input=text, stream=stream, extra_body={**extra, **UNKNOWN},
                                  **named)
    if stream:
        for _ in result:
            pass
    (upstream,) = responses_sent(fake_openai, before)
    sent = {"model": "test/echo", "input": text, "stream": stream, **params, **UNKNOWN}
    owned = {"model"} | ({"input"} if layer == "dlp" else set())
    added = {"max_output_tokens"} if layer == "output_budget" else set()
    assert_kept(sent, upstream, owned=owned, added=added)
    if layer == "dlp":
        assert EMAIL not in orjson.dumps(upstream["input"]).decode()


def test_responses_history_keeps_every_other_parameter(native, fake_openai, request):
    """A second turn whose upstream does not hold the first (answered by translation onto chat):
    the conversation replaces previous_response_id as input; every other parameter goes as sent."""
    sdk = native.sdk()
    params = {k: v for k, v in RESPONSES_PARAMS.items() if k not in ("conversation", "prompt")}
    named, extra = split(sdk.responses.create, params)
    speak(native, False)
    first = sdk.responses.create(model="test/echo", input=f"Remember 7. {request.node.name}", **named,
                                 extra_body=extra)
    speak(native, True)
    before = len(fake_openai.requests)
    sdk.responses.create(model="test/echo", input="What number?", previous_response_id=first.id, **named,
                         extra_body={**extra, **UNKNOWN})
    (upstream,) = responses_sent(fake_openai, before)
    assert "previous_response_id" not in upstream and len(upstream["input"]) > 1
    sent = {"model": "test/echo", "input": "What number?", **params, **UNKNOWN}
    assert_kept(sent, upstream, owned={"model", "input"})
