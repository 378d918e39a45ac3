"""The fault matrix: every way an upstream (or the client) can fail, on every inference dialect.

(upstream 500, 503, 429 with retry-after, connect refused, hang, slow trickle, reset mid-stream,
malformed JSON, malformed SSE, wrong-typed usage, client disconnect mid-stream) × (stream, non-stream)
× (chat completions, messages, responses) × (pass-through, translated). For every cell: never a 500;
a failure reaches the client in its dialect's error shape (or, once a stream has begun, its error
event); exactly one ledger row, with the status the client saw; the credits consumed equal the row's
charge; no gateway greenlet left running. Cells that cannot happen (a client leaving a non-stream
mid-stream, SSE framing on a JSON reply) are skipped with the reason.

One gateway and one hostile upstream (tests/fakes/faulty_upstream.py) serve each database leg: SQLite
runs every cell, PostgreSQL a reduced set that covers each kind of ledger outcome. The routing
deadline is small, so a hanging upstream costs each hang cell about that long.
"""

from __future__ import annotations

import gc
import socket
from dataclasses import dataclass

import gevent
import greenlet
import orjson
import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from gateway import db
from tests.conftest import Gateway, start_gateway, stop_gateway, wait_for
from tests.fakes.faulty_upstream import FaultyUpstream
from tests.test_postgres import pg_cluster  # noqa: F401  (the session's PostgreSQL cluster)

DEADLINE = 1.0
PRICES = {"input_per_mtok": 1000, "output_per_mtok": 2000}

# fault -> the fake's behaviour (its upstream model name); "refused" goes to a port nobody listens on
FAULTS = {
    "500": "status-500", "503": "status-503", "429": "status-429", "refused": "ok", "hang": "hang",
    "trickle": "trickle", "reset": "reset", "malformed_json": "badjson", "malformed_sse": "badsse",
    "usage_types": "badusage-lots", "disconnect": "long",
}
ENDPOINTS = {  # client path, dialect, the provider kind that passes it through, the one that translates it
    "chat": ("/v1/chat/completions", "openai", "openai", "anthropic"),
    "messages": ("/v1/messages", "anthropic", "anthropic", "openai"),
    "responses": ("/v1/responses", "openai", "openai", "anthropic"),
}
USAGE_VARIANTS = ["lots", "null", "list", "float", "neg", "huge"]  # what `prompt_tokens` (or its kin) holds
TEXT = b"friend"  # the last word of the fake's answer: a relayed answer arrived whole


@dataclass(frozen=True)
class Cell:
    fault: str
    stream: bool
    endpoint: str
    mode: str  # passthrough | translated

    @property
    def id(self) -> str:
        return f"{self.fault}-{'stream' if self.stream else 'whole'}-{self.endpoint}-{self.mode}"

    @property
    def kind(self) -> str:
        _, _, through, translated = ENDPOINTS[self.endpoint]
        return through if self.mode == "passthrough" else translated


CELLS = [Cell(f, s, e, m) for f in FAULTS for s in (False, True) for e in ENDPOINTS
         for m in ("passthrough", "translated")]
USAGE_CELLS = [Cell(f"usage_{v}", s, e, m) for v in USAGE_VARIANTS for s in (False, True) for e in ENDPOINTS
               for m in ("passthrough", "translated")]
# PostgreSQL: one cell per ledger outcome (success, upstream error, rate limit, cut stream, client gone,
# estimated usage), across the three dialects and both modes.
PG_CELLS = [Cell("trickle", True, "chat", "passthrough"), Cell("500", False, "messages", "passthrough"),
            Cell("429", True, "responses", "passthrough"), Cell("reset", True, "messages", "translated"),
            Cell("disconnect", True, "chat", "translated"), Cell("usage_types", False, "responses", "translated"),
            Cell("refused", False, "chat", "passthrough")]


def skip_reason(cell: Cell) -> str | None:
    if cell.fault == "disconnect" and not cell.stream:
        return "a client cannot leave in the middle of a reply that is sent whole"
    if cell.fault == "malformed_sse" and not cell.stream:
        return "SSE framing exists only on streams"
    return None


