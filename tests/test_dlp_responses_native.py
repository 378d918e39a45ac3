"""Data protection on /v1/responses passed through to an upstream that speaks the Responses API
(the fixtures of test_responses_passthrough): the upstream gets placeholders, the client its values,
stream and not, function call arguments included."""

from __future__ import annotations

import json

import orjson
import pytest

from tests.test_dlp import EMAIL, PROMPT, SEEDED, protect
from tests.test_responses_passthrough import fake_openai, native, speaks  # noqa: F401  (fixtures)


def _upstream(fake) -> bytes:
    return b"\n".join(orjson.dumps(r["body"]) for r in fake.requests if r["path"] == "/v1/responses")


@pytest.mark.parametrize("stream", [False, True])
def test_native_responses_echo_restored(native, fake_openai, stream):  # noqa: F811
    protect(native)
    kw = dict(model="test/echo", instructions=f"Owner {EMAIL}", input=PROMPT)
    if stream:
        text = "".join(e.delta for e in native.sdk().responses.create(stream=True, **kw)
                       if e.type == "response.output_text.delta")
    else:
        text = native.sdk().responses.create(**kw).output_text
    sent = _upstream(fake_openai)
    assert b"[EMAIL_1]" in sent
    for value in SEEDED:
        assert value.encode() not in sent
        assert value in text


@pytest.mark.parametrize("stream", [False, True])
def test_native_responses_function_call_restored(native, fake_openai, stream):  # noqa: F811
    protect(native)
    tools = [{"type": "function", "name": "send", "parameters": {
        "type": "object", "properties": {"to": {"type": "string", "enum": ["[EMAIL_1]"]}}}}]
    kw = dict(model="test/fake-tool", input=f"send to {EMAIL}", tools=tools)
    if stream:
        args = "".join(e.delta for e in native.sdk().responses.create(stream=True, **kw)
                       if e.type == "response.function_call_arguments.delta")
    else:
        args = next(i for i in native.sdk().responses.create(**kw).output if i.type == "function_call").arguments
    assert json.loads(args) == {"to": EMAIL}
    assert EMAIL.encode() not in _upstream(fake_openai)
