"""`gateway serve` as a real process: SIGTERM drains, then ends the streams still running with the
dialect's error event; every request that reached the pipeline gets exactly one ledger row; SIGKILL
loses at most the rows of the writer's last interval."""

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anthropic
import gevent
import openai
import pytest
import requests
import yaml
from sqlalchemy import create_engine, select, text

from gateway.models import LedgerEntry
from tests.conftest import gateway_config, wait_for

MSG = [{"role": "user", "content": "hello there"}]
SLOW_STREAM = "test/drip-100"  # 50 chunks, 100 ms apart: about 5 s


@dataclass
class Served:
    proc: subprocess.Popen
    base: str
    key: str
    instance: Path

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key=self.key, max_retries=0, timeout=60)

    def claude(self) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.base, api_key=self.key, max_retries=0, timeout=60)

    def rows(self) -> list[LedgerEntry]:
        """Rows in the database file, read by another connection (no flush asked of the server)."""
        engine = create_engine(f"sqlite:///{self.instance / 'gateway.db'}")
        try:
            with engine.connect() as conn:
                return list(conn.execute(select(LedgerEntry).order_by(LedgerEntry.id)))
        finally:
            engine.dispose()

    def accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", int(self.base.rsplit(":", 1)[1])), timeout=2):
                return True
        except OSError:
            return False


def _ready(base: str) -> bool:
    try:
        return requests.get(base + "/readyz", timeout=2).ok
    except requests.RequestException:
        return False


def _init_with_credits(exe: str, env: dict) -> str:
    """`gateway init` (the first run: org, key) and a top-up: every call holds its worst case first,
    and four calls at once at the test catalog's prices need more than the first-run $10."""
    init = subprocess.run([exe, "init"], env=env, capture_output=True, text=True, timeout=120)
    key = next(line.split("API key:")[1].split()[0] for line in (init.stdout + init.stderr).splitlines()
               if "API key:" in line)
    subprocess.run([exe, "credits", "add", "--org", "default", "--usd", "990"], env=env, check=True,
                   capture_output=True, timeout=120)
    return key


@pytest.fixture
def serve(tmp_path, fake_openai):
    """Start `gateway serve` on a free loopback port with extra environment; stopped at the end."""
    procs = []

    def start(**env_extra: str) -> Served:
        instance = tmp_path / "inst"
        instance.mkdir()
        config = instance / "gw.yaml"
        config.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config), **env_extra)
        exe = str(Path(sys.executable).parent / "gateway")
        key = _init_with_credits(exe, env)
        proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        for line in proc.stdout:
            if "Serving on" in line:
                break
        gevent.spawn(proc.stdout.read)  # keep the pipe drained
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _ready(base))
        return Served(proc, base, key, instance)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _chat_stream(served: Served, started: list) -> dict:
    """An OpenAI chat stream (pass-through); what the client saw."""
    seen = {"chunks": 0, "error": None, "text": ""}
    try:
        for chunk in served.sdk().chat.completions.create(model=SLOW_STREAM, messages=MSG, stream=True):
            seen["chunks"] += 1
            if chunk.choices and chunk.choices[0].delta.content:
                seen["text"] += chunk.choices[0].delta.content
            if seen["chunks"] == 3:
                started.append(1)
    except openai.APIError as e:
        seen["error"] = e
    return seen


def _messages_stream(served: Served, started: list) -> dict:
    """An Anthropic messages stream, translated from the OpenAI-kind upstream."""
    seen = {"chunks": 0, "error": None, "text": "", "stop": None}
    try:
        with served.claude().messages.stream(model=SLOW_STREAM, max_tokens=200, messages=MSG) as stream:
            for event in stream:
                seen["chunks"] += 1
                if event.type == "content_block_delta":
                    seen["text"] += event.delta.text
                elif event.type == "message_stop":
                    seen["stop"] = True
                if seen["chunks"] == 4:
                    started.append(1)
    except anthropic.APIError as e:
        seen["error"] = e
    return seen


def _responses_stream(served: Served, started: list) -> dict:
    """A Responses stream, translated onto the chat upstream."""
    seen = {"chunks": 0, "error": None, "text": "", "done": False}
    try:
        for event in served.sdk().responses.create(model=SLOW_STREAM, input="hello there", stream=True):
            seen["chunks"] += 1
            if event.type == "response.output_text.delta":
                seen["text"] += event.delta
            elif event.type == "response.completed":
                seen["done"] = True
            if seen["chunks"] == 6:
                started.append(1)
    except openai.APIError as e:
        seen["error"] = e
    return seen


