"""Exactly one ledger row per request (success, error, client disconnect), and credits that add up."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import requests
from sqlalchemy import create_engine, func, select, text

from gateway.ledger.pricing import usd_to_micros
from gateway.models import LedgerEntry
from tests.conftest import free_port, raw_socket_post, read_events, wait_for

MSG = [{"role": "user", "content": "hello there"}]


def test_success_row_has_everything(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    org = gateway.org()
    assert row.org_id == org.id and row.key_id is not None
    assert (row.endpoint, row.requested_model, row.model, row.provider, row.upstream_model) == (
        "chat.completions", "fast", "test/fake-gpt", "fake", "fake-gpt")
    assert (row.input_tokens, row.output_tokens, row.cached_tokens, row.status, row.cache) == (5, 4, 0, 200, "miss")
    assert (row.benchmark_micros, row.charge_micros, row.saved_micros) == (13000, 13000, 0)
    assert row.ttfb_ms is not None and not row.usage_estimated  # both timings recorded
    assert row.attempts == 1


def test_cached_prompt_tokens_are_priced_at_the_cached_price(gateway):
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="test/fake-cached", messages=MSG)
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    # 5 prompt tokens, 2 of them cached ($250/Mtok instead of $1000/Mtok), 4 output tokens at $2000/Mtok
    assert row.cached_tokens == 2
    assert row.charge_micros == 3 * 1000 + 2 * 250 + 4 * 2000
    # an OpenAI-kind provider cached them by itself: a direct call gets the same discount, so the
    # benchmark has it too and the gateway claims no saving for it
    assert row.benchmark_micros == row.charge_micros
    assert row.saved_micros == 0 and row.saved_by == "" and not row.benchmark_estimated
    assert raw.headers["x-gateway-saved"] == "0.000000"


def test_error_rows_are_recorded_uncharged(gateway):
    with pytest.raises(openai.NotFoundError):
        gateway.sdk().chat.completions.create(model="nope", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        gateway.sdk().chat.completions.create(model="test/error-429", messages=MSG)
    rows = gateway.rows()
    assert [(r.status, r.requested_model, r.charge_micros) for r in rows] == [(404, "nope", 0),
                                                                              (429, "test/error-429", 0)]
    assert rows[1].error_type == "rate_limit_error" and rows[1].provider == "fake"


def test_client_disconnect_mid_stream_still_gets_one_row(gateway, fake_openai):
    sock = raw_socket_post(gateway, {"model": "test/drip-30", "stream": True, "messages": MSG})
    read_events(sock, 4)
    sock.close()
    rows = wait_for(lambda: gateway.rows(endpoint="chat.completions"))
    (row,) = rows
    assert row.status == 499 and row.stream
    # no usage chunk arrived, so the row carries an estimate of what the upstream will bill
    assert row.usage_estimated and row.input_tokens > 0 and row.output_tokens >= 3
    assert row.charge_micros > 0
    # and the upstream stream was abandoned rather than read to the end
    stream = wait_for(lambda: fake_openai.streams and fake_openai.streams[-1]["closed_early"] and fake_openai.streams[-1])
    assert stream["chunks_sent"] < 50


def test_ledger_charges_equal_credits_consumed(gateway):
    before = gateway.org().credits_micros
    sdk = gateway.sdk()
    for i in range(5):
        sdk.chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": "x " * i}])
    list(sdk.chat.completions.create(model="test/fake-cached", messages=MSG, stream=True))
    with pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(model="test/error-503", messages=MSG)
    rows = wait_for(lambda: len(gateway.rows()) == 7 and gateway.rows())
    charged = sum(r.charge_micros for r in rows)
    assert charged > 0
    assert before - gateway.org().credits_micros == charged


def test_credits_run_out_then_402_without_overdraft(gateway_factory):
    """Each call holds its worst case first (prompt bound + max_tokens): once the balance cannot
    cover that, the call is refused before the upstream is asked, so the balance never goes negative."""
    gw = gateway_factory()
    gw.new_org("small", usd=0.1)  # about $0.013 per call, held at about $0.06
    key = gw.new_key("small")
    sdk = gw.sdk(key)
    served = 0
    with pytest.raises(openai.APIStatusError) as e:
        for _ in range(10):
            sdk.chat.completions.create(model="test/fake-gpt", messages=MSG, max_tokens=4)
            served += 1
    assert e.value.status_code == 402 and e.value.body["code"] == "insufficient_credits"
    gw.flush()
    assert served >= 2 and 0 <= gw.org("small").credits_micros < usd_to_micros(0.1)


def _ready(base: str) -> bool:
    try:
        return requests.get(base + "/readyz", timeout=2).ok
    except requests.ConnectionError:
        return False


def test_graceful_stop_flushes_every_row(tmp_path, fake_openai):
    """`gateway serve` on SIGTERM finishes in-flight work and writes every queued row before exit."""
    import yaml

    from tests.conftest import gateway_config

    instance = tmp_path / "inst"
    instance.mkdir()
    config = instance / "gw.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config))
    exe = str(Path(sys.executable).parent / "gateway")
    proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        key = None
        for line in proc.stdout:
            if "API key:" in line:
                key = line.split("API key:")[1].split()[0]
            if "Serving on" in line:
                break
        assert key
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base))
        sdk = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        for _ in range(20):
            sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    engine = create_engine(f"sqlite:///{instance / 'gateway.db'}")
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(LedgerEntry)) == 20
        spent = conn.scalar(text("SELECT 10000000 - credits_micros FROM org WHERE name = 'default'"))
        assert spent == conn.scalar(select(func.sum(LedgerEntry.charge_micros)))


def test_rows_that_cannot_be_written_are_spilled_and_replayed(gateway, monkeypatch):
    from gateway.ledger.writer import WRITER

    real_insert = WRITER._insert

    def broken(batch):
        raise RuntimeError("disk full")

    before = gateway.org().credits_micros
    monkeypatch.setattr(WRITER, "_insert", broken)
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    WRITER.flush()
    spill = gateway.instance / "ledger-spill.jsonl"
    assert spill.exists() and raw.headers["x-request-id"] in spill.read_text()
    assert gateway.org().credits_micros == before  # not yet settled...
    monkeypatch.setattr(WRITER, "_insert", real_insert)
    WRITER.replay_spill()  # ...as at the next start
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert not spill.exists()
    assert gateway.org().credits_micros == before - row.charge_micros
    WRITER.replay_spill()  # replaying twice never charges twice
    assert len(gateway.rows()) == 1


def test_usage_rollups_follow_the_ledger(gateway):
    from sqlalchemy import select

    from gateway import db
    from gateway.models import UsageRollup

    sdk = gateway.sdk()
    for _ in range(3):
        sdk.chat.completions.create(model="test/fake-cached", messages=MSG)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(model="test/error-429", messages=MSG)
    rows = gateway.rows()
    with db.session_scope() as s:
        rollups = {(r.model, r.mechanism): r for r in s.scalars(select(UsageRollup))}
    total = rollups[("test/fake-cached", "")]
    assert (total.requests, total.errors) == (3, 0)
    assert total.charge_micros == sum(r.charge_micros for r in rows if r.requested_model == "test/fake-cached")
    assert total.saved_micros == 0 and ("test/fake-cached", "prompt_cache") not in rollups  # the provider's caching
    assert (rollups[("test/error-429", "")].requests, rollups[("test/error-429", "")].errors) == (1, 1)


def test_usd_strings_equal_the_decimal_quantized_value():
    import random
    from decimal import Decimal

    from gateway.ledger.pricing import MTOK, usd

    rng = random.Random(7)
    values = [0, 1, -1, 999_999, 1_000_000, -1_000_000, 10**15, -(10**15) + 7]
    values += [rng.randint(-(10**13), 10**13) for _ in range(5000)]
    for v in values:
        assert usd(v) == str((Decimal(v) / MTOK).quantize(Decimal("0.000001"))), v
