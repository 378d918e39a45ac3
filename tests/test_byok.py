"""BYOK: an org's own provider key, added with an admin key, listed masked, stored encrypted, used for
that org's calls to that provider only; a key the provider refuses is a 401 in the client's dialect
(never retried with the operator's key) and is flagged; deleting it goes back to the operator's key."""

import anthropic
import openai
import pytest
import requests
from sqlalchemy import select

from gateway import db
from gateway.models import ByokKey
from tests.conftest import UPSTREAM_KEY, chat_calls

MSG = [{"role": "user", "content": "hello"}]
OWN_KEY = "sk-org-own-key-1234"


def auth_of_last_call(fake) -> str:
    return [r for r in fake.requests if r["path"] == "/v1/chat/completions"][-1]["headers"]["authorization"]


@pytest.fixture
def admin(gateway):
    return gateway.sdk(gateway.new_key(scope="admin"))


def add(client, provider="fake", api_key=OWN_KEY, path="/byok/keys"):
    return client.post(path, body={"provider": provider, "api_key": api_key}, cast_to=object)


def test_add_list_delete_with_an_admin_key(gateway, admin):
    added = add(admin)
    assert added["provider"] == "fake" and added["key"] == "…1234"
    listed = admin.get("/byok/keys", cast_to=object)
    assert [k["key"] for k in listed["data"]] == ["…1234"]
    assert OWN_KEY not in str(listed)
    with db.session_scope() as s:
        row = s.scalar(select(ByokKey))
        assert OWN_KEY.encode() not in row.api_key_enc  # AES-256-GCM, never the plain key
    deleted = admin.delete(f"/byok/keys/{added['id']}", cast_to=object)
    assert deleted["deleted"] is True
    assert admin.get("/byok/keys", cast_to=object)["data"] == []


def test_an_inference_key_may_not_manage_byok_keys(gateway):
    with pytest.raises(openai.PermissionDeniedError):
        add(gateway.sdk())
    with pytest.raises(openai.PermissionDeniedError):
        gateway.sdk().get("/byok/keys", cast_to=object)


def test_the_orgs_calls_use_its_own_key_and_other_orgs_do_not(gateway, admin, fake_openai):
    fake_openai.extra_keys.add(OWN_KEY)
    add(admin)
    gateway.flush()  # the change reaches the server's memory
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    assert auth_of_last_call(fake_openai) == f"Bearer {OWN_KEY}"
    assert raw.headers["x-gateway-charge"] == "0.000000"  # the org pays the provider itself
    gateway.new_org("other")
    gateway.sdk(gateway.new_key("other")).chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert auth_of_last_call(fake_openai) == f"Bearer {UPSTREAM_KEY}"
    mine, theirs = gateway.rows()
    assert mine.byok is True and mine.charge_micros == 0 and mine.input_tokens > 0
    assert theirs.byok is False and theirs.charge_micros > 0


def test_a_rejected_key_is_401_flagged_and_never_falls_back(gateway, admin, fake_openai):
    add(admin, api_key="sk-revoked-by-provider-9999")
    gateway.flush()
    with pytest.raises(openai.AuthenticationError) as err:
        gateway.sdk().chat.completions.create(model="test/error-500", messages=MSG)  # has a fallback chain
    assert err.value.code == "byok_key_rejected"
    with pytest.raises(openai.AuthenticationError):
        gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG, stream=True)
    assert chat_calls(fake_openai) == 2
    assert {r["headers"]["authorization"] for r in fake_openai.requests} == {"Bearer sk-revoked-by-provider-9999"}
    gateway.flush()
    listed = admin.get("/byok/keys", cast_to=object)["data"]
    assert listed[0]["rejected"] is True


def test_a_rejected_key_is_401_in_the_anthropic_dialect(gateway, admin, fake_openai):
    add(admin, api_key="sk-revoked-by-provider-9999")
    gateway.flush()
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(model="test/fake-gpt", max_tokens=20, messages=MSG)
    assert err.value.body["error"]["type"] == "authentication_error"


