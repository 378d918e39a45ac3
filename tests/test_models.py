"""GET /v1/models and /v1/models/{slug}; /healthz and /readyz."""

import openai
import pytest
import requests

from tests.openapi import validate


def test_models_list_has_slugs_aliases_prices_and_context(gateway):
    r = requests.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {gateway.api_key}"})
    body = r.json()
    validate(body, "ListModelsResponse")
    by_id = {m["id"]: m for m in body["data"]}
    gpt = by_id["test/fake-gpt"]
    assert gpt["context_window"] == 8192 and gpt["owned_by"] == "test"
    assert gpt["pricing"] == {"input_per_mtok": "1000.000000", "output_per_mtok": "2000.000000",
                              "cached_input_per_mtok": "250.000000"}
    assert by_id["fast"]["alias_for"] == "test/fake-gpt"


def test_model_by_slug_keeps_its_slash(gateway):
    model = gateway.sdk().models.retrieve("test/fake-gpt")
    assert model.id == "test/fake-gpt"
    r = requests.get(gateway.v1 + "/models/test/fake-gpt", headers={"Authorization": f"Bearer {gateway.api_key}"})
    validate(r.json(), "Model")
    assert r.json()["routes"][0]["upstream_model"] == "fake-gpt"
    assert requests.get(gateway.v1 + "/models/fast", headers={
        "Authorization": f"Bearer {gateway.api_key}"}).json()["alias_for"] == "test/fake-gpt"


def test_unknown_model_and_missing_key(gateway):
    with pytest.raises(openai.NotFoundError) as e:
        gateway.sdk().models.retrieve("no/such-model")
    assert e.value.code == "model_not_found"
    assert requests.get(gateway.v1 + "/models").status_code == 401


def test_model_listing_never_shows_provider_keys(gateway):
    r = requests.get(gateway.v1 + "/models", headers={"Authorization": f"Bearer {gateway.api_key}"})
    assert "sk-upstream-test" not in r.text


def test_health_and_readiness(gateway):
    assert requests.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = requests.get(gateway.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "config": True}


def test_readiness_fails_when_the_database_is_gone(gateway):
    from gateway import db

    db.engine().dispose()
    (gateway.instance / "gateway.db").chmod(0o000)
    try:
        import os

        if os.geteuid() == 0:  # root reads anything: make the URL point nowhere instead
            from sqlalchemy import create_engine

            original = db._engine
            db._engine = create_engine("sqlite:////nonexistent/dir/x.db")
            try:
                r = requests.get(gateway.url + "/readyz")
            finally:
                db._engine = original
        else:
            r = requests.get(gateway.url + "/readyz")
        assert r.status_code == 503 and r.json()["checks"]["database"] is False
    finally:
        (gateway.instance / "gateway.db").chmod(0o644)
