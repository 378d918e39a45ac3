"""Two workers, one gateway, on the scaled-out engines: the shared caches, in-flight dedupe, responses
store, breakers and credits seen from the other worker, and a Redis outage that only degrades.

Real parts: a private PostgreSQL cluster (Debian's binaries, tests/test_postgres.py's fixture) and
Debian's redis-server on private ports; two gunicorn masters with one gevent worker each (the
gateway's worker class, app.py), so every request goes to the worker the test means (two
processes sharing PostgreSQL and Redis are exactly two workers); the CLI for setup; the fake
OpenAI upstream on loopback, which records every call it gets; plain HTTP clients.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import UPSTREAM_KEY, free_port, gateway_config, wait_for
from tests.redis_server import running_redis
from tests.test_postgres import pg_cluster  # noqa: F401  (the session's private PostgreSQL)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


MAKE_ORGS = """
import sys, uuid
from gateway import boot, create_app, db
from gateway.ledger.pricing import usd_to_micros
from gateway.services import tenancy
app = create_app({"start_jobs": False})
boot.connect_shared(app.extensions["settings"])
with app.app_context(), db.session_scope() as s:
    for usd in sys.argv[1:]:
        org = tenancy.create_org(s, "org-" + uuid.uuid4().hex[:8], usd_to_micros(float(usd)), actor="test")
        print(f"{float(usd)},{org.name},{tenancy.create_key(s, org, name='k', actor='test').secret}")
