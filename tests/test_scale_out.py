"""Several workers, one gateway: two `gunicorn -k gevent` workers with GATEWAY_REDIS_URL share their
holds, budgets and rate limits through a real Redis, exactly within one request; a Redis outage
degrades to per-worker limits and never fails a request.

Real parts: Debian's redis-server on a private port, gunicorn with two gevent workers serving
app.py, the CLI for setup, the fake OpenAI upstream on loopback, plain HTTP clients. Which worker
served each request is read from gunicorn's access log (`%(p)s`, the worker's pid).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text

from tests.conftest import UPSTREAM_KEY, gateway_config
from tests.redis_server import running_redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODEL = "test/cheap"  # $100 / $200 per Mtok: a short request costs about $0.002, its hold about $0.006


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, folder: Path, upstream_url: str, redis_url: str) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.access_log = folder / "access.log"
        config = gateway_config(upstream_url)
        config["plans"] = [{"name": "tight", "rpm": 6}]
        (folder / "gateway.yaml").write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "GATEWAY_INSTANCE": str(folder / "instance"),
                    "GATEWAY_CONFIG": str(folder / "gateway.yaml"), "GATEWAY_SECRET_KEY": "scale-secret",
                    "GATEWAY_REDIS_URL": redis_url, "GATEWAY_WORKERS": "2", "PYTHONPATH": str(ROOT)}
        self.proc: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, env=self.env,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def key(self, org: str) -> str:
        return re.search(r"gw-[A-Za-z0-9_\-]+", self.cli("key", "create", "--org", org)).group(0)

    def start(self) -> None:
        self.cli("init")
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-k", "gateway.gunicorn_worker.Worker", "-w", "2", "-b", f"127.0.0.1:{self.port}",
             "--access-logfile", str(self.access_log), "--access-logformat", "%(p)s %(s)s",
             "--graceful-timeout", "10", "app:app"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.folder / "gunicorn.err", "wb"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code < 500:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start: " + (self.folder / "gunicorn.err").read_text()[-2000:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def chat(self, key: str, max_tokens: int = 5) -> requests.Response:
        return requests.post(self.url + "/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {key}"},
                             json={"model": MODEL, "max_tokens": max_tokens,
                                   "messages": [{"role": "user", "content": "hello"}]})

    def workers_seen(self, since: int = 0) -> set[str]:
        lines = self.access_log.read_text().splitlines()[since:] if self.access_log.exists() else []
        return {line.split()[0] for line in lines if line.strip()}

    def log_lines(self) -> int:
        return len(self.access_log.read_text().splitlines()) if self.access_log.exists() else 0

    def db(self):
        return create_engine(f"sqlite:///{self.folder / 'instance' / 'gateway.db'}")

    def org_money(self, org: str) -> tuple[int, int]:
        """(balance now, sum of its ledger charges), once the workers' writers have flushed."""
        time.sleep(1.0)  # each writer flushes at least every 250 ms
        with self.db().connect() as c:
            org_id, balance = c.execute(text("SELECT id, credits_micros FROM org WHERE name = :n"), {"n": org}).one()
            charged = c.execute(text("SELECT COALESCE(SUM(charge_micros), 0) FROM ledger_entry WHERE org_id = :o"),
                                {"o": org_id}).scalar()
        return balance, charged


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, fake_openai, redis_server):
    assert fake_openai.api_key == UPSTREAM_KEY
    c = Cluster(tmp_path_factory.mktemp("cluster"), fake_openai.url, redis_server.url)
    c.start()
    yield c
    c.stop()


def _burst(cluster: Cluster, key: str, n: int, concurrency: int = 24) -> list[requests.Response]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: cluster.chat(key), range(n)))


def test_credits_never_overdraw_across_workers(cluster):
    """A balance that covers a few dozen requests, and a burst of 150 over both workers: the shared
    hold admits exactly what the credits cover, and the charges equal the credits consumed."""
    cluster.cli("org", "create", "tiny", "--credits", "0.2")
    key = cluster.key("tiny")
    start_balance, _ = cluster.org_money("tiny")
    since = cluster.log_lines()
    replies = _burst(cluster, key, 150)
    statuses = [r.status_code for r in replies]
    assert set(statuses) <= {200, 402}, statuses
    assert statuses.count(200) > 0 and statuses.count(402) > 0
    assert len(cluster.workers_seen(since)) == 2  # both workers served the burst
    for r in replies:
        if r.status_code == 402:
            assert r.json()["error"]["type"] == "insufficient_quota"
    balance, charged = cluster.org_money("tiny")
    assert balance >= 0  # never overdrawn
    assert start_balance - balance == charged  # every charge is in the ledger, once


def test_a_budget_used_up_through_one_worker_refuses_on_the_other(cluster):
    cluster.cli("org", "create", "budgeted", "--credits", "10")
    cluster.cli("budget", "set", "--org", "budgeted", "--usd", "0.05", "--window", "day")
    key = cluster.key("budgeted")
    time.sleep(1.5)  # the change log reaches both workers within a second
    since = cluster.log_lines()
    replies = _burst(cluster, key, 80)
    statuses = [r.status_code for r in replies]
    assert statuses.count(200) > 0 and statuses.count(429) > 0
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in replies if r.status_code == 429)
    assert len(cluster.workers_seen(since)) == 2
    # Holds count the worst case; what they did not use frees room again, until the cap is spent.
    for _ in range(40):
        if cluster.chat(key).status_code == 429:
            break
    after = [cluster.chat(key).status_code for _ in range(10)]
    assert after == [429] * 10  # whichever worker answers
    _, charged = cluster.org_money("budgeted")
    assert 40_000 < charged <= 50_000  # $0.05 in micro-dollars: spent up to the cap, never past it


def test_rate_limits_are_one_bucket_across_workers(cluster):
    cluster.cli("org", "create", "limited", "--credits", "10", "--plan", "tight")  # rpm 6
    key = cluster.key("limited")
    time.sleep(1.5)
    since = cluster.log_lines()
    replies = _burst(cluster, key, 30, concurrency=10)
    ok = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert 6 <= len(ok) <= 7  # one bucket of 6 (a refill of a fraction during the burst at most)
    assert len(ok) + len(limited) == 30 and len(cluster.workers_seen(since)) == 2
    r = limited[0]
    assert r.headers["x-ratelimit-limit-requests"] == "6" and int(r.headers["retry-after"]) >= 1


def test_a_redis_outage_degrades_and_never_fails_requests(cluster, redis_server):
    cluster.cli("org", "create", "steady", "--credits", "10")
    key = cluster.key("steady")
    time.sleep(1.5)
    assert cluster.chat(key).status_code == 200
    redis_server.stop()
    try:
        statuses = [cluster.chat(key).status_code for _ in range(10)]
        assert statuses == [200] * 10  # per-worker limits: still served
    finally:
        redis_server.start()
    time.sleep(5.5)  # the link retries after its back-off
    assert cluster.chat(key).status_code == 200
