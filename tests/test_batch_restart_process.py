"""A gateway killed mid-batch (SIGKILL, a real OS process) and started again on the same SQLite file
loses nothing and charges nothing twice.

Real parts: `gateway serve` as a child process (twice, on one instance folder), the fake OpenAI and
Anthropic batch APIs and a counting OpenAI-compatible upstream in this test process on loopback,
the official `openai` and `anthropic` SDKs as clients, and the SQLite file read directly afterwards.

The scheduler polls every 5 seconds in the child (its real interval), so these tests wait for ticks:
they assert outcomes, never how long anything took.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anthropic
import gevent
import gevent.event
import openai
import orjson
import pytest
import requests
import yaml
from gevent.pywsgi import WSGIServer
from sqlalchemy import create_engine, select, text, update
from sqlalchemy.orm import Session

from gateway.models import Batch, BatchPart, BatchRequest, LedgerEntry
from tests.conftest import free_port, gateway_config, wait_for
from tests.test_batches import jsonl, line

START_CREDITS = 10_000_000  # the first run's $10


class CountingUpstream:
    """OpenAI chat completions that count every call by its last message's text; the texts in
    `block` wait (their first call only) until `release` is set: a request in flight at the kill."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.block: set[str] = set()
        self.release = gevent.event.Event()

    def wsgi(self, environ, start_response):
        body = orjson.loads(environ["wsgi.input"].read() or b"{}")
        said = body["messages"][-1]["content"]
        self.calls[said] += 1
        if said in self.block and self.calls[said] == 1:
            self.release.wait(120)
        reply = orjson.dumps({
            "id": f"chatcmpl-{said}-{self.calls[said]}", "object": "chat.completion", "created": 1,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                 "message": {"role": "assistant", "content": f"done: {said}"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}})
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(reply)))])
        return [reply]


@pytest.fixture
def counting():
    fake = CountingUpstream()
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    fake.url = f"http://127.0.0.1:{server.server_port}/v1"
    yield fake
    fake.release.set()
    server.stop(timeout=2)


class Process:
    """`gateway serve` on one instance folder, started, killed and started again."""

    def __init__(self, folder: Path, config: dict, **env) -> None:
        self.instance = folder / "instance"
        self.instance.mkdir()
        (self.instance / "gateway.yaml").write_text(yaml.safe_dump(config))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env.update(GATEWAY_INSTANCE=str(self.instance), GATEWAY_CONFIG=str(self.instance / "gateway.yaml"),
                        GATEWAY_SECRET_KEY="restart-secret", GATEWAY_BATCH_POLL_MIN_SECONDS="0",
                        GATEWAY_BATCH_POLL_MAX_SECONDS="0", **env)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.key: str | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = self.instance.parent / f"serve{self.starts}.log"
        self.proc = subprocess.Popen([str(Path(sys.executable).parent / "gateway"), "serve", "--port", str(self.port)],
                                     env=self.env, stdout=open(out, "wb"), stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited: " + out.read_text()[-3000:])
            try:
                return requests.get(self.url + "/readyz", timeout=2).ok
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=90, interval=0.2)
        if self.key is None:
            self.key = next(x.split("API key:")[1].split()[0] for x in out.read_text().splitlines() if "API key:" in x)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.key, max_retries=0)

    def anthropic(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=self.key, max_retries=0)

    def account(self) -> dict:
        return requests.get(self.url + "/v1/account", headers={"Authorization": f"Bearer {self.key}"}, timeout=10).json()

    def db(self) -> Session:
        return Session(create_engine(f"sqlite:///{self.instance / 'gateway.db'}"))