def expected(cell: Cell) -> tuple[int, int, str]:
    """(HTTP status, ledger status, outcome): outcome "ok" (the answer relayed whole) or "error" (the
    dialect's error body, or for a stream that had begun, its error event)."""
    f = cell.fault
    if f in ("500", "503", "refused"):
        return 502, 502, "error"
    if f == "429":
        return 429, 429, "error"
    if f == "hang":
        return 504, 504, "error"
    if f == "trickle" or f.startswith("usage"):
        return 200, 200, "ok"
    if f == "disconnect":
        return 200, 499, "gone"
    if not cell.stream:  # reset, malformed JSON: nothing to relay
        return 502, 502, "error"
    if f == "reset" or cell.mode == "translated":
        return 200, 502, "error"  # begun, then ended with the dialect's error event
    return 200, 200, "ok"  # a pass-through stream relays the upstream's events as it sent them


# ---- one gateway per leg ---------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(fake_url: str) -> dict:
    refused = f"http://127.0.0.1:{_closed_port()}"
    providers = [
        {"name": "fo", "kind": "openai", "base_url": fake_url + "/v1", "api_key": "sk-fault-openai",
         "responses_api": True},
        {"name": "fa", "kind": "anthropic", "base_url": fake_url, "api_key": "sk-ant-fault"},
        {"name": "ro", "kind": "openai", "base_url": refused + "/v1", "api_key": "sk-fault-openai",
         "responses_api": True},
        {"name": "ra", "kind": "anthropic", "base_url": refused, "api_key": "sk-ant-fault"},
    ]
    models = []
    for fault, behaviour in FAULTS.items():
        for kind, (live, dead) in {"openai": ("fo", "ro"), "anthropic": ("fa", "ra")}.items():
            provider = dead if fault == "refused" else live
            models.append({"slug": f"fault/{fault}-{kind}",
                           "routes": [{"provider": provider, "upstream_model": behaviour, **PRICES}]})
    for variant in USAGE_VARIANTS:
        for kind, provider in {"openai": "fo", "anthropic": "fa"}.items():
            models.append({"slug": f"fault/usage_{variant}-{kind}",
                           "routes": [{"provider": provider, "upstream_model": f"badusage-{variant}", **PRICES}]})
    return {"providers": providers, "models": models,
            "routing": {"retries": 0, "deadline_seconds": DEADLINE, "breaker_failures": 1_000_000}}


@pytest.fixture(scope="module")
def upstream(faulty_upstream):
    return faulty_upstream


@pytest.fixture(scope="class")
def sqlite_gw(upstream, tmp_path_factory):
    gw, server, app = start_gateway(tmp_path_factory.mktemp("faults"), _config(upstream.url))
    yield gw
    stop_gateway(server, app)


@pytest.fixture(scope="class")
def pg_gw(upstream, tmp_path_factory, pg_cluster):  # noqa: F811
    name = "gw_faults"
    admin = create_engine(pg_cluster.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    gw, server, app = start_gateway(tmp_path_factory.mktemp("faults-pg"), _config(upstream.url),
                                    database_url=pg_cluster.url(name))
    assert db.engine().dialect.name == "postgresql"
    yield gw
    stop_gateway(server, app)
    db._engine.dispose()
    db._engine = None
    db.SessionLocal.configure(bind=None)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# ---- one cell ----------------------------------------------------------------------------------------

def running_greenlets(exclude) -> set:
    """Greenlets started and not finished, but for the fake upstream's (its pool) and this test's."""
    here = gevent.getcurrent()
    # type(), not isinstance(): isinstance asks proxies (werkzeug's LocalProxy...) for their __class__
    return {g for g in gc.get_objects()
            if issubclass(type(g), greenlet.greenlet) and g and g is not here and g not in exclude}


def body_for(cell: Cell) -> dict:
    slug = f"fault/{cell.fault}-{cell.kind}"
    if cell.endpoint == "chat":
        return {"model": slug, "messages": [{"role": "user", "content": "hi"}], "stream": cell.stream}
    if cell.endpoint == "messages":
        return {"model": slug, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}],
                "stream": cell.stream}
    return {"model": slug, "input": "hi", "stream": cell.stream}


def error_shaped(obj, dialect: str) -> bool:
    if not isinstance(obj, dict):
        return False
    if dialect == "anthropic":
        return obj.get("type") == "error" and isinstance(obj.get("error"), dict) and "message" in obj["error"]
    return isinstance(obj.get("error"), dict) and "message" in obj["error"]


def stream_events(payload: bytes) -> list[tuple[str | None, object]]:
    out = []
    for block in payload.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].strip())
        if data:
            try:
                out.append((name, orjson.loads(b"\n".join(data))))
            except orjson.JSONDecodeError:
                out.append((name, None))
    return out