"""


class Worker:
    """One gunicorn master with one gevent worker."""

    def __init__(self, name: str, folder: Path, env: dict) -> None:
        self.name, self.folder, self.env = name, folder, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-k", "gateway.gunicorn_worker.Worker", "-w", "1", "-b", f"127.0.0.1:{self.port}",
             "--graceful-timeout", "10", "app:app"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.folder / f"{self.name}.err", "wb"))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"worker {self.name} did not start: " + (self.folder / f"{self.name}.err").read_text()[-3000:])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None

    def get(self, key: str, path: str) -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": f"Bearer {key}"}, timeout=10)

    def post(self, key: str, body: dict, path: str = "/v1/chat/completions", **headers) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=60,
                             headers={"Authorization": f"Bearer {key}", **headers})

    def chat(self, key: str, content: str, model: str = "test/cheap", **headers) -> requests.Response:
        return self.post(key, {"model": model, "max_tokens": 5, "temperature": 0,
                               "messages": [{"role": "user", "content": content}]}, **headers)


class Pair:
    def __init__(self, folder: Path, upstream_url: str, database_url: str, redis_url: str) -> None:
        config = gateway_config(upstream_url)
        config["routing"] = {"retries": 0, "breaker_failures": 2, "breaker_cooldown_seconds": 300}
        config["savings"] = {"semantic_cache": {"enabled": False, "embeddings_model": "test/embed"}}  # on per request
        (folder / "gateway.yaml").write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "GATEWAY_INSTANCE": str(folder / "instance"), "GATEWAY_SECRET_KEY": "pair-secret",
                    "GATEWAY_CONFIG": str(folder / "gateway.yaml"), "GATEWAY_DATABASE_URL": database_url,
                    "GATEWAY_REDIS_URL": redis_url, "GATEWAY_WORKERS": "2", "PYTHONPATH": str(ROOT)}
        self.database_url = database_url
        self.a = Worker("a", folder, self.env)
        self.b = Worker("b", folder, self.env)

    def cli(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "gateway"), *args], capture_output=True, text=True, env=self.env,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def make_orgs(self, credits: list[float]) -> None:
        """Orgs with these credits (USD) and a key each, made in one process (the CLI starts slowly)."""
        proc = subprocess.run([sys.executable, "-c", MAKE_ORGS, *map(str, credits)], capture_output=True, text=True,
                              env=self.env, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        self.orgs = {float(c): [] for c in credits}
        for line in proc.stdout.split():
            usd, name, key = line.split(",")
            self.orgs[float(usd)].append((name, key))

    def org(self, credits: float = 100.0) -> tuple[str, str]:
        """A fresh org (of those made at start) and its key, once both workers know it: (name, key)."""
        name, key = self.orgs[credits].pop()
        for worker in (self.a, self.b):
            wait_for(lambda w=worker: w.get(key, "/v1/models").status_code == 200, timeout=15, interval=0.1)
        return name, key


@pytest.fixture(scope="module")
def pair(tmp_path_factory, fake_openai, pg_cluster):  # noqa: F811
    assert fake_openai.api_key == UPSTREAM_KEY
    name = f"gw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_cluster.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    folder = tmp_path_factory.mktemp("pair")
    with running_redis(tmp_path_factory.mktemp("redis")) as redis_server:
        p = Pair(folder, fake_openai.url, pg_cluster.url(name), redis_server.url)
        p.redis = redis_server
        p.cli("init")
        p.make_orgs([100.0] * 14 + [0.02])
        p.a.start()
        p.b.start()
        try:
            yield p
        finally:
            p.a.stop()
            p.b.stop()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def upstream_calls(fake, needle: str) -> int:
    """Chat calls the fake upstream got whose messages mention `needle`."""
    return sum(1 for r in list(fake.requests) if r["path"].endswith("/chat/completions")
               and needle in str((r["body"] or {}).get("messages")))


def test_an_answer_cached_by_one_worker_is_a_hit_on_the_other_and_only_for_its_org(pair, fake_openai):
    _, key = pair.org()
    _, other = pair.org()
    question = f"exact {uuid.uuid4().hex}"
    first = pair.a.chat(key, question)
    assert first.status_code == 200 and first.headers["x-gateway-cache"] == "miss"
    second = pair.b.chat(key, question)
    assert second.status_code == 200 and second.headers["x-gateway-cache"] == "hit"
    assert second.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
    assert upstream_calls(fake_openai, question) == 1
    theirs = pair.b.chat(other, question)  # the same request from another org: never A's entry
    assert theirs.status_code == 200 and theirs.headers["x-gateway-cache"] == "miss"
    assert upstream_calls(fake_openai, question) == 2


def test_ten_identical_requests_on_two_workers_make_one_upstream_call(pair, fake_openai):
    _, key = pair.org()
    _, other = pair.org()
    question = f"dedupe {uuid.uuid4().hex}"
    body = {"model": "test/slow-1000", "max_tokens": 5, "temperature": 0, "messages": [{"role": "user", "content": question}]}
    targets = [(pair.a if i % 2 else pair.b, key) for i in range(10)] + [(pair.b, other), (pair.a, other)]
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda t: t[0].post(t[1], body), targets))
    assert [r.status_code for r in replies] == [200] * 12
    mine = replies[:10]
    assert len({r.json()["choices"][0]["message"]["content"] for r in mine}) == 1
    caches = sorted(r.headers["x-gateway-cache"] for r in mine)
    assert caches.count("miss") == 1 and set(caches) <= {"miss", "dedupe", "hit"}, caches
    # one call for the ten, one for the other org's two (never served another org's flight)
    assert upstream_calls(fake_openai, question) == 2


def test_a_stream_is_followed_live_from_the_other_worker(pair, fake_openai):
    _, key = pair.org()
    question = f"stream {uuid.uuid4().hex}"
    body = {"model": "test/drip-100", "stream": True, "max_tokens": 5, "temperature": 0,
            "messages": [{"role": "user", "content": question}]}
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda w: w.post(key, body), [pair.a, pair.b] * 3))
    assert [r.status_code for r in replies] == [200] * 6

    def content(r: requests.Response) -> str:
        out = []
        for line in r.text.splitlines():
            if line.startswith("data: {"):
                chunk = yaml.safe_load(line[6:])
                out += [c["delta"].get("content") or "" for c in chunk.get("choices") or []]
        return "".join(out)

    texts = {content(r) for r in replies}
    assert len(texts) == 1 and texts != {""}
    assert upstream_calls(fake_openai, question) == 1


def test_a_response_deleted_on_one_worker_is_gone_on_the_other(pair):
    _, key = pair.org()
    _, other = pair.org()
    made = pair.a.post(key, {"model": "test/cheap", "input": "remember the plan", "max_output_tokens": 16},
                       path="/v1/responses")
    assert made.status_code == 200
    rid = made.json()["id"]
    seen = requests.get(f"{pair.b.url}/v1/responses/{rid}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert seen.status_code == 200 and seen.json()["id"] == rid  # B has it now (and remembers it)
    stranger = requests.get(f"{pair.b.url}/v1/responses/{rid}", headers={"Authorization": f"Bearer {other}"},
                            timeout=10)
    assert stranger.status_code == 404  # another org: unknown, through Redis too
    gone = requests.delete(f"{pair.a.url}/v1/responses/{rid}", headers={"Authorization": f"Bearer {key}"},
                           timeout=10)
    assert gone.status_code == 200 and gone.json()["deleted"] is True
    for worker in (pair.a, pair.b):
        again = requests.get(f"{worker.url}/v1/responses/{rid}", headers={"Authorization": f"Bearer {key}"},
                             timeout=10)
        assert again.status_code == 404, worker.name
        follow = worker.post(key, {"model": "test/cheap", "input": "go on", "previous_response_id": rid},
                             path="/v1/responses")
        assert follow.status_code == 404 and follow.json()["error"]["code"] == "previous_response_not_found"


def test_a_breaker_opened_by_one_workers_failures_skips_the_route_on_the_other(pair, fake_openai):
    _, key = pair.org()

    def failing_calls() -> int:
        return sum(1 for r in list(fake_openai.requests) if (r["body"] or {}).get("model") == "error-500")

    for i in range(2):  # breaker_failures: 2; each request falls back to test/cheap and is answered
        r = pair.a.chat(key, f"breaker {i} {uuid.uuid4().hex}", model="test/error-500")
        assert r.status_code == 200
    before = failing_calls()
    time.sleep(0.3)  # the announcement crosses Redis pub/sub
    on_b = pair.b.chat(key, f"breaker on b {uuid.uuid4().hex}", model="test/error-500")
    assert on_b.status_code == 200  # answered by the fallback
    assert failing_calls() == before  # B never tried the route A's failures opened
    pair.b.stop()  # a worker that starts during the cooldown learns of the open breaker too
    pair.b.start()
    restarted = pair.b.chat(key, f"breaker after restart {uuid.uuid4().hex}", model="test/error-500")
    assert restarted.status_code == 200 and failing_calls() == before


def test_credits_used_up_through_one_worker_refuse_on_the_other(pair):
    _, key = pair.org(credits=0.02)
    statuses = []
    for i in range(40):
        statuses.append(pair.a.chat(key, f"spend {i} {uuid.uuid4().hex}").status_code)
        if statuses[-1] == 402:
            break
    assert statuses[-1] == 402 and 200 in statuses
    refused = pair.b.chat(key, f"spend on b {uuid.uuid4().hex}")  # the very next request, on the other worker
    assert refused.status_code == 402 and refused.json()["error"]["type"] == "insufficient_quota"


def test_a_semantic_entry_made_on_one_worker_answers_on_the_other(pair, fake_openai):
    _, key = pair.org()
    _, other = pair.org()
    question = f"what is the capital of {uuid.uuid4().hex}"
    semantic = {"x-gateway-exact-cache": "off", "x-gateway-semantic-cache": "on"}
    first = pair.a.chat(key, question, **semantic)
    assert first.status_code == 200 and first.headers["x-gateway-cache"] == "miss"
    time.sleep(1.0)  # A embeds and stores its answer after replying, then tells the other workers
    hit = pair.b.chat(key, question, **semantic)
    assert hit.status_code == 200 and hit.headers["x-gateway-cache"] == "semantic"
    assert upstream_calls(fake_openai, question) == 1
    theirs = pair.b.chat(other, question, **semantic)  # another org's partition: never A's entry
    assert theirs.status_code == 200 and theirs.headers["x-gateway-cache"] == "miss"


def test_a_redis_outage_degrades_and_never_fails_requests(pair):
    """Last: it stops the module's Redis (and starts it again)."""
    _, key = pair.org()
    pair.redis.stop()
    try:
        for i in range(6):
            for worker in (pair.a, pair.b):
                r = worker.chat(key, f"outage {i} {uuid.uuid4().hex}")
                assert r.status_code == 200, (worker.name, r.text)
        health = requests.get(pair.a.url + "/healthz", timeout=5).json()
        assert health["status"] == "ok" and health["shared"]["redis"] == "down" and health["warnings"]
    finally:
        pair.redis.start()
    wait_for(lambda: requests.get(pair.a.url + "/healthz", timeout=5).json()["shared"]["redis"] == "up"
             or pair.a.chat(key, f"back {uuid.uuid4().hex}").status_code != 200, timeout=20, interval=0.5)
    assert requests.get(pair.a.url + "/healthz", timeout=5).json()["shared"]["redis"] == "up"
