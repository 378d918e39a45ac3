"""The documented scale-out: `GATEWAY_DATABASE_URL=postgresql+psycopg://…` moves all state to PostgreSQL.

A private PostgreSQL cluster (Debian's binaries, installed by `make test`) runs for the session in a temp
dir; every test gets its own database, so the migrations, the ledger writer's rollup upsert, the CLI and
the usage API are proven on the real server, not on SQLite.
"""

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
import requests
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.pool import NullPool

from gateway import boot, create_app, db, migrate
from gateway.ledger.pricing import usd
from gateway.memo import MEMO
from gateway.models import UsageRollup
from tests.conftest import DEFAULT_ORG_CREDITS, free_port, gateway_config, wait_for

MSG = [{"role": "user", "content": "hello there"}]
PRICE_IN, PRICE_OUT = 1000, 2000  # micros per token of test/fake-gpt (conftest.PRICES, USD per Mtok)
FIRST_CREDITS = DEFAULT_ORG_CREDITS  # the first-run credits and the test fixture's top-up


# ---- a throwaway cluster -----------------------------------------------------------------------------

def _bindir() -> Path:
    """The newest installed PostgreSQL; missing binaries fail the run (a skip would hide the gap)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run `make test`, "
                    "which installs it", pytrace=False)
    return Path(max(found, key=lambda p: int(Path(p).parts[-3].split(".")[0]))).parent


@dataclass
class Cluster:
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def pg_cluster():
    """initdb + pg_ctl in a temp dir (as `postgres` when root: initdb refuses root), fsync off, trust auth."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    root = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
    if as_root:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [str(bindir / args[0]), *args[1:]]
        proc = subprocess.run(["runuser", "-u", "postgres", "--", *cmd] if as_root else cmd,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            pytest.fail(f"{args[0]} failed: {proc.stderr or proc.stdout}\n{log}", pytrace=False)
        return proc

    run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
    for attempt in range(3):  # the free port may be taken between the probe and the start
        port = free_port()
        started = run("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o",
                      f"-F -p {port} -k {root} -c listen_addresses=127.0.0.1", "start", check=attempt == 2)
        if started.returncode == 0:
            break
    try:
        yield Cluster(port)
    finally:
        run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster):
    """A fresh database for one test; afterwards the gateway's engine is let go, so no later test can
    reach a dropped database (every SQLite test's create_app points a new one)."""
    name = f"gw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_cluster.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg_cluster.url(name)
    if db._engine is not None:
        db._engine.dispose()
        db._engine = None
        db.SessionLocal.configure(bind=None)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_gateway(pg_url, gateway_factory):
    """conftest's live gateway (gevent server, ledger writer) on the test's PostgreSQL database; its CLI
    environment points at the same database, as an operator's would."""
    gw = gateway_factory(database_url=pg_url)
    assert db.engine().dialect.name == "postgresql"
    gw.env["GATEWAY_DATABASE_URL"] = pg_url
    return gw


# ---- helpers ------------------------------------------------------------------------------------------

def _same_hour_ahead(seconds: float = 5.0) -> None:
    """Rollups are hourly: requests that must share a bucket are not started just before the hour turns."""
    now = datetime.now(UTC)
    left = (now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1) - now).total_seconds()
    if left < seconds:
        time.sleep(left + 0.1)


def _rollups(org_id: int) -> list[UsageRollup]:
    with db.session_scope() as s:
        return list(s.scalars(select(UsageRollup).where(UsageRollup.org_id == org_id).order_by(UsageRollup.id)))