def ends_in_error_event(payload: bytes, cell: Cell) -> bool:
    events = stream_events(payload)
    if cell.endpoint == "messages":
        return any(name == "error" and error_shaped(obj, "anthropic") for name, obj in events)
    if cell.endpoint == "responses":
        return any(isinstance(obj, dict) and obj.get("type") in ("error", "response.failed") for _, obj in events)
    return any(error_shaped(obj, "openai") for _, obj in events)


def credits(gw: Gateway) -> int:
    gw.flush()
    return gw.org().credits_micros


def run_cell(gw: Gateway, upstream: FaultyUpstream, cell: Cell) -> None:
    if (reason := skip_reason(cell)) is not None:
        pytest.skip(reason)
    path, dialect, _, _ = ENDPOINTS[cell.endpoint]
    want_status, want_row, outcome = expected(cell)
    if "idle" not in gw.__dict__:  # the first cell finds the gateway idle: what runs then always runs
        gw.idle = running_greenlets(upstream.pool.greenlets)
    baseline = gw.idle
    if gw.__dict__.get("dirty"):  # the previous cell failed: let its request finish before measuring this one
        wait_for(lambda: not (running_greenlets(upstream.pool.greenlets) - baseline), timeout=20)
    gw.dirty = True
    before_rows = len(gw.rows())
    before_credits = credits(gw)
    upstream.reset_hangs()
    headers = {"Authorization": f"Bearer {gw.api_key}", "Connection": "close", "anthropic-version": "2023-06-01"}
    r = requests.post(gw.url + path, data=orjson.dumps(body_for(cell)), headers={
        **headers, "Content-Type": "application/json"}, stream=True, timeout=30)
    try:
        request_id = r.headers.get("x-request-id")
        if outcome == "gone":
            assert r.status_code == 200
            next(r.iter_content(chunk_size=None))  # the stream began; the client leaves
            payload = b""
        else:
            payload = r.content
    finally:
        r.close()
        upstream.release()
    assert r.status_code != 500
    assert r.status_code == want_status, (r.status_code, payload[:300])
    assert request_id, "every answer names its request"
    if outcome == "error" and want_status >= 400:
        assert error_shaped(orjson.loads(payload), dialect), payload[:300]
        if want_status == 429:
            assert r.headers.get("retry-after") == "1"
    elif outcome == "error":
        assert ends_in_error_event(payload, cell), payload[-400:]
    elif outcome == "ok":
        assert TEXT in payload, payload[-400:]
        assert not ends_in_error_event(payload, cell), payload[-400:]

    rows = wait_for(lambda: gw.rows(request_id=request_id), timeout=10)
    assert len(rows) == 1
    (row,) = rows
    assert len(gw.rows()) == before_rows + 1, "exactly one row, and nothing else was written"
    assert row.status == want_row != 500
    if want_row >= 500 or want_row == 429:
        assert row.error_type, "a failed request's row says why"
    if cell.fault.startswith("usage"):
        assert row.usage_estimated and row.input_tokens > 0 and row.charge_micros > 0
    if cell.fault == "trickle":
        assert (row.input_tokens, row.output_tokens, row.usage_estimated) == (5, 3, False)
    wait_for(lambda: credits(gw) == before_credits - row.charge_micros, timeout=10)
    wait_for(lambda: not (running_greenlets(upstream.pool.greenlets) - baseline), timeout=10)
    gw.dirty = False


class TestOnSQLite:
    @pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
    def test_cell(self, sqlite_gw, upstream, cell):
        run_cell(sqlite_gw, upstream, cell)


    @pytest.mark.parametrize("cell", USAGE_CELLS, ids=[c.id for c in USAGE_CELLS])
    def test_malformed_usage_is_estimated_and_flagged(self, sqlite_gw, upstream, cell):
        """An upstream 200 whose usage counts are a string, null, a list, a float, negative or absurd:
        the answer is relayed, the row is a 200 with estimated usage (flagged), charged accordingly."""
        run_cell(sqlite_gw, upstream, cell)


class TestOnPostgreSQL:
    @pytest.mark.parametrize("cell", PG_CELLS, ids=[c.id for c in PG_CELLS])
    def test_cell(self, pg_gw, upstream, cell):
        run_cell(pg_gw, upstream, cell)