def check_money(gw: Process, batch_ids: list[str], succeeded: int, pct: int) -> None:
    """Ledger rows equal exactly the succeeded requests, at `pct` of their price, once each; the
    batches are settled, no hold is left open, and the balance moved by exactly the charges."""
    def written() -> bool:
        with gw.db() as s:
            return s.scalar(text("SELECT count(*) FROM ledger_entry WHERE endpoint LIKE '%batches'")) >= succeeded

    wait_for(written, timeout=30, interval=0.2)
    with gw.db() as s:
        batches = list(s.scalars(select(Batch).where(Batch.public_id.in_(batch_ids))))
        assert len(batches) == len(batch_ids) and all(b.settled for b in batches)
        reqs = list(s.scalars(select(BatchRequest).where(BatchRequest.batch_id.in_([b.id for b in batches]))))
        done = {r.request_id: r for r in reqs if r.status == "succeeded"}
        rows = list(s.scalars(select(LedgerEntry).where(LedgerEntry.endpoint.like("%batches"))))
        assert len(done) == succeeded
        assert sorted(r.request_id for r in rows) == sorted(done)  # none missing, none twice
        for row in rows:
            full = (row.input_tokens * 1000 + row.output_tokens * 2000) if row.provider != "fakeanthropicbatch" else \
                (row.input_tokens * 3000 + row.output_tokens * 15000)
            assert row.benchmark_micros == full
            assert row.charge_micros == ((full * pct + 99) // 100 if pct < 100 else full)
            assert row.charge_micros == done[row.request_id].charge_micros
        charged = sum(r.charge_micros for r in rows)

    def balance() -> int:
        with gw.db() as s:
            return s.scalar(text("SELECT credits_micros FROM org WHERE name = 'default'"))

    wait_for(lambda: START_CREDITS - balance() == charged, timeout=30, interval=0.2)
    assert gw.account()["open_holds"] == "0.000000"


def test_provider_batches_survive_a_kill_mid_batch(tmp_path, fake_openai, fake_openai_batches, fake_anthropic_batches):
    config = gateway_config(fake_openai.url, openai_batches_url=fake_openai_batches.url,
                            anthropic_batches_url=fake_anthropic_batches.url)
    gw = Process(tmp_path, config)
    known = set(fake_openai_batches.batches)
    try:
        gw.start()
        sdk, claude = gw.openai(), gw.anthropic()
        f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("a"), line("b"),
                                                                 line("c", "batch-test/error-400")]))),
                             purpose="batch")
        ob = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        ab = claude.messages.batches.create(requests=[
            {"custom_id": cid, "params": {"model": "abatch-test/claude-batch", "max_tokens": 64,
                                          "messages": [{"role": "user", "content": f"hello {cid}"}]}}
            for cid in ("x", "y")])
        # The providers are mid-way: in progress, and staying there while the gateway dies
        fake_openai_batches.hold = fake_anthropic_batches.hold = True
        (upstream,) = set(fake_openai_batches.batches) - known
        fake_openai_batches.batches[upstream]["object"]["status"] = "in_progress"
        wait_for(lambda: sdk.batches.retrieve(ob.id).status == "in_progress", timeout=60, interval=0.5)
        assert claude.messages.batches.retrieve(ab.id).processing_status == "in_progress"
        held = gw.account()["open_holds"]
        assert held != "0.000000"

        gw.kill()
        gw.start()  # a new process on the same database
        assert gw.account()["open_holds"] == held  # the open batches' holds, back
        fake_openai_batches.hold = fake_anthropic_batches.hold = False

        done = wait_for(lambda: (b := sdk.batches.retrieve(ob.id)).status == "completed" and b, timeout=90, interval=0.5)
        ended = wait_for(lambda: (b := claude.messages.batches.retrieve(ab.id)).processing_status == "ended" and b,
                         timeout=90, interval=0.5)
        assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        assert ended.request_counts.succeeded == 2
        check_money(gw, [ob.id, ab.id], succeeded=4, pct=50)
        out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
        assert sorted(o["custom_id"] for o in out) == ["a", "b"]
        assert {r.custom_id: r.result.type for r in claude.messages.batches.results(ab.id)} == \
            {"x": "succeeded", "y": "succeeded"}
        assert len(fake_openai_batches.batches) == len(known) + 1  # submitted once, never again
    finally:
        gw.stop()
        fake_openai_batches.reset()
        fake_anthropic_batches.reset()


def test_a_gateway_run_batch_resumes_without_resending_what_was_done(tmp_path, fake_openai, counting):
    config = gateway_config(fake_openai.url)
    config["providers"].append({"name": "counted", "kind": "openai", "base_url": counting.url, "api_key": "sk-c",
                                "allow_private": True, "batch_api": False})
    config["models"].append({"slug": "counted/fake-gpt", "routes": [
        {"provider": "counted", "upstream_model": "fake-gpt", "input_per_mtok": 1000, "output_per_mtok": 2000}]})
    gw = Process(tmp_path, config, GATEWAY_BATCH_CONCURRENCY="1")
    texts = [f"request r{i}" for i in range(5)]
    counting.block = {"request r2"}  # in flight when the process dies
    try:
        gw.start()
        sdk = gw.openai()
        f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line(f"r{i}", "counted/fake-gpt", text=t)
                                                                 for i, t in enumerate(texts)]))), purpose="batch")
        b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        wait_for(lambda: counting.calls["request r2"] == 1, timeout=60, interval=0.1)
        with gw.db() as s:
            states = dict(s.execute(select(BatchRequest.custom_id, BatchRequest.status)).all())
        assert states == {"r0": "succeeded", "r1": "succeeded", "r2": "pending", "r3": "pending", "r4": "pending"}

        held = gw.account()["open_holds"]
        gw.kill()
        counting.release.set()
        with gw.db() as s:  # the dead process's lease on the part has run out (LEASE_SECONDS later)
            s.execute(update(BatchPart).values(next_poll_at=None))
            s.commit()
        gw.start()
        assert gw.account()["open_holds"] == held != "0.000000"

        done = wait_for(lambda: (x := sdk.batches.retrieve(b.id)).status == "completed" and x, timeout=90, interval=0.5)
        assert done.request_counts.completed == 5
        # What was done is not sent again; what was pending ran once; the one in flight at the kill
        # was sent again (its answer never reached the gateway) and is charged once
        assert counting.calls == Counter({"request r0": 1, "request r1": 1, "request r2": 2, "request r3": 1,
                                          "request r4": 1})
        check_money(gw, [b.id], succeeded=5, pct=100)
        out = [orjson.loads(x) for x in sdk.files.content(done.output_file_id).content.splitlines()]
        assert sorted(o["custom_id"] for o in out) == [f"r{i}" for i in range(5)]
    finally:
        gw.stop()