def _summary(gw, key: str) -> dict:
    r = requests.get(gw.v1 + "/usage/summary", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


# ---- tests -------------------------------------------------------------------------------------------

def test_init_migrates_postgres_to_head_with_the_sqlite_schema(pg_url, tmp_path, fake_openai):
    """`gateway init` on PostgreSQL: Alembic at head, every table and column SQLite gets, the config
    applied; a second start (the config upserted again) is a no-op, not an error."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
    create_app({"instance": tmp_path / "sqlite", "secret_key": "test-secret", "start_jobs": False})
    migrate.upgrade()
    sqlite = inspect(db.engine())
    sqlite_schema = {t: {c["name"] for c in sqlite.get_columns(t)} for t in sqlite.get_table_names()}

    settings = {"instance": tmp_path / "pg", "database_url": pg_url, "secret_key": "test-secret",
                "config_path": config, "start_jobs": False}
    first = boot.prepare(create_app(settings))
    assert first is not None and first.org == "default" and first.providers == ["fake"]
    assert boot.prepare(create_app(settings)) is None  # restart: nothing new, config re-applied
    engine = db.engine()
    assert engine.dialect.name == "postgresql"
    heads = ScriptDirectory.from_config(migrate.alembic_config()).get_heads()
    with engine.connect() as conn:
        assert [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))] == heads
        assert conn.scalar(text("SELECT count(*) FROM model")) == len(gateway_config(fake_openai.url)["models"])
    pg = inspect(engine)
    pg_schema = {t: {c["name"] for c in pg.get_columns(t)} for t in pg.get_table_names()}
    assert {"ledger_entry", "usage_rollup", "org", "api_key", "change_event"} <= set(sqlite_schema)
    assert {t: pg_schema.get(t) for t in sqlite_schema} == sqlite_schema
    # the unique key the rollup upsert's ON CONFLICT names
    assert ["org_id", "hour", "model", "mechanism"] in [u["column_names"] for u in pg.get_unique_constraints("usage_rollup")]
    assert not (tmp_path / "pg" / "gateway.db").exists()  # nothing went to SQLite


def test_chat_on_postgres_meters_every_request_and_upserts_the_rollup(pg_gateway):
    """Non-stream and stream chat through the real server: one ledger row each with the upstream's
    tokens, credits down by exactly their charges, and one hourly rollup row that the second request's
    batch updated in place (ON CONFLICT DO UPDATE on PostgreSQL)."""
    gw = pg_gateway
    org = gw.org()
    sdk = gw.sdk()
    _same_hour_ahead()

    plain = sdk.chat.completions.with_raw_response.create(model="test/fake-gpt", messages=MSG)
    usage1 = plain.parse().usage
    gw.flush()  # its own batch: the rollup row is inserted
    (first,) = _rollups(org.id)
    assert (first.model, first.mechanism, first.requests, first.input_tokens, first.output_tokens) == (
        "test/fake-gpt", "", 1, usage1.prompt_tokens, usage1.completion_tokens)

    chunks = list(sdk.chat.completions.create(model="test/fake-gpt", stream=True, stream_options={"include_usage": True},
                                              messages=[{"role": "user", "content": "a longer question, streamed"}]))
    usage2 = chunks[-1].usage
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from fake fake-gpt."
    assert usage2.prompt_tokens > usage1.prompt_tokens  # two different rows to tell apart

    rows = gw.rows()  # flushes: the second batch meets the first's rollup row
    assert [(r.request_id, r.stream, r.status) for r in rows] == [
        (plain.headers["x-request-id"], False, 200), (rows[1].request_id, True, 200)]
    for row, usage in zip(rows, (usage1, usage2), strict=True):
        assert (row.org_id, row.requested_model, row.input_tokens, row.output_tokens) == (
            org.id, "test/fake-gpt", usage.prompt_tokens, usage.completion_tokens)
        assert not row.usage_estimated  # the upstream's own counts, the stream's included
        assert row.charge_micros == row.benchmark_micros == usage.prompt_tokens * PRICE_IN + usage.completion_tokens * PRICE_OUT
    charged = sum(r.charge_micros for r in rows)
    assert gw.org().credits_micros == org.credits_micros - charged == FIRST_CREDITS - charged
    assert MEMO.balance(org.id) == FIRST_CREDITS - charged  # the server's view: held charges all committed

    (rollup,) = _rollups(org.id)  # same row, updated in place: no second bucket
    assert rollup.id == first.id
    assert (rollup.requests, rollup.errors, rollup.input_tokens, rollup.output_tokens) == (
        2, 0, sum(r.input_tokens for r in rows), sum(r.output_tokens for r in rows))
    assert (rollup.charge_micros, rollup.benchmark_micros, rollup.saved_micros) == (charged, charged, 0)
    assert rollup.hour == rows[0].created_at.replace(minute=0, second=0, microsecond=0)
    assert not (gw.instance / "ledger-spill.jsonl").exists()  # no batch failed on the way
    assert not (gw.instance / "gateway.db").exists()


def test_cli_on_postgres_reaches_the_running_server(pg_gateway):
    """The operator CLI writes to the same PostgreSQL: a new key works and added credits count on the
    server within a second (its change-log poll), with no restart."""
    gw = pg_gateway
    org = gw.org()
    out = gw.cli("key", "create", "--org", "default", "--name", "ci").stdout
    assert out.count("\n") == 1 and out.startswith("gw-")
    secret = out.strip()

    def works() -> bool:
        try:
            gw.sdk(secret).chat.completions.create(model="test/fake-gpt", messages=MSG)
            return True
        except openai.AuthenticationError:  # not loaded yet
            return False

    wait_for(works, timeout=1.0)
    gw.flush()
    before = MEMO.balance(org.id)
    assert before == gw.org().credits_micros < FIRST_CREDITS  # the key's request was charged
    assert "org default: credits $" in gw.cli("credits", "add", "--org", "default", "--usd", "5").stdout
    wait_for(lambda: MEMO.balance(org.id) == before + 5_000_000, timeout=1.0)
    assert gw.org().credits_micros == before + 5_000_000
    assert not (gw.instance / "gateway.db").exists()  # the CLI did not fall back to SQLite


def test_usage_summary_on_postgres_is_per_org(pg_gateway):
    """Two orgs on one PostgreSQL database: each key sees its own org's rollups, never the other's."""
    gw = pg_gateway
    acme = gw.new_org("acme", usd=10)
    acme_key = gw.new_key("acme")
    default_key = gw.api_key
    for content in ("one", "two three"):
        gw.sdk(default_key).chat.completions.create(model="test/fake-gpt", messages=[{"role": "user", "content": content}])
    gw.sdk(acme_key).chat.completions.create(model="test/cheap", messages=MSG)
    rows = gw.rows()
    mine = {name: [r for r in rows if r.org_id == org_id] for name, org_id in (("default", gw.org().id), ("acme", acme.id))}
    assert [len(mine["default"]), len(mine["acme"])] == [2, 1]

    for name, key, model in (("default", default_key, "test/fake-gpt"), ("acme", acme_key, "test/cheap")):
        body = _summary(gw, key)
        own = mine[name]
        assert body["org"] == name
        assert (body["totals"]["requests"], body["totals"]["input_tokens"], body["totals"]["output_tokens"]) == (
            len(own), sum(r.input_tokens for r in own), sum(r.output_tokens for r in own))
        assert body["totals"]["charge"] == usd(sum(r.charge_micros for r in own))
        assert [m["model"] for m in body["by_model"]] == [model]


def test_console_pages_and_export_on_postgres(pg_gateway):
    """Home, Per-user usage, Error reports and the export run their SQL on PostgreSQL too (daily party
    upserts, date_trunc buckets, the export's row-value keyset)."""
    import openai

    from tests.test_console import login
    from tests.test_export import member_with_key, parse

    gw = pg_gateway
    uid, key = member_with_key(gw, "default", "ann@example.com")
    for _ in range(3):
        gw.sdk(key).chat.completions.create(model="test/fake-gpt", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        gw.sdk(key).chat.completions.create(model="test/error-400", messages=MSG)
    assert gw.post("/v1/error-reports", {"type": "tool_error", "message": "x"}, key=key).status_code == 202
    gw.flush()
    s, home = login(gw, gw.admin_email, gw.admin_password)
    assert home.status_code == 200 and "ann@example.com" in home.text.split('id="top-users"')[1]
    usage = s.get(gw.url + "/admin/usage?period=30d").text
    assert f'data-party-id="{uid}"' in usage and ">4<" in usage.split(f'data-party-id="{uid}"')[1]
    errors = s.get(gw.url + "/admin/errors?period=7d").text
    assert "test/error-400" in errors and "tool_error" in errors
    rows = parse(s.get(gw.url + "/admin/export.csv", params={"party": "user", "id": uid}).text)
    assert [r["model_requested"] for r in rows] == ["test/fake-gpt"] * 3 + ["test/error-400"]