def test_deleting_the_key_goes_back_to_the_operators_key(gateway, admin, fake_openai):
    fake_openai.extra_keys.add(OWN_KEY)
    added = add(admin)
    gateway.flush()
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert auth_of_last_call(fake_openai) == f"Bearer {OWN_KEY}"
    admin.delete(f"/byok/keys/{added['id']}", cast_to=object)
    gateway.flush()
    gateway.sdk().chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert auth_of_last_call(fake_openai) == f"Bearer {UPSTREAM_KEY}"


def test_one_org_cannot_see_or_delete_anothers_keys(gateway, admin):
    added = add(admin)
    gateway.new_org("other")
    theirs = gateway.sdk(gateway.new_key("other", scope="admin"))
    assert theirs.get("/byok/keys", cast_to=object)["data"] == []
    with pytest.raises(openai.NotFoundError):
        theirs.delete(f"/byok/keys/{added['id']}", cast_to=object)
    assert len(admin.get("/byok/keys", cast_to=object)["data"]) == 1


@pytest.mark.parametrize("body,param", [
    ({"api_key": OWN_KEY}, "provider"),
    ({"provider": "no-such-provider", "api_key": OWN_KEY}, "provider"),
    ({"provider": "fake"}, "api_key"),
    ({"provider": "fake", "api_key": 12}, "api_key"),
    ({"provider": "fake", "api_key": OWN_KEY, "extra": 1}, "extra"),
])
def test_bad_input_is_400_naming_the_param(gateway, body, param):
    key = gateway.new_key(scope="admin")
    r = requests.post(gateway.v1 + "/byok/keys", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


def test_atlas_path_and_hostile_input(gateway):
    key = gateway.new_key(scope="admin")
    headers = {"Authorization": f"Bearer {key}"}
    r = requests.post(gateway.url + "/api/v1/byok/keys", json={"provider": "fake", "api_key": OWN_KEY},
                      headers=headers)
    assert r.status_code == 201
    assert requests.get(gateway.url + "/api/v1/byok/keys", headers=headers).json()["data"][0]["key"] == "…1234"
    assert requests.post(gateway.v1 + "/byok/keys", data=b"\xff{", headers=headers).status_code == 400
    assert requests.post(gateway.v1 + "/byok/keys", json=[1], headers=headers).status_code == 400
    r = requests.get(gateway.v1 + "/byok/keys?x=1", headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "x"
    assert requests.delete(gateway.v1 + "/byok/keys/abc", headers=headers).status_code == 404
    assert requests.delete(gateway.v1 + "/byok/keys/" + "9" * 40, headers=headers).status_code == 404


def test_a_byok_request_holds_no_token_cost(gateway, fake_openai):
    """A small balance still serves the org's calls on its own key: the gate holds no token cost."""
    gateway.new_org("small", usd=0.01)
    admin = gateway.sdk(gateway.new_key("small", scope="admin"))
    client = gateway.sdk(gateway.new_key("small"))
    with pytest.raises(openai.APIStatusError) as err:  # the operator's key: the worst case is held
        client.chat.completions.create(model="test/fake-gpt", messages=MSG)
    assert err.value.status_code == 402
    fake_openai.extra_keys.add(OWN_KEY)
    add(admin)
    gateway.flush()
    assert client.chat.completions.create(model="test/fake-gpt", messages=MSG).choices[0].message.content
    assert auth_of_last_call(fake_openai) == f"Bearer {OWN_KEY}"


def test_the_console_lists_each_orgs_keys_to_its_admins_only(gateway, admin):
    from tests.test_console import login, org_admin

    add(admin, api_key="sk-default-org-key-AAAA")
    gateway.new_org("other")
    add(gateway.sdk(gateway.new_key("other", scope="admin")), api_key="sk-other-org-key-BBBB")
    org_admin(gateway, "other", "other-admin@example.com")
    theirs, _ = login(gateway, "other-admin@example.com", "password-123")
    page = theirs.get(gateway.url + "/admin/byok").text
    assert "…BBBB" in page and "…AAAA" not in page
    assert "sk-other-org-key" not in page
    su, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = su.get(gateway.url + "/admin/byok").text
    assert "…AAAA" in page and "…BBBB" in page
