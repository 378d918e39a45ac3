"""A configured Redis that cannot be reached: requests through every shared layer are still served,
and the outage shows in /healthz and as a console banner; without Redis neither says anything.

The live in-process gateway (conftest) is pointed at a loopback port nothing listens on, so every
Redis call really fails (connection refused), as a Redis that went away does.
"""

from __future__ import annotations

import openai
import pytest
import requests

from gateway.stores import shared
from tests.conftest import free_port
from tests.test_console import login


@pytest.fixture
def unreachable_redis(gateway):
    shared.configure(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield gateway
    finally:
        shared.configure(None)


def test_without_redis_health_says_nothing_of_it(gateway):
    assert requests.get(gateway.url + "/healthz", timeout=5).json() == {"status": "ok"}
    assert "gateway_shared_redis_up" not in requests.get(gateway.url + "/metrics", timeout=5).text


def test_requests_are_served_while_redis_is_unreachable(unreachable_redis, fake_openai):
    gw = unreachable_redis
    sdk = gw.sdk()
    for _ in range(2):  # exact cache, dedupe (temperature 0: both eligible) and the responses store
        reply = sdk.chat.completions.create(model="test/fake-gpt", temperature=0,
                                            messages=[{"role": "user", "content": "still there?"}])
        assert reply.choices[0].message.content
    made = sdk.responses.create(model="test/fake-gpt", input="keep this")
    assert sdk.responses.retrieve(made.id).id == made.id
    sdk.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(made.id)
    health = requests.get(gw.url + "/healthz", timeout=5)
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ok" and body["shared"]["redis"] == "down" and body["warnings"]
    metrics = requests.get(gw.url + "/metrics", timeout=5).text
    assert "gateway_shared_redis_up 0.0" in metrics


def test_the_console_shows_a_banner_while_redis_is_unreachable(unreachable_redis):
    gw = unreachable_redis
    session, _ = login(gw, gw.admin_email, gw.admin_password)
    assert 'id="shared-down"' not in session.get(gw.url + "/admin/load").text  # nothing has failed yet
    shared.failed(ConnectionError("refused"))
    page = session.get(gw.url + "/admin/load").text
    assert 'id="shared-down"' in page and "Redis is unreachable" in page
    shared.recovered()
    assert 'id="shared-down"' not in session.get(gw.url + "/admin/load").text