def test_a_kill_between_storing_and_submitting_loses_nothing(tmp_path, fake_openai, fake_openai_batches,
                                                            fake_anthropic_batches):
    """The process dies while its providers hold the new batches but before it heard back: the next
    process submits each stored part once its lease has run out. OpenAI's batch is found by the part's
    name in its metadata and adopted; Anthropic's (no metadata) is sent again, and still charged once."""
    config = gateway_config(fake_openai.url, openai_batches_url=fake_openai_batches.url,
                            anthropic_batches_url=fake_anthropic_batches.url)
    gw = Process(tmp_path, config)
    fake_openai_batches.reset()
    fake_anthropic_batches.reset()
    fake_openai_batches.stall_create = gevent.event.Event()
    fake_anthropic_batches.stall_create = gevent.event.Event()
    try:
        gw.start()
        sdk, claude = gw.openai(), gw.anthropic()
        f = sdk.files.create(file=("in.jsonl", io.BytesIO(jsonl([line("a"), line("b")]))), purpose="batch")
        calls = [gevent.spawn(sdk.batches.create, input_file_id=f.id, endpoint="/v1/chat/completions",
                              completion_window="24h"),
                 gevent.spawn(claude.messages.batches.create, requests=[
                     {"custom_id": cid, "params": {"model": "abatch-test/claude-batch", "max_tokens": 64,
                                                   "messages": [{"role": "user", "content": f"hello {cid}"}]}}
                     for cid in ("x", "y")])]
        wait_for(lambda: len(fake_openai_batches.batches) == 1 and len(fake_anthropic_batches.batches) == 1,
                 timeout=60, interval=0.1)
        gw.kill()  # the providers have the batches; the gateway never heard their ids
        fake_openai_batches.stall_create.set()
        fake_anthropic_batches.stall_create.set()
        gevent.joinall(calls, timeout=30)
        assert all(not c.successful() for c in calls)  # the clients saw the connection drop
        fake_openai_batches.stall_create = fake_anthropic_batches.stall_create = None
        (accepted,) = fake_openai_batches.batches
        (first_anthropic,) = fake_anthropic_batches.batches
        with gw.db() as s:
            ids = {b.api: b.public_id for b in s.scalars(select(Batch))}
            assert set(s.scalars(select(BatchPart.upstream_id))) == {None}
            # the dead process's submission lease has run out (SUBMIT_LEASE_SECONDS later)
            s.execute(update(BatchPart).values(next_poll_at=None))
            s.commit()

        gw.start()
        done = wait_for(lambda: (b := sdk.batches.retrieve(ids["openai"])).status == "completed" and b,
                        timeout=90, interval=0.5)
        ended = wait_for(lambda: (b := claude.messages.batches.retrieve(ids["anthropic"])).processing_status
                         == "ended" and b, timeout=90, interval=0.5)
        assert done.request_counts.completed == 2 and ended.request_counts.succeeded == 2
        assert list(fake_openai_batches.batches) == [accepted]  # adopted: never sent twice
        assert len(fake_anthropic_batches.batches) == 2  # sent again: no metadata to find it by
        with gw.db() as s:
            parts = dict(s.execute(select(BatchPart.kind, BatchPart.upstream_id)).all())
        assert parts["openai"] == accepted and parts["anthropic"] not in (None, first_anthropic)
        check_money(gw, [ids["openai"], ids["anthropic"]], succeeded=4, pct=50)
    finally:
        gw.stop()
        fake_openai_batches.reset()
        fake_anthropic_batches.reset()