def _slow_call(served: Served, started: list) -> dict:
    """A non-stream request still waiting on its upstream."""
    started.append(1)
    try:
        served.sdk().chat.completions.create(model="test/slow-3000", messages=MSG)
        return {"error": None}
    except openai.APIError as e:
        return {"error": e}


def _start_all(served: Served, kinds) -> tuple[list, list]:
    started: list = []
    jobs = [gevent.spawn(kind, served, started) for kind in kinds]
    wait_for(lambda: len(started) == len(jobs), timeout=20)
    return jobs, started


def test_drain_longer_than_the_streams_lets_every_stream_finish(serve):
    served = serve(GATEWAY_DRAIN_SECONDS="60")
    jobs, _ = _start_all(served, [_chat_stream, _chat_stream, _messages_stream, _messages_stream])
    served.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: not served.accepting())  # the listener is closed at once
    gevent.joinall(jobs, timeout=60)
    seen = [job.value for job in jobs]
    assert all(s["error"] is None for s in seen), seen
    assert all(s["text"].split()[-1] == "chunk-49" for s in seen)  # every chunk arrived
    assert all(s["stop"] for s in seen[2:])
    assert served.proc.wait(timeout=30) == 0
    rows = served.rows()
    assert sorted((r.endpoint, r.status) for r in rows) == [("chat.completions", 200)] * 2 + [("messages", 200)] * 2
    assert len({r.request_id for r in rows}) == 4


def test_short_drain_ends_streams_with_the_dialects_error_event_and_bills_them(serve):
    served = serve(GATEWAY_DRAIN_SECONDS="1")
    jobs, _ = _start_all(served, [_chat_stream, _messages_stream, _slow_call, _responses_stream])
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0  # the process exits on its own
    gevent.joinall(jobs, timeout=30)
    chat, messages, slow, responses = (job.value for job in jobs)
    # OpenAI chat: a `data: {"error": {...}}` event, which the SDK raises
    assert isinstance(chat["error"], openai.APIError) and "shutting down" in chat["error"].message
    assert chat["error"].body["type"] == "api_error" and chat["error"].body["code"] == "server_shutting_down"
    assert 0 < len(chat["text"].split()) < 50
    # Anthropic messages: `event: error` with Anthropic's error shape
    assert isinstance(messages["error"], anthropic.APIStatusError)
    assert messages["error"].body == {"type": "error", "error": {
        "type": "api_error", "message": messages["error"].body["error"]["message"]}}
    assert "shutting down" in messages["error"].body["error"]["message"] and not messages["stop"]
    # A request still waiting on its upstream: 503 in the OpenAI shape
    assert isinstance(slow["error"], openai.APIStatusError) and slow["error"].status_code == 503
    assert slow["error"].code == "server_shutting_down"
    # Responses: the API's `error` event
    assert isinstance(responses["error"], openai.APIError) and "shutting down" in responses["error"].message
    assert not responses["done"] and 0 < len(responses["text"].split()) < 50
    rows = served.rows()
    by_endpoint = sorted((r.endpoint, r.stream, r.status) for r in rows)
    assert by_endpoint == [("chat.completions", False, 503), ("chat.completions", True, 503), ("messages", True, 503),
                           ("responses", True, 503)]
    for row in rows:
        assert row.error_type == "api_error" and "shutting down" in row.error_message
        if row.stream:  # the usage seen so far is billed: the prompt and what was relayed
            assert row.input_tokens > 0 and 0 < row.output_tokens < 50 and row.charge_micros > 0
    with create_engine(f"sqlite:///{served.instance / 'gateway.db'}").connect() as conn:
        # the first-run $10 and the $990 top-up (see _init_with_credits)
        spent = conn.scalar(text("SELECT 1000000000 - credits_micros FROM org WHERE name = 'default'"))
    assert spent == sum(r.charge_micros for r in rows)


def test_rows_reach_the_database_without_a_flush(serve):
    served = serve()
    sdk = served.sdk()
    ids = {sdk.chat.completions.with_raw_response.create(model="fast", messages=MSG).headers["x-request-id"]
           for _ in range(3)}
    # nobody asks for a flush: the writer's own interval writes them
    assert wait_for(lambda: {r.request_id for r in served.rows()} == ids)
    served.proc.kill()


