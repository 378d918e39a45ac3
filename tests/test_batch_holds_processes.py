"""Two gateways on one SQLite database, without Redis: the one that accepts a batch (and deferred
requests) does not poll; the other's poll job settles them. The accepting process releases its own
in-memory holds once the database says the batches are settled, without a restart.

Real parts: this test's gateway (conftest's gateway_factory, its scheduler off, as a worker that
loses every poll tick), `gateway serve` as a second OS process on the same instance folder with its
scheduler on, the fake OpenAI Batches upstream on loopback, the official `openai` SDK and plain HTTP.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import requests
from sqlalchemy import select

from gateway import db
from gateway.models import Batch, DeferredRequest
from gateway.services import batch_settle
from tests.conftest import free_port, wait_for
from tests.test_batches import held, line, submit

ROOT = Path(__file__).resolve().parent.parent


def serve_beside(gw, tmp_path: Path) -> subprocess.Popen:
    """`gateway serve` on the test gateway's instance folder and config: the other process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_INSTANCE=str(gw.config_path.parent), GATEWAY_CONFIG=str(gw.config_path),
               GATEWAY_SECRET_KEY="test-secret", GATEWAY_OLLAMA_PROBE_URL="", PYTHONPATH=str(ROOT),
               GATEWAY_BATCH_POLL_MIN_SECONDS="0", GATEWAY_BATCH_POLL_MAX_SECONDS="0",
               GATEWAY_BATCH_ARBITRAGE_MIN_SECONDS="60", GATEWAY_BATCH_ARBITRAGE_MAX_AGE_SECONDS="3600")
    log = open(tmp_path / "other.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gateway"), "serve", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "other.log").read_text()[-3000:]
        try:
            return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).ok
        except requests.ConnectionError:
            return False

    wait_for(ready, timeout=120, interval=0.2)
    return proc


def test_holds_of_batches_settled_by_another_process_are_released(gateway_factory, fake_openai_batches, tmp_path):
    fake_openai_batches.reset()
    gw = gateway_factory(batch_poll_min_seconds=0, batch_poll_max_seconds=0, batch_arbitrage_min_seconds=60,
                         batch_arbitrage_max_age_seconds=0.2)
    org = gw.org()
    other = serve_beside(gw, tmp_path)
    try:
        sdk = gw.sdk()
        b = submit(sdk, [line("a"), line("b")])  # accepted here, its hold in this process
        deferred = [requests.post(gw.v1 + "/chat/completions", timeout=30,
                                  headers={"Authorization": f"Bearer {gw.api_key}", "x-gateway-deadline": "86400"},
                                  json={"model": "batchy", "max_tokens": 20,
                                        "messages": [{"role": "user", "content": f"later {i}"}]})
                    for i in range(3)]
        assert [r.status_code for r in deferred] == [202] * 3
        assert held(org.id) > 0

        def settled() -> bool:
            with db.session_scope() as s:
                ids = set(s.scalars(select(DeferredRequest.batch_id).where(DeferredRequest.batch_id.is_not(None))))
                return len(ids) >= 1 and all(x.settled for x in s.scalars(select(Batch)))

        # Only the other process polls: it settles both batches in the database
        wait_for(settled, timeout=180, interval=0.5)
        assert sdk.batches.retrieve(b.id).status == "completed"
        # ...and this process lets go of what it held for them, without a restart
        wait_for(lambda: held(org.id) == 0, timeout=60, interval=0.2)
        assert batch_settle.HOLDS == {}
        for r in deferred:
            got = requests.get(f"{gw.v1}/requests/{r.json()['id']}/result", timeout=30,
                               headers={"Authorization": f"Bearer {gw.api_key}"})
            assert got.status_code == 200, got.text
    finally:
        other.kill()
        other.wait(timeout=30)
        fake_openai_batches.reset()
