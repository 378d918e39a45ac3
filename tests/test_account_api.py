"""The account API with the official openai SDK (`client.get/post/delete`) and plain HTTP: the key's
org only; every bad input a 400 in OpenAI's error shape naming the parameter; unknown query
parameters refused; a quote never calls a provider."""

import openai
import pytest
import requests

from tests.conftest import chat_calls

MSG = [{"role": "user", "content": "hello there"}]


def get(gw, path, key=None, **params):
    return requests.get(gw.v1 + path, params=params, headers={"Authorization": f"Bearer {key or gw.api_key}"})


def test_account(gateway):
    acct = gateway.sdk().get("/account", cast_to=object)
    assert acct["org"]["name"] == "default"
    assert acct["balance"] == f"{gateway.org().credits_micros / 1e6:.6f}" and acct["open_holds"] == "0.000000"
    assert acct["available"] == acct["balance"]
    assert acct["plan"] is None and acct["budgets"] == []
    assert acct["pricing"]["policy"] == "list"


def test_account_shows_open_holds_while_a_request_runs(gateway, fake_openai):
    import gevent

    from tests.conftest import wait_for

    running = gevent.spawn(gateway.sdk().chat.completions.create, model="test/slow-1000", messages=MSG,
                           max_tokens=10)
    wait_for(lambda: chat_calls(fake_openai) == 1)
    acct = gateway.sdk().get("/account", cast_to=object)
    assert float(acct["open_holds"]) > 0
    assert float(acct["available"]) == pytest.approx(float(acct["balance"]) - float(acct["open_holds"]), abs=1e-6)
    running.get()
    assert gateway.sdk().get("/account", cast_to=object)["open_holds"] == "0.000000"


def test_account_shows_budgets_and_plan(gateway):
    gateway.cli("budget", "set", "--org", "default", "--usd", "5", "--window", "day")
    gateway.flush()
    acct = gateway.sdk().get("/account", cast_to=object)
    (budget,) = acct["budgets"]
    assert budget["entity"] == "org" and budget["window"] == "day" and budget["remaining"] == "5.000000"


def test_pricing_lists_models_with_the_route_now(gateway):
    data = {m["model"]: m for m in gateway.sdk().get("/account/pricing", cast_to=object)["data"]}
    cheap = data["test/cheap"]
    assert cheap["input_per_mtok"] == "100.000000" and cheap["output_per_mtok"] == "200.000000"
    assert cheap["route"] == {"provider": "fake", "upstream_model": "fake-gpt"}
    assert cheap["benchmark"]["input_per_mtok"] == "100.000000"
    one = gateway.sdk().get("/account/pricing", cast_to=object, options={"params": {"model": "test/cheap"}})
    assert [m["model"] for m in one["data"]] == ["test/cheap"]


def test_quote_never_calls_upstream(gateway, fake_openai):
    q = gateway.sdk().post("/account/quote", cast_to=object,
                           body={"model": "test/cheap", "messages": MSG, "max_tokens": 100})
    assert chat_calls(fake_openai) == 0
    assert q["model"] == "test/cheap" and q["estimated_output_tokens"] == 100
    assert q["estimated_input_tokens"] > 0
    assert q["routes"][0]["provider"] == "fake"
    expected = (q["estimated_input_tokens"] * 100 + 100 * 200) / 1e6
    assert float(q["estimated_charge_usd"]) == pytest.approx(expected, abs=1e-6)
    assert float(q["benchmark_cost_usd"]) - float(q["estimated_charge_usd"]) == pytest.approx(
        float(q["estimated_saved_usd"]), abs=1e-6)


def test_quote_takes_an_anthropic_body(gateway):
    q = gateway.sdk().post("/account/quote", cast_to=object, body={
        "model": "test/cheap", "max_tokens": 50, "system": "be brief", "messages": MSG})
    assert q["estimated_output_tokens"] == 50