def test_sigkill_after_the_interval_loses_no_row(serve):
    served = serve()
    sdk = served.sdk()
    for _ in range(30):
        sdk.chat.completions.create(model="fast", messages=MSG)
    list(sdk.chat.completions.create(model="test/fake-gpt", messages=MSG, stream=True))
    gevent.sleep(1)
    served.proc.send_signal(signal.SIGKILL)
    served.proc.wait(timeout=10)
    assert len(served.rows()) == 31


def test_writer_writes_as_soon_as_enough_rows_are_queued(gateway_factory):
    """Under load the writer does not wait for its interval: `ledger_flush_rows` queued rows are written at once."""
    from gateway import db

    gw = gateway_factory(sync_interval=3600, ledger_flush_rows=5)
    sdk = gw.sdk()

    def written() -> int:
        with db.session_scope() as s:  # read directly: no flush asked of the writer
            return len(list(s.scalars(select(LedgerEntry.id))))

    for _ in range(4):
        sdk.chat.completions.create(model="fast", messages=MSG)
    assert written() == 0  # below the threshold, the interval (an hour here) decides
    sdk.chat.completions.create(model="fast", messages=MSG)
    assert wait_for(lambda: written() == 5)


def test_gunicorn_worker_ends_streams_before_the_masters_kill(tmp_path, fake_openai):
    """Under gunicorn the master SIGKILLs workers at --graceful-timeout: gateway's worker class ends
    the streams still running before that, with the error event and one row each."""
    instance = tmp_path / "inst"
    instance.mkdir()
    config = instance / "gw.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config))
    bin_dir = Path(sys.executable).parent
    key = _init_with_credits(str(bin_dir / "gateway"), env)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([str(bin_dir / "gunicorn"), "-k", "gateway.gunicorn_worker.Worker", "-w", "1",
                             "--graceful-timeout", "3", "-b", f"127.0.0.1:{port}", "app:app"],
                            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        served = Served(proc, f"http://127.0.0.1:{port}", key, instance)
        wait_for(lambda: _ready(served.base), timeout=60)
        jobs, _ = _start_all(served, [_chat_stream, _messages_stream])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        gevent.joinall(jobs, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    chat, messages = (job.value for job in jobs)
    assert isinstance(chat["error"], openai.APIError) and chat["error"].code == "server_shutting_down"
    assert isinstance(messages["error"], anthropic.APIStatusError) and not messages["stop"]
    rows = served.rows()
    assert sorted((r.endpoint, r.status) for r in rows) == [("chat.completions", 503), ("messages", 503)]


def test_a_second_signal_ends_the_streams_at_once(serve):
    served = serve(GATEWAY_DRAIN_SECONDS="600")
    jobs, _ = _start_all(served, [_chat_stream])
    served.proc.send_signal(signal.SIGINT)
    wait_for(lambda: not served.accepting())
    served.proc.send_signal(signal.SIGINT)  # as a second Ctrl-C
    assert served.proc.wait(timeout=30) == 0  # long before the 600 s drain
    gevent.joinall(jobs, timeout=30)
    assert jobs[0].value["error"].code == "server_shutting_down"
    (row,) = served.rows()
    assert row.status == 503


def test_the_writer_keeps_its_interval_after_a_cycle_that_failed(gateway, monkeypatch, tmp_path):
    """A cycle that fails outright (the batch could not be written, nor spilled) is logged, its rows
    stay queued, and the next interval writes them: a dead loop would leave every later row in
    memory until a stop."""
    from gateway import db
    from gateway.ledger.writer import WRITER

    def written() -> set:
        with db.session_scope() as s:  # read directly: no flush asked of the writer
            return set(s.scalars(select(LedgerEntry.request_id)))

    real_insert = WRITER._insert

    def broken(batch):
        raise RuntimeError("disk full")

    real_spill, spills = WRITER._spill, []
    monkeypatch.setattr(WRITER, "_insert", broken)
    monkeypatch.setattr(WRITER, "_spill", lambda batch: spills.append(1) or real_spill(batch))
    monkeypatch.setattr(WRITER, "spill_path", tmp_path)  # a directory: the spill fails too
    first = gateway.sdk().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    wait_for(lambda: spills)  # written, spilled: both failed (and the rows went back on the queue)
    monkeypatch.setattr(WRITER, "_insert", real_insert)
    raw = gateway.sdk().chat.completions.with_raw_response.create(model="fast", messages=MSG)
    assert wait_for(lambda: {first.headers["x-request-id"], raw.headers["x-request-id"]} <= written())
