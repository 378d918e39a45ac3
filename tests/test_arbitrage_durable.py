"""Deferred requests outlive their process: `gateway serve` as a real OS process defers requests, is
killed with SIGKILL before its flush, and a new process on the same SQLite database submits them,
settles them and answers each one once (one result, one ledger row, no hold left open). Two processes
sharing one database each defer requests; either answers any id, and each row goes to the provider
exactly once.

Real parts: the `gateway` console script in child processes, the fake OpenAI Batches upstream on
loopback (in this process), plain HTTP clients, the SQLite file read directly at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import free_port, gateway_config, wait_for

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DEFER = {"x-gateway-deadline": "86400"}


class Served:
    """One `gateway serve` process on the shared instance folder."""

    def __init__(self, folder: Path, name: str, **settings: str) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_INSTANCE=str(folder / "instance"), GATEWAY_CONFIG=str(folder / "gateway.yaml"),
                   GATEWAY_SECRET_KEY="durable-secret", GATEWAY_OLLAMA_PROBE_URL="", PYTHONPATH=str(ROOT),
                   GATEWAY_BATCH_ARBITRAGE_MIN_SECONDS="60", GATEWAY_BATCH_POLL_MIN_SECONDS="0",
                   GATEWAY_BATCH_POLL_MAX_SECONDS="1", **settings)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(BIN / "gateway"), "serve", "--port", str(self.port)], cwd=ROOT,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: "Serving on" in self.output() or self.proc.poll() is not None, timeout=120)
        assert self.proc.poll() is None, self.output()[-3000:]
        wait_for(self._ready, timeout=60)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def api_key(self) -> str:
        found = re.search(r"API key:\s+(gw-\S+)", self.output())
        assert found, self.output()[-2000:]
        return found.group(1)

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/readyz", timeout=2).ok
        except requests.ConnectionError:
            return False

    def defer(self, key: str, text_: str) -> str:
        r = requests.post(self.url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}", **DEFER},
                          json={"model": "batchy", "max_tokens": 20, "messages": [{"role": "user", "content": text_}]})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def result(self, key: str, rid: str) -> requests.Response:
        return requests.get(f"{self.url}/v1/requests/{rid}/result", timeout=30,
                            headers={"Authorization": f"Bearer {key}"})

    def account(self, key: str) -> dict:
        return requests.get(self.url + "/v1/account", timeout=30, headers={"Authorization": f"Bearer {key}"}).json()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture
def folder(tmp_path, fake_openai, fake_openai_batches):
    fake_openai_batches.reset()
    (tmp_path / "instance").mkdir()
    config = gateway_config(fake_openai.url, openai_batches_url=fake_openai_batches.url)
    (tmp_path / "gateway.yaml").write_text(yaml.safe_dump(config))
    started: list[Served] = []
    yield tmp_path, started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(timeout=30)
    fake_openai_batches.reset()


def _db(tmp_path: Path):
    return create_engine(f"sqlite:///{tmp_path / 'instance' / 'gateway.db'}")


def _submitted_lines(fake, ids: list[str]) -> list[str]:
    """Every line the provider received for these requests (a request sent twice shows twice)."""
    return [line["custom_id"] for b in list(fake.batches.values()) for line in b["lines"] if line["custom_id"] in ids]


def test_deferred_requests_survive_a_sigkill(folder, fake_openai_batches):
    tmp_path, started = folder
    # At most 6 per batch, and no flush by age: the first process never flushes its 5.
    first = Served(tmp_path, "first", GATEWAY_BATCH_ARBITRAGE_MAX_REQUESTS="6",
                   GATEWAY_BATCH_ARBITRAGE_MAX_AGE_SECONDS="3600")
    started.append(first)
    key = first.api_key()
    ids = [first.defer(key, f"before the crash {i}") for i in range(5)]
    held = first.account(key)["open_holds"]
    assert float(held) > 0 and first.result(key, ids[0]).json()["status"] == "queued"
    first.kill()  # no graceful stop: nothing flushed, the holds were memory only
    assert fake_openai_batches.batches == {}

    second = Served(tmp_path, "second", GATEWAY_BATCH_ARBITRAGE_MAX_REQUESTS="6",
                    GATEWAY_BATCH_ARBITRAGE_MAX_AGE_SECONDS="3600")
    started.append(second)
    assert second.account(key)["open_holds"] == held  # the holds are back before anything else is admitted
    assert {second.result(key, rid).json()["status"] for rid in ids} == {"queued"}
    ids.append(second.defer(key, "after the restart"))  # the sixth fills the batch: flushed by size
    wait_for(lambda: _submitted_lines(fake_openai_batches, ids), timeout=30)
    wait_for(lambda: all(second.result(key, rid).status_code == 200 for rid in ids), timeout=120)
    for rid in ids:
        got = second.result(key, rid)
        assert got.json()["choices"][0]["message"]["content"].startswith("Hello from fake")
        assert float(got.headers["x-gateway-saved"]) > 0
    assert sorted(_submitted_lines(fake_openai_batches, ids)) == sorted(ids)  # each sent once, in one batch
    assert len(fake_openai_batches.batches) == 1
    wait_for(lambda: float(second.account(key)["open_holds"]) == 0, timeout=30)  # every hold settled
    second.stop()
    with _db(tmp_path).connect() as c:
        rows = c.execute(text("SELECT request_id, charge_micros, saved_by FROM ledger_entry "
                              "WHERE endpoint = 'batches'")).all()
        assert sorted(r[0] for r in rows) == sorted(ids)  # exactly one ledger row each
        assert all("batch_arbitrage=" in r[2] for r in rows)
        states = c.execute(text("SELECT status, COUNT(*) FROM deferred_request GROUP BY status")).all()
        assert states == [("submitted", 6)]
        spent = c.execute(text("SELECT 10000000 - credits_micros FROM org WHERE name = 'default'")).scalar()
        assert spent == sum(r[1] for r in rows) > 0  # charged once: the balance moved by the ledger's charges


def test_two_processes_share_one_queue(folder, fake_openai_batches):
    tmp_path, started = folder
    a = Served(tmp_path, "a", GATEWAY_BATCH_ARBITRAGE_MAX_AGE_SECONDS="1")
    started.append(a)
    key = a.api_key()
    b = Served(tmp_path, "b", GATEWAY_BATCH_ARBITRAGE_MAX_AGE_SECONDS="1")
    started.append(b)
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit((a if i % 2 else b).defer, key, f"shared {i}") for i in range(24)]
        ids = [j.result() for j in jobs]
    assert len(set(ids)) == 24
    for i, rid in enumerate(ids):  # the process that did not take it knows it too
        other = b if i % 2 else a
        assert other.result(key, rid).status_code in (200, 202)
    wait_for(lambda: all((a if i % 2 else b).result(key, rid).status_code == 200 for i, rid in enumerate(ids)),
             timeout=120)
    for rid in ids:
        assert a.result(key, rid).json() == b.result(key, rid).json()
    assert sorted(_submitted_lines(fake_openai_batches, ids)) == sorted(ids)  # each row submitted once
    a.stop()
    b.stop()
    with _db(tmp_path).connect() as c:
        rows = c.execute(text("SELECT request_id FROM ledger_entry WHERE endpoint = 'batches'")).scalars().all()
        assert sorted(rows) == sorted(ids)
        assert c.execute(text("SELECT COUNT(*) FROM deferred_request WHERE status != 'submitted'")).scalar() == 0
