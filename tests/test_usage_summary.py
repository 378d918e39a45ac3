"""GET /v1/usage/summary: the key's org's numbers from the usage rollups, matching the ledger."""

import calendar
from datetime import timedelta
from decimal import Decimal

import openai
import pytest
import requests
from sqlalchemy import event

from gateway import db
from gateway.ledger.pricing import usd

MSG = [{"role": "user", "content": "hello there, how are you today?"}]


def summary(gateway, key=None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key or gateway.api_key}"} if key != "" else {}
    return requests.get(gateway.v1 + "/usage/summary", params=params, headers=headers)


def saved_by(row) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in row.saved_by.split(",") if part)}


def traffic(gateway, key=None) -> None:
    """Plain, provider-cached (the fake reports cached tokens: the provider's own caching, in the
    benchmark too), a fallback to a cheaper model (routing savings) and a failed request."""
    sdk = gateway.sdk(key)
    for model in ("test/fake-gpt", "test/fake-gpt", "test/fake-cached", "test/error-500"):
        sdk.chat.completions.create(model=model, messages=MSG)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="test/error-429", messages=MSG)
    gateway.flush()


def test_summary_matches_the_ledger(gateway):
    traffic(gateway)
    rows = gateway.rows()
    r = summary(gateway)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["object"], body["org"], body["currency"]) == ("usage.summary", "default", "USD")
    t = body["totals"]
    assert (t["requests"], t["errors"]) == (5, 1)
    assert t["input_tokens"] == sum(x.input_tokens for x in rows)
    assert t["output_tokens"] == sum(x.output_tokens for x in rows)
    assert t["benchmark_cost"] == usd(sum(x.benchmark_micros for x in rows))
    assert t["charge"] == usd(sum(x.charge_micros for x in rows))
    assert t["saved"] == usd(sum(x.saved_micros for x in rows)) and Decimal(t["saved"]) > 0

    mechanisms = {m["mechanism"]: m for m in body["by_mechanism"]}
    (cached,) = [x for x in rows if x.requested_model == "test/fake-cached"]
    (fallback,) = [x for x in rows if x.requested_model == "test/error-500"]
    assert fallback.upstream_model == "fake-gpt" and saved_by(fallback).get("routing", 0) > 0
    # the provider cached by itself: a direct call gets the discount too, nothing is the gateway's
    assert cached.cached_tokens > 0 and cached.saved_micros == 0 and saved_by(cached) == {}
    assert mechanisms["prompt_cache"] == {"mechanism": "prompt_cache", "requests": 0, "saved": "0.000000"}
    assert body["prompt_cache_unread_writes"] == {"writes": 0, "tokens": 0, "cost": "0.000000"}
    assert mechanisms["routing"]["saved"] == usd(saved_by(fallback)["routing"])
    assert mechanisms["exact_cache"]["saved"] == "0.000000"
    # what each mechanism saved adds up to the total saved
    assert sum(Decimal(m["saved"]) for m in body["by_mechanism"]) == Decimal(t["saved"])

    models = {m["model"]: m for m in body["by_model"]}
    assert set(models) == {"test/fake-gpt", "test/fake-cached", "test/error-500", "test/error-429"}
    gpt = [x for x in rows if x.requested_model == "test/fake-gpt"]
    assert models["test/fake-gpt"]["requests"] == 2
    assert models["test/fake-gpt"]["charge"] == usd(sum(x.charge_micros for x in gpt))
    assert models["test/fake-cached"]["by_mechanism"] == {}
    assert models["test/error-500"]["benchmark_cost"] == usd(fallback.benchmark_micros)
    assert models["test/error-500"]["charge"] == usd(fallback.charge_micros)
    assert models["test/error-500"]["by_mechanism"] == {"routing": usd(fallback.saved_micros)}
    assert models["test/error-429"]["errors"] == 1


