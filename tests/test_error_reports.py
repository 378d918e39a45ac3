"""POST /v1/error-reports and the gateway's own errors, as the console's Error reports show them:
hostile bodies (wrong types, huge strings, deep nesting, unknown fields) answered 400 in OpenAI's
shape, never 500; a per-key rate limit (429, OpenAI shape, retry-after); every report in its key's
org only; failed requests recorded by the ledger writer with their source."""

import pytest
import requests
from sqlalchemy import select

from gateway import db
from gateway.models import ErrorReport
from tests.test_console import login

GOOD = {"type": "tool_error", "message": "the search tool timed out", "model": "test/fake-gpt",
        "agent": "researcher", "version": "1.4.2", "request_id": "req_abc"}


def reports(gateway, **where) -> list[ErrorReport]:
    gateway.flush()
    with db.session_scope() as s:
        q = select(ErrorReport).order_by(ErrorReport.id)
        for k, v in where.items():
            q = q.where(getattr(ErrorReport, k) == v)
        return list(s.scalars(q))


def openai_error(r: requests.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param
    return err


def test_a_client_report_is_accepted_and_kept_for_its_org(gateway):
    r = gateway.post("/v1/error-reports", GOOD)
    assert r.status_code == 202 and r.json() == {"object": "error_report", "status": "accepted"}
    [row] = reports(gateway, source="client")
    assert (row.type, row.message, row.model, row.agent, row.version, row.request_id) == (
        "tool_error", "the search tool timed out", "test/fake-gpt", "researcher", "1.4.2", "req_abc")
    assert row.org_id == gateway.org().id and row.status is None


@pytest.mark.parametrize("scope", ["inference", "read", "admin"])
def test_any_key_scope_may_report(gateway, scope):
    assert gateway.post("/v1/error-reports", GOOD, key=gateway.new_key(scope=scope)).status_code == 202


def test_a_report_needs_a_valid_key(gateway):
    r = requests.post(gateway.url + "/v1/error-reports", json=GOOD)
    openai_error(r, 401)
    openai_error(gateway.post("/v1/error-reports", GOOD, key="gw-nope"), 401)


HOSTILE = [
    ({"message": "x"}, "type"),
    ({"type": "x"}, "message"),
    ({**GOOD, "type": 12}, "type"),
    ({**GOOD, "message": ["a"]}, "message"),
    ({**GOOD, "model": {"a": 1}}, "model"),
    ({**GOOD, "agent": True}, "agent"),
    ({**GOOD, "version": 1.5}, "version"),
    ({**GOOD, "request_id": None, "extra": 1}, "extra"),
    ({**GOOD, "type": "x" * 65}, "type"),
    ({**GOOD, "message": "x" * 2001}, "message"),
    ({**GOOD, "model": "m" * 161}, "model"),
    ({**GOOD, "agent": "a" * 121}, "agent"),
    ({**GOOD, "version": "v" * 65}, "version"),
    ({**GOOD, "request_id": "r" * 65}, "request_id"),
    ({**GOOD, "type": "   "}, "type"),
    ({**GOOD, "type": "\u0000"}, "type"),
    ({**GOOD, "message": {"nested": {"deeper": [[[[1]]]]}}}, "message"),
]


@pytest.mark.parametrize(("body", "param"), HOSTILE)
def test_hostile_fields_are_a_400_naming_the_field(gateway, body, param):
    openai_error(gateway.post("/v1/error-reports", body), 400, param)
    assert reports(gateway) == []


@pytest.mark.parametrize("raw", [b"", b"not json", b"[1,2]", b'"text"', b"null", b"{" * 5000 + b"}" * 5000,
                                 b'{"type": "x", "message": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                 b'{"type": "\xff\xfe", "message": "x"}', b'{"type": "x", "message": "\\ud800"}',
                                 b'{"type": "x", "message": "\\udc00y"}', b"1e400",
                                 b'{"type": "x", "message": "y", "model": 1e400}'])
def test_malformed_bodies_are_a_400(gateway, raw):
    r = gateway.post("/v1/error-reports", headers={"Content-Type": "application/json"}, data=raw)
    openai_error(r, 400)


def test_a_huge_body_is_refused(gateway):
    r = gateway.post("/v1/error-reports", {**GOOD, "message": "x" * 100_000})
    openai_error(r, 413)


def test_reports_are_rate_limited_per_key(gateway_factory):
    REPORTS_PER_MINUTE = 3  # noqa: N806  (one more every 20 s: the test's requests come faster)
    gateway = gateway_factory(error_reports_per_minute=REPORTS_PER_MINUTE)
    key = gateway.new_key()
    statuses = [gateway.post("/v1/error-reports", GOOD, key=key).status_code for _ in range(REPORTS_PER_MINUTE)]
    assert statuses == [202] * REPORTS_PER_MINUTE
    r = gateway.post("/v1/error-reports", GOOD, key=key)
    err = openai_error(r, 429)
    assert err["type"] == "rate_limit_error" and int(r.headers["retry-after"]) >= 1
    # another key has its own allowance
    assert gateway.post("/v1/error-reports", GOOD, key=gateway.new_key()).status_code == 202
    assert len(reports(gateway, source="client")) == REPORTS_PER_MINUTE + 1


def test_unknown_query_parameters_are_refused(gateway):
    openai_error(gateway.post("/v1/error-reports?x=1", GOOD), 400, "x")


def test_reports_and_failed_requests_stay_in_their_org(gateway):
    from tests.test_console import org_admin

    gateway.new_org("bravo")
    bravo_key = gateway.new_key("bravo")
    gateway.post("/v1/error-reports", {**GOOD, "type": "bravo_only"}, key=bravo_key)
    gateway.post("/v1/error-reports", {**GOOD, "type": "default_only"})
    r = requests.post(gateway.v1 + "/chat/completions", headers={"Authorization": f"Bearer {bravo_key}"},
                      json={"model": "test/error-500-nope", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    gw_row = reports(gateway, source="gateway")[0]
    assert gw_row.org_id == gateway.org("bravo").id and gw_row.request_id == r.headers["x-request-id"]
    org_admin(gateway, "bravo", "admin@bravo.example")
    s, _ = login(gateway, "admin@bravo.example", "password-123")
    page = s.get(gateway.url + "/admin/errors?period=24h").text
    assert "bravo_only" in page and "test/error-500-nope" in page and "default_only" not in page
    admin, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = admin.get(gateway.url + "/admin/errors").text
    assert "bravo_only" in page and "default_only" in page


def test_failed_requests_become_error_reports_with_their_source(gateway):
    import openai

    sdk = gateway.sdk()
    with pytest.raises(openai.InternalServerError):
        sdk.chat.completions.create(model="test/error-503", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="no/such-model", messages=[{"role": "user", "content": "x"}])
    sdk.chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": "x"}])
    rows = reports(gateway)
    by_model = {r.model: r for r in rows}
    assert set(by_model) == {"test/error-503", "no/such-model"}  # the successful request is not an error
    assert by_model["test/error-503"].source == "upstream" and by_model["test/error-503"].status >= 500
    assert by_model["no/such-model"].source == "gateway" and by_model["no/such-model"].status == 404
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    page = s.get(gateway.url + "/admin/errors").text
    groups = page.split('id="error-groups"')[1].split("</table>")[0]
    assert "test/error-503" in groups and "no/such-model" in groups
    part = s.get(gateway.url + "/admin/errors?source=upstream", headers={"HX-Request": "true"}).text
    assert "test/error-503" in part and "no/such-model" not in part


def test_nul_characters_are_dropped_not_stored(gateway):
    r = gateway.post("/v1/error-reports", headers={"Content-Type": "application/json"},
                     data=b'{"type": "nul\\u0000type", "message": "a\\u0000b"}')
    assert r.status_code == 202
    [row] = reports(gateway)
    assert (row.type, row.message) == ("nultype", "ab")