@pytest.mark.parametrize("body,param", [
    ({"messages": MSG}, "model"),
    ({"model": "no/such-model", "messages": MSG}, "model"),
    ({"model": "test/cheap", "messages": "hi"}, "messages"),
])
def test_quote_bad_input_is_a_400_or_404_naming_the_param(gateway, body, param):
    r = requests.post(gateway.v1 + "/account/quote", json=body, headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert r.status_code in (400, 404)
    assert r.json()["error"]["param"] == param


def test_requests_list_filter_page_and_get(gateway):
    client = gateway.sdk()
    for model in ("test/cheap", "test/fake-gpt", "test/cheap"):
        client.chat.completions.create(model=model, messages=MSG)
    gateway.flush()
    page = client.get("/requests", cast_to=object, options={"params": {"limit": 2}})
    assert len(page["data"]) == 2 and page["has_more"] is True
    rest = client.get("/requests", cast_to=object, options={"params": {"limit": 2, "after": page["last_id"]}})
    assert len(rest["data"]) == 1 and rest["has_more"] is False
    ids = [r["id"] for r in page["data"] + rest["data"]]
    assert len(set(ids)) == 3
    cheap = client.get("/requests", cast_to=object, options={"params": {"model": "test/cheap"}})
    assert [r["model"] for r in cheap["data"]] == ["test/cheap", "test/cheap"]
    one = client.get(f"/requests/{ids[0]}", cast_to=object)
    assert one["id"] == ids[0] and one["usage"]["input_tokens"] > 0 and one["status"] == 200
    ok = client.get("/requests", cast_to=object, options={"params": {"status": 200}})
    assert len(ok["data"]) == 3


def test_requests_are_the_orgs_own(gateway):
    gateway.sdk().chat.completions.create(model="test/cheap", messages=MSG)
    gateway.flush()
    mine = gateway.sdk().get("/requests", cast_to=object)["data"][0]["id"]
    gateway.new_org("other")
    theirs = gateway.sdk(gateway.new_key("other"))
    assert theirs.get("/requests", cast_to=object)["data"] == []
    with pytest.raises(openai.NotFoundError):
        theirs.get(f"/requests/{mine}", cast_to=object)
    r = get(gateway, "/requests", key=gateway.new_key("other"), after=mine)
    assert r.status_code == 400 and r.json()["error"]["param"] == "after"


@pytest.mark.parametrize("path,params,param", [
    ("/requests", {"limit": "0"}, "limit"),
    ("/requests", {"limit": "abc"}, "limit"),
    ("/requests", {"status": "ok"}, "status"),
    ("/requests", {"start": "yesterday"}, "start"),
    ("/requests", {"bogus": "1"}, "bogus"),
    ("/account", {"x": "1"}, "x"),
    ("/account/credits", {"before": "x"}, "before"),
    ("/usage/timeseries", {"bucket": "week"}, "bucket"),
    ("/usage/timeseries", {"group_by": "planet"}, "group_by"),
    ("/usage/timeseries", {"bucket": "hour", "start": "2020-01-01", "end": "2021-01-01"}, "start"),
    ("/usage/timeseries", {"end": "not-a-date"}, "end"),
    ("/usage/timeseries", {"unknown": "1"}, "unknown"),
])
def test_bad_query_is_a_400_naming_the_param(gateway, path, params, param):
    r = get(gateway, path, **params)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"


def test_no_key_is_a_401_in_the_openai_shape(gateway):
    for path in ("/account", "/account/pricing", "/account/credits", "/requests", "/usage/timeseries",
                 "/api-keys", "/byok/keys"):
        r = requests.get(gateway.v1 + path)
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key", path


def test_credits_log(gateway):
    gateway.cli("credits", "add", "--org", "default", "--usd", "5")
    gateway.sdk().chat.completions.create(model="test/cheap", messages=MSG)
    gateway.flush()
    log = gateway.sdk().get("/account/credits", cast_to=object)
    kinds = [t["kind"] for t in log["data"]]
    assert "topup" in kinds and "charge" in kinds
    assert any(t["change"] == "5.000000" for t in log["data"])
    first = gateway.sdk().get("/account/credits", cast_to=object, options={"params": {"limit": 1}})
    assert len(first["data"]) == 1 and first["has_more"] is True
    older = gateway.sdk().get("/account/credits", cast_to=object,
                              options={"params": {"limit": 1, "before": first["last_id"]}})
    assert older["data"][0]["id"] < first["last_id"]


def test_api_keys_create_list_delete(gateway, fake_openai):
    admin = gateway.sdk(gateway.new_key(scope="admin"))
    made = admin.post("/api-keys", cast_to=object, body={"name": "ci", "scope": "inference"})
    assert made["key"].startswith("gw-") and made["name"] == "ci"
    gateway.flush()
    gateway.sdk(made["key"]).chat.completions.create(model="test/cheap", messages=MSG)  # it works at once
    listed = admin.get("/api-keys", cast_to=object)["data"]
    assert made["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)  # the secret is shown once
    assert admin.delete(f"/api-keys/{made['id']}", cast_to=object)["deleted"] is True
    gateway.flush()
    with pytest.raises(openai.AuthenticationError):
        gateway.sdk(made["key"]).chat.completions.create(model="test/cheap", messages=MSG)


def test_api_keys_need_the_admin_scope_and_stay_in_the_org(gateway):
    with pytest.raises(openai.PermissionDeniedError):
        gateway.sdk().post("/api-keys", cast_to=object, body={"name": "x"})
    gateway.new_org("other")
    theirs = gateway.sdk(gateway.new_key("other", scope="admin"))
    mine = gateway.sdk(gateway.new_key(scope="admin")).get("/api-keys", cast_to=object)["data"][0]["id"]
    with pytest.raises(openai.NotFoundError):
        theirs.delete(f"/api-keys/{mine}", cast_to=object)
    assert mine not in [k["id"] for k in theirs.get("/api-keys", cast_to=object)["data"]]


@pytest.mark.parametrize("body,param", [
    ({"scope": "root"}, "scope"),
    ({"name": 5}, "name"),
    ({"user": "nobody@example.com"}, "user"),
    ({"app": "no-such-app"}, "app"),
    ({"app": ["x"]}, "app"),
    ({"color": "red"}, "color"),
])
def test_api_keys_bad_input(gateway, body, param):
    key = gateway.new_key(scope="admin")
    r = requests.post(gateway.v1 + "/api-keys", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_api_key_for_an_app(gateway):
    gateway.cli("app", "create", "--org", "default", "--slug", "bot")
    made = gateway.sdk(gateway.new_key(scope="admin")).post("/api-keys", cast_to=object,
                                                            body={"name": "bot key", "app": "bot"})
    assert made["app_id"] is not None


def test_timeseries_groups_from_the_rollups(gateway):
    client = gateway.sdk()
    other = gateway.new_key(name="second")
    client.chat.completions.create(model="test/cheap", messages=MSG)
    client.chat.completions.create(model="test/fake-gpt", messages=MSG)
    gateway.sdk(other).chat.completions.create(model="test/cheap", messages=MSG)
    gateway.flush()
    total = client.get("/usage/timeseries", cast_to=object, options={"params": {"bucket": "hour"}})
    filled = [b for b in total["data"] if b["groups"]]
    assert len(filled) == 1 and filled[0]["groups"][0]["requests"] == 3
    assert len(total["data"]) in (7 * 24, 7 * 24 + 1)  # every hour of the window (floored), empty ones too
    by_model = client.get("/usage/timeseries", cast_to=object, options={"params": {"group_by": "model"}})
    groups = {g["model"]: g["requests"] for b in by_model["data"] for g in b["groups"]}
    assert groups == {"test/cheap": 2, "test/fake-gpt": 1}
    by_key = client.get("/usage/timeseries", cast_to=object, options={"params": {"group_by": "key"}})
    assert sorted(g["requests"] for b in by_key["data"] for g in b["groups"]) == [1, 2]
    gateway.new_org("other")
    theirs = gateway.sdk(gateway.new_key("other")).get("/usage/timeseries", cast_to=object)
    assert all(b["groups"] == [] for b in theirs["data"])


def test_atlas_usage_path(gateway):
    r = requests.get(gateway.url + "/api/v1/llm/usage", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert r.status_code == 200 and r.json()["object"] == "usage.summary"