def test_summary_filters_by_model_and_dates(gateway):
    traffic(gateway)
    (cached,) = gateway.rows(requested_model="test/fake-cached")
    only = summary(gateway, model="test/fake-cached").json()
    assert only["model"] == "test/fake-cached"
    assert [m["model"] for m in only["by_model"]] == ["test/fake-cached"]
    assert only["totals"]["requests"] == 1 and only["totals"]["charge"] == usd(cached.charge_micros)
    assert {m["mechanism"]: m["saved"] for m in only["by_mechanism"]}["routing"] == "0.000000"

    day = cached.created_at.date()
    at = cached.created_at
    epoch = calendar.timegm(at.timetuple())
    # a bare date as end includes that whole day
    same_day = summary(gateway, start=day.isoformat(), end=day.isoformat()).json()
    assert same_day["totals"]["requests"] == 5
    assert same_day["start"] == f"{day.isoformat()}T00:00:00Z"
    assert same_day["end"] == f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z"
    unix = summary(gateway, start=str(epoch - 60), end=str(epoch + 60)).json()
    assert unix["totals"]["requests"] == 5 and unix["start"].endswith(":00:00Z")  # widened to whole hours
    assert summary(gateway, start=f"{at.isoformat()}+00:00").json()["totals"]["requests"] == 5
    later = summary(gateway, start=(day + timedelta(days=1)).isoformat(),
                    end=(day + timedelta(days=3)).isoformat()).json()
    earlier = summary(gateway, start=(day - timedelta(days=9)).isoformat(),
                      end=(day - timedelta(days=2)).isoformat()).json()
    for empty in (later, earlier):
        totals = empty["totals"]
        assert (totals["requests"], totals["saved"], empty["by_model"]) == (0, "0.000000", [])


@pytest.mark.parametrize("params", [{"start": "yesterday"}, {"end": "2025-13-45"}, {"start": "1e9"},
                                    {"start": "2025-02-01", "end": "2025-01-01"}])
def test_bad_params_are_an_openai_400(gateway, params):
    r = summary(gateway, **params)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] in params and err["message"]


def test_a_key_is_required(gateway):
    missing = summary(gateway, key="")
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "invalid_request_error"
    wrong = summary(gateway, key="sk-not-a-real-key")
    assert wrong.status_code == 401 and "error" in wrong.json()


def test_an_org_sees_only_its_own_numbers(gateway):
    gateway.new_org("bravo")
    bravo = gateway.new_key("bravo")
    traffic(gateway)
    gateway.sdk(bravo).chat.completions.create(model="test/fake-cached", messages=MSG)
    gateway.flush()
    (row,) = gateway.rows(org_id=gateway.org("bravo").id)
    mine = summary(gateway, key=bravo).json()
    assert mine["org"] == "bravo"
    assert (mine["totals"]["requests"], mine["totals"]["charge"]) == (1, usd(row.charge_micros))
    assert [m["model"] for m in mine["by_model"]] == ["test/fake-cached"]
    assert {m["mechanism"]: m["saved"] for m in mine["by_mechanism"]}["routing"] == "0.000000"
    theirs = summary(gateway).json()
    assert theirs["org"] == "default" and theirs["totals"]["requests"] == 5


def test_the_summary_reads_rollups_through_an_index(gateway):
    traffic(gateway)
    statements = []

    def capture(conn, cursor, statement, parameters, *args):
        statements.append((statement, parameters))

    event.listen(db.engine(), "before_cursor_execute", capture)
    try:
        assert summary(gateway).json()["totals"]["requests"] == 5
    finally:
        event.remove(db.engine(), "before_cursor_execute", capture)
    ours = [(s, p) for s, p in statements if "usage_rollup" in s]
    assert ours and not any("ledger_entry" in s for s, _ in statements)
    with db.session_scope() as s:
        for statement, parameters in ours:
            plan = " ".join(str(r[-1]) for r in s.connection().exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, parameters).all())
            assert "USING INDEX" in plan and "SCAN usage_rollup" not in plan, plan
