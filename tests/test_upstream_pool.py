"""Upstream connections are kept alive and reused, whichever way a reply is read: whole, relayed
as bytes, or decoded and translated (whose decoder stops at the terminal event)."""

import pytest
import urllib3.connection

MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def connects(monkeypatch) -> list[int]:
    """Every TCP connect the gateway makes to an upstream (a reused connection makes none)."""
    made: list[int] = []
    connect = urllib3.connection.HTTPConnection.connect

    def counting(self):
        made.append(self.port)
        return connect(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", counting)
    return made


@pytest.mark.parametrize(("model", "stream"), [
    ("test/fake-gpt", False),               # OpenAI pass-through, whole body
    ("test/fake-gpt", True),                # OpenAI pass-through, bytes relayed
    ("anthropic-test/claude-fake", False),  # translated onto Anthropic
    ("anthropic-test/claude-fake", True),   # translated stream, decoded event by event
])
def test_sequential_calls_reuse_one_connection(gateway_factory, fake_anthropic, connects, model, stream):
    sdk = gateway_factory().sdk()

    def call() -> str:
        if stream:
            return "".join(c.choices[0].delta.content or "" for c in
                           sdk.chat.completions.create(model=model, messages=MSG, stream=True) if c.choices)
        return sdk.chat.completions.create(model=model, messages=MSG).choices[0].message.content

    assert call()
    before = len(connects)
    for _ in range(5):
        assert call()
    assert len(connects) == before
