"""Fixtures: fake upstreams (one per provider kind, each served by `served`), a real gateway (real
SQLite, real gevent server on loopback), a raw-socket client that can vanish mid-stream, and a page in
real Chromium for the console's browser tests."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import openai  # noqa: E402
import orjson  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import event, select  # noqa: E402

from gateway import create_app, db  # noqa: E402
from gateway.ledger.pricing import usd_to_micros  # noqa: E402
from gateway.ledger.writer import WRITER  # noqa: E402
from gateway.models import LedgerEntry, Org  # noqa: E402
from gateway.services import tenancy  # noqa: E402
from tests.fakes import FakeOpenAI, serve  # noqa: E402


def _one_client_ssl_context() -> None:
    """The OpenAI and Anthropic SDK clients the tests make (several per test) each loaded the system's
    CA bundle into a new SSL context, ~20 ms and nearly all of a client's construction: they share one,
    built the same way (the environment it reads does not change during a session). Each client keeps
    its own connections; the gateway's own upstream connections (urllib3) are not concerned."""
    import functools

    import httpcore2

    httpcore2.default_ssl_context = functools.lru_cache(maxsize=None)(httpcore2.default_ssl_context)


_one_client_ssl_context()

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-upstream-test"
# The test catalog's prices are high ($1000-$15000 per Mtok, so that charges show in whole micros) and
# every call holds its worst case first (prompt + output cap): the first org gets $1000 on top of the
# first-run $10 so that a call without max_tokens fits. Tests about running out use an org of their own.
DEFAULT_ORG_TOP_UP_USD = 990
DEFAULT_ORG_CREDITS = (10 + DEFAULT_ORG_TOP_UP_USD) * 1_000_000

# Upstream behaviours (see tests/fakes/openai_upstream.py) exposed as model slugs `test/<name>`.
BEHAVIOURS = ["fake-gpt", "fake-tool", "fake-tool-parallel", "fake-cached", "echo", "reset", "drip-30",
              "error-400", "error-401", "error-429", "error-500", "error-503", "slow-3000",
              "hang", "stall", "bad-sse-list", "bad-sse-json"]
PRICES = {"input_per_mtok": 1000, "output_per_mtok": 2000, "cached_input_per_mtok": 250}


def gateway_config(upstream_url: str, anthropic_url: str | None = None, gemini_url: str | None = None,
                   bedrock_url: str | None = None, ollama_url: str | None = None,
                   openrouter_url: str | None = None, openai_batches_url: str | None = None,
                   anthropic_batches_url: str | None = None) -> dict:
    models = [{"slug": f"test/{b}", "context_window": 8192,
               "routes": [{"provider": "fake", "upstream_model": b, **PRICES}]} for b in BEHAVIOURS]
    models.append({"slug": "test/cheap", "routes": [{"provider": "fake", "upstream_model": "fake-gpt",
                                                     "input_per_mtok": 100, "output_per_mtok": 200}]})
    models.append({"slug": "test/embed", "routes": [{"provider": "fake", "upstream_model": "text-embedding-3-small",
                                                     "input_per_mtok": 100, "output_per_mtok": 0}]})
    # Responses fake (tests/fakes/responses_upstream.py): the upstream reports a failure mid-stream
    models.append({"slug": "test/fail", "routes": [{"provider": "fake", "upstream_model": "fail", **PRICES}]})
    # Savings (tests/test_inflight.py): slow enough for identical requests to overlap
    models += [{"slug": f"test/{b}", "routes": [{"provider": "fake", "upstream_model": b, **PRICES}]}
               for b in ("slow-1000", "drip-100")]
    config = {
        "providers": [{"name": "fake", "kind": "openai", "base_url": upstream_url, "api_key": UPSTREAM_KEY,
                       "allow_private": True}],  # every fake upstream listens on 127.0.0.1
        "models": models,
        "aliases": {"fast": "test/fake-gpt"},
        "fallbacks": {"test/error-500": ["test/cheap"]},
        "routing": {"retries": 0},  # retry tests set their own policy
    }
    if anthropic_url:  # only when a test uses the fake_anthropic fixture
        add_anthropic(config, anthropic_url)
    if gemini_url:  # only when a test uses the fake_gemini fixture
        add_gemini(config, gemini_url)
    if bedrock_url:  # only when a test uses the fake_bedrock fixture
        add_bedrock(config, bedrock_url)
    if ollama_url:  # only when a test uses the fake_ollama fixture
        add_ollama(config, ollama_url)
    if openrouter_url:  # only when a test uses the fake_openrouter fixture
        add_openrouter(config, openrouter_url)
    if openai_batches_url:  # only when a test uses the fake_openai_batches fixture
        add_openai_batches(config, openai_batches_url)
    if anthropic_batches_url:  # only when a test uses the fake_anthropic_batches fixture
        add_anthropic_batches(config, anthropic_batches_url)
    return config


@contextmanager
def served(fake, serve_fake=serve):
    """`fake` on an ephemeral loopback port, its URL in `fake.url`, until the block ends. `serve_fake`
    is the fake's module's own `serve` (tests/fakes/*_upstream.py): (server, base URL)."""
    server, fake.url = serve_fake(fake)
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fake_openai():
    with served(FakeOpenAI(api_key=UPSTREAM_KEY)) as fake:
        yield fake


@dataclass
class Gateway:
    url: str
    app: object
    instance: Path
    api_key: str
    admin_email: str
    admin_password: str
    config_path: Path
    env: dict = field(default_factory=dict)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def sdk(self, key: str | None = None, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.v1, api_key=key or self.api_key, max_retries=0, **kw)

    def post(self, path: str, body=None, key: str | None = None, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        headers.setdefault("Authorization", f"Bearer {key or self.api_key}")
        return requests.post(self.url + path, json=body, headers=headers, **kw)

    def flush(self) -> None:
        WRITER.flush()

    def rows(self, **where) -> list[LedgerEntry]:
        self.flush()
        with db.session_scope() as s:
            q = select(LedgerEntry).order_by(LedgerEntry.id)
            for k, v in where.items():
                q = q.where(getattr(LedgerEntry, k) == v)
            return list(s.scalars(q))

    def org(self, name: str = "default") -> Org:
        with db.session_scope() as s:
            return s.scalar(select(Org).where(Org.name == name))

    def new_org(self, name: str, usd: float = 1000) -> Org:
        """An org with `usd` of credits: by default enough for calls that hold their worst case at
        the test catalog's prices (see DEFAULT_ORG_TOP_UP_USD)."""
        with db.write_lock, db.session_scope() as s:
            org = tenancy.create_org(s, name, usd_to_micros(usd), actor="test")
        self.flush()  # the writer's sync picks the change up
        return org

    def new_key(self, org: str = "default", scope: str = "inference", name: str = "") -> str:
        with db.write_lock, db.session_scope() as s:
            secret = tenancy.create_key(s, tenancy.org_by_name(s, org), name=name, scope=scope, actor="test").secret
        self.flush()
        return secret

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `gateway` console script against this instance, as an operator would."""
        proc = subprocess.run([str(Path(sys.executable).parent / "gateway"), *args], env=self.env,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"gateway {' '.join(args)} failed: {proc.stderr}")
        return proc


def pytest_sessionstart(session) -> None:
    """The package byte-compiled once, into its __pycache__ as Python itself would: with
    PYTHONDONTWRITEBYTECODE set, every `gateway` process a test starts (CLI commands, servers,
    workers) would otherwise compile its ~200 modules from source again (~0.25 s each)."""
    import compileall

    compileall.compile_dir(ROOT / "gateway", quiet=2)


def _gateway_env(instance: Path, config_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config_path))
    return env


@pytest.fixture(scope="session")
def schema_template(tmp_path_factory) -> Path:
    """A SQLite file at the schema head, migrated once per session (as `gateway init` would, in a
    child process): each test's instance starts from a copy instead of running every migration."""
    folder = tmp_path_factory.mktemp("schema")
    url = f"sqlite:///{folder / 'gateway.db'}"
    proc = subprocess.run([sys.executable, "-m", "gateway.migrate"], input=url, text=True, capture_output=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return folder / "gateway.db"


def from_template(template: Path, instance: Path) -> None:
    """A new instance's database: a copy of the migrated template, private like the real one."""
    target = instance / "gateway.db"
    if not target.exists():
        shutil.copyfile(template, target)
        target.chmod(0o600)


# A fresh instance's state after its first run and the fixture's own writes (top-up, password), per
# (config, overrides, environment, UTC day): (database file, what the first run printed). Later tests
# on the same key start from a copy of that file, as they start from the schema template, instead of
# repeating the first run's scrypt hash and inserts; each test still gets its own database.
_FIRST_RUNS: dict[tuple, tuple[Path, object]] = {}


def _first_run_key(config_text: str, first_password_changed: bool, overrides: dict) -> tuple:
    from gateway.models import utcnow

    environment = tuple(sorted((k, v) for k, v in os.environ.items() if not k.startswith("PYTEST_")))
    return config_text, first_password_changed, repr(sorted(overrides.items())), environment, utcnow().date()


def _save_first_run(database: Path, folder: Path) -> Path:
    """A consistent copy of the instance's database (SQLite's backup: WAL content included)."""
    import sqlite3

    folder.mkdir(exist_ok=True)
    target = folder / f"first-run-{len(_FIRST_RUNS)}.db"
    source, copy = sqlite3.connect(database), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    return target


@pytest.fixture
def gateway_factory(tmp_path, fake_openai, request, schema_template, tmp_path_factory):
    """Build a live gateway with optional settings overrides; at most one per test."""
    from gateway import boot
    from gateway.server import make_server

    started = []
    wants_anthropic = "fake_anthropic" in request.fixturenames
    fake_anthropic = request.getfixturevalue("fake_anthropic") if wants_anthropic else None
    extra_fakes = {n: request.getfixturevalue(n)
                   for n in ("fake_gemini", "fake_bedrock", "fake_ollama", "fake_openrouter", "fake_openai_batches",
                             "fake_anthropic_batches")
                   if n in request.fixturenames}
    extra_urls = {f"{n[5:]}_url": fake.url for n, fake in extra_fakes.items()}  # gemini_url=, bedrock_url=

    def make(*, first_password_changed: bool = True, **overrides) -> Gateway:
        """`first_password_changed`: the first admin's one-time password counts as already changed
        (tests sign in with it again and again); False keeps it one-time, as a fresh install does."""
        instance = tmp_path / "instance"
        instance.mkdir(exist_ok=True)
        config_text = yaml.safe_dump(gateway_config(fake_openai.url, fake_anthropic.url if fake_anthropic else None,
                                                    **extra_urls))
        # SQLite in the instance folder: from the first-run copy for this key if there is one yet
        key = (_first_run_key(config_text, first_password_changed, overrides)
               if "database_url" not in overrides and not (instance / "gateway.db").exists() else None)
        saved = _FIRST_RUNS.get(key) if key is not None else None
        if "database_url" not in overrides:
            from_template(saved[0] if saved else schema_template, instance)
        config_path = instance / "gateway.yaml"
        config_path.write_text(config_text)
        settings = {"instance": instance, "config_path": config_path, "secret_key": "test-secret",
                    "start_jobs": False, "sync_interval": 0.05, **overrides}
        app = create_app(settings)
        first = boot.prepare(app)  # the config is applied at every start, as in production
        if saved:
            assert first is None, "a first-run copy must not run the first run again"
            first = saved[1]
        else:
            with db.write_lock, db.session_scope() as s:
                tenancy.add_credits(s, tenancy.org_by_name(s, "default"), usd_to_micros(DEFAULT_ORG_TOP_UP_USD),
                                    actor="test", note="test top-up")
            if first_password_changed:
                from gateway.models import User

                with db.write_lock, db.session_scope() as s:
                    s.scalar(select(User).where(User.email == first.email)).must_change_password = False
            if key is not None:
                _FIRST_RUNS[key] = (_save_first_run(instance / "gateway.db",
                                                    tmp_path_factory.getbasetemp() / "first-runs"), first)
        boot.start_background(app)
        server = make_server(app, "127.0.0.1", 0)
        server.start()
        started.append((server, app))
        gw = Gateway(url=f"http://127.0.0.1:{server.server_port}", app=app, instance=instance,
                     api_key=first.api_key, admin_email=first.email, admin_password=first.password,
                     config_path=config_path, env=_gateway_env(instance, config_path))
        gw.env["GATEWAY_SECRET_KEY"] = "test-secret"
        return gw

    yield make
    for server, app in started:
        server.stop(timeout=2)
        boot.stop_background(app)
    fake_openai.reset()
    if fake_anthropic is not None:
        fake_anthropic.reset()
    for fake in extra_fakes.values():
        fake.reset()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def sdk(gateway) -> openai.OpenAI:
    return gateway.sdk()


def configure_savings(gw, **layers) -> None:
    """Write the `savings:` setting (as the config YAML or the console would) and let it load."""
    from gateway import memo, seed

    with db.write_lock, db.session_scope() as s:
        seed.put_setting(s, "savings", layers, actor="test")
        memo.announce(s, "policy")
    gw.flush()


def configure_routing(gw, **values) -> None:
    """Write the `routing:` setting (as the config YAML or the console would) and let it load."""
    from gateway import memo, seed

    with db.write_lock, db.session_scope() as s:
        seed.put_setting(s, "routing", {"retries": 0, **values}, actor="test")
        memo.announce(s, "policy")
    gw.flush()


def savings_override(gw, org: str, layer: str, **values) -> None:
    """A per-org override of one savings layer's settings."""
    from gateway import memo
    from gateway.models import SavingsOverride

    with db.write_lock, db.session_scope() as s:
        org_id = tenancy.org_by_name(s, org).id
        s.add(SavingsOverride(org_id=org_id, app_id=None, layer=layer, settings=values))
        memo.announce(s, "policy")
    gw.flush()


def chat_calls(fake) -> int:
    """Chat completions the fake upstream received."""
    return sum(1 for r in fake.requests if r["path"] == "/v1/chat/completions")


@dataclass
class Assembled:
    text: str
    calls: dict[int, dict]  # tool-call index -> {"id", "name", "args"}, each concatenated from its deltas
    finish: str | None
    usage: object


def assemble(stream, check=None) -> Assembled:
    """What a client builds from an OpenAI chat stream (the SDK's chunks): text, tool calls by index,
    the last finish reason and the usage chunk. `check` sees every chunk (e.g. a schema check)."""
    out = Assembled("", {}, None, None)
    for chunk in stream:
        if check is not None:
            check(chunk)
        out.usage = chunk.usage or out.usage
        for choice in chunk.choices:
            out.finish = choice.finish_reason or out.finish
            out.text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                entry = out.calls.setdefault(tc.index, {"id": "", "name": "", "args": ""})
                entry["id"] += tc.id or ""
                entry["name"] += tc.function.name or ""
                entry["args"] += tc.function.arguments or ""
    return out


@contextmanager
def database_statements():
    """Every SQL statement run inside the block, with the ledger writer's background cycle held, so
    what is counted is the request path's own (the hot path must make none)."""
    from gateway.ledger.writer import WRITER

    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine(), "before_cursor_execute", count)
    try:
        with WRITER._cycle_lock:
            yield statements
    finally:
        event.remove(db.engine(), "before_cursor_execute", count)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raw_socket_post(gw: Gateway, body: dict, path: str = "/v1/chat/completions",
                    timeout: float = 10.0) -> socket.socket:
    """POST `body` over a bare socket, for a client that goes away mid-stream (close the socket); the
    caller reads with `read_events`. Every read waits at most `timeout` seconds."""
    payload = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=timeout)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Authorization: Bearer {gw.api_key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock


def read_events(sock: socket.socket, count: int) -> bytes:
    """Read until `count` SSE `data:` lines have arrived; fails the test, never spins, when the server
    closes the connection first (or sends nothing for the socket's timeout: TimeoutError)."""
    received = b""
    while received.count(b"data: ") < count:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"the server closed the connection after {received.count(b'data: ')} of "
                                 f"{count} events: {received[-500:]!r}")
        received += chunk
    return received


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll until predicate() is truthy (returns it); fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


# ---- OpenAI Files + Batches upstream (tests/fakes/openai_batch_upstream.py) ------------------------
# Slugs `batch-test/<behaviour>` on provider `fakebatch` (kind openai), alias `batchy`; present only for
# tests that use the `fake_openai_batches` fixture.
BATCH_UPSTREAM_KEY = "sk-upstream-batch"
BATCH_BEHAVIOURS = ["gpt-batch", "gpt-batch-cached", "error-400", "batch-expire", "batch-invalid"]


def add_openai_batches(config: dict, url: str) -> None:
    config["providers"].append({"name": "fakebatch", "kind": "openai", "base_url": url, "allow_private": True,
                                "api_key": BATCH_UPSTREAM_KEY, "batch_api": True})
    config["models"] += [{"slug": f"batch-test/{b}", "context_window": 8192, "max_output_tokens": 100,
                          "routes": [{"provider": "fakebatch", "upstream_model": b, **PRICES}]}
                         for b in BATCH_BEHAVIOURS]
    config["aliases"]["batchy"] = "batch-test/gpt-batch"


@pytest.fixture(scope="session")
def fake_openai_batches():
    from tests.fakes.openai_batch_upstream import FakeOpenAIBatches
    from tests.fakes.openai_batch_upstream import serve as serve_batches

    with served(FakeOpenAIBatches(api_key=BATCH_UPSTREAM_KEY), serve_batches) as fake:
        yield fake


ANTHROPIC_BATCH_UPSTREAM_KEY = "sk-ant-upstream-batch"


def add_anthropic_batches(config: dict, url: str) -> None:
    """Slugs `abatch-test/<behaviour>` on provider `fakeanthropicbatch` (kind anthropic)."""
    config["providers"].append({"name": "fakeanthropicbatch", "kind": "anthropic", "base_url": url,
                                "allow_private": True, "api_key": ANTHROPIC_BATCH_UPSTREAM_KEY, "batch_api": True})
    config["models"] += [{"slug": f"abatch-test/{b}", "context_window": 200000, "max_output_tokens": 1024,
                          "routes": [{"provider": "fakeanthropicbatch", "upstream_model": b,
                                      "input_per_mtok": 3000, "output_per_mtok": 15000,
                                      "cached_input_per_mtok": 300}]}
                         for b in ("claude-batch", "claude-batch-cached", "error-400", "batch-expire")]


@pytest.fixture(scope="session")
def fake_anthropic_batches():
    from tests.fakes.anthropic_batch_upstream import FakeAnthropicBatches
    from tests.fakes.anthropic_batch_upstream import serve as serve_batches

    with served(FakeAnthropicBatches(api_key=ANTHROPIC_BATCH_UPSTREAM_KEY), serve_batches) as fake:
        yield fake


# ---- Anthropic upstream (tests/fakes/anthropic_upstream.py) ---------------------------------------
# Slugs `anthropic-test/<behaviour>` on provider `fakeanthropic` (kind anthropic); present in the
# gateway's config only for tests that use the `fake_anthropic` fixture.
ANTHROPIC_UPSTREAM_KEY = "sk-ant-upstream-test"
ANTHROPIC_BEHAVIOURS = ["claude-fake", "claude-tool", "claude-tool-parallel", "claude-cached",
                        "claude-thinking", "claude-thinking-redacted-tool", "echo", "reset",
                        "midstream-error", "error-400", "error-401", "error-413", "error-429", "error-500",
                        "error-529", "bad-sse-list", "bad-sse-json"]
ANTHROPIC_PRICES = {"input_per_mtok": 3000, "output_per_mtok": 15000, "cached_input_per_mtok": 300}


def add_anthropic(config: dict, anthropic_url: str) -> None:
    config["providers"].append({"name": "fakeanthropic", "kind": "anthropic", "base_url": anthropic_url, "allow_private": True,
                                "api_key": ANTHROPIC_UPSTREAM_KEY})
    config["models"] += [{"slug": f"anthropic-test/{b}", "context_window": 200000, "max_output_tokens": 1024,
                          "routes": [{"provider": "fakeanthropic", "upstream_model": b, **ANTHROPIC_PRICES}]}
                         for b in ANTHROPIC_BEHAVIOURS]
    # 529 (overloaded) is retryable: the next route is tried
    config["models"].append({"slug": "anthropic-test/overloaded-first", "routes": [
        {"provider": "fakeanthropic", "upstream_model": u, **ANTHROPIC_PRICES}
        for u in ("error-529", "claude-fake")]})


@pytest.fixture(scope="session")
def fake_anthropic():
    from tests.fakes.anthropic_upstream import FakeAnthropic
    from tests.fakes.anthropic_upstream import serve as serve_anthropic

    with served(FakeAnthropic(api_key=ANTHROPIC_UPSTREAM_KEY), serve_anthropic) as fake:
        yield fake


# ---- Gemini and Bedrock upstreams (tests/fakes/gemini_upstream.py, bedrock_upstream.py) -----------
# Slugs `gemini-test/<behaviour>` and `bedrock-test/<behaviour>`; present in the gateway's config only
# for tests that use the `fake_gemini` / `fake_bedrock` fixtures. Bedrock model ids look like real ones
# (`fake.<behaviour>-v1:0`) so the `:` must be URL-encoded, and signed, as AWS expects.
GEMINI_UPSTREAM_KEY = "gemini-upstream-test"
GEMINI_BEHAVIOURS = ["gemini-fake", "gemini-tool", "gemini-tool-parallel", "gemini-tool-thinking",
                     "gemini-cached", "gemini-thinking", "gemini-safety", "echo", "reset", "error-400",
                     "error-429", "error-500", "text-embedding-004"]
BEDROCK_BEHAVIOURS = ["claude-fake", "claude-tool", "claude-tool-parallel", "claude-cached",
                      "claude-thinking", "guardrail", "reset", "throttled", "error-400", "error-403",
                      "error-429", "error-500", "titan-embed-text"]
BEDROCK_SECRET = "fake/secret+KEY0000000000000000000000000"
BEDROCK_TOKEN = "FwoGZXIvYXdzEFAKE//session+token="
GB_PRICES = {"input_per_mtok": 1000, "output_per_mtok": 4000, "cached_input_per_mtok": 250}


def add_gemini(config: dict, url: str) -> None:
    config["providers"] += [
        {"name": "fakegemini", "kind": "gemini", "base_url": url, "allow_private": True, "api_key": GEMINI_UPSTREAM_KEY},
        {"name": "fakegemini-badkey", "kind": "gemini", "base_url": url, "allow_private": True, "api_key": "AIza-wrong"}]
    config["models"] += [{"slug": f"gemini-test/{b}", "routes": [
        {"provider": "fakegemini", "upstream_model": b, **GB_PRICES}]} for b in GEMINI_BEHAVIOURS]
    config["models"].append({"slug": "gemini-test/bad-key", "routes": [
        {"provider": "fakegemini-badkey", "upstream_model": "gemini-fake", **GB_PRICES}]})


def add_bedrock(config: dict, url: str) -> None:
    sigv4 = f"AKIDFAKEBEDROCK00001:{BEDROCK_SECRET}:{BEDROCK_TOKEN}"
    config["providers"] += [
        {"name": "fakebedrock", "kind": "bedrock", "base_url": f"{url}?region=eu-central-1", "allow_private": True,
         "api_key": sigv4},
        {"name": "fakebedrock-apikey", "kind": "bedrock", "base_url": url, "allow_private": True,
         "api_key": "bedrock-api-key-test"},
        {"name": "fakebedrock-badsecret", "kind": "bedrock", "base_url": f"{url}?region=eu-central-1",
         "allow_private": True,
         "api_key": sigv4.replace("fake/secret", "fake/SECRET")}]
    config["models"] += [{"slug": f"bedrock-test/{b}", "routes": [
        {"provider": "fakebedrock", "upstream_model": f"fake.{b}-v1:0", **GB_PRICES}]}
        for b in BEDROCK_BEHAVIOURS]
    config["models"] += [{"slug": "bedrock-test/api-key", "routes": [
        {"provider": "fakebedrock-apikey", "upstream_model": "fake.claude-fake-v1:0", **GB_PRICES}]},
        {"slug": "bedrock-test/bad-secret", "routes": [
            {"provider": "fakebedrock-badsecret", "upstream_model": "fake.claude-fake-v1:0", **GB_PRICES}]}]


@pytest.fixture(scope="session")
def fake_gemini():
    from tests.fakes.gemini_upstream import FakeGemini, serve_gemini

    with served(FakeGemini(api_key=GEMINI_UPSTREAM_KEY), serve_gemini) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_bedrock():
    from tests.fakes.bedrock_upstream import FakeBedrock, serve_bedrock

    fake = FakeBedrock(secret_key=BEDROCK_SECRET, session_token=BEDROCK_TOKEN, region="eu-central-1",
                       api_key="bedrock-api-key-test")
    with served(fake, serve_bedrock):
        yield fake


# ---- Ollama and OpenRouter upstreams (tests/fakes/ollama_upstream.py, openrouter_upstream.py) ---------
# Slugs `ollama-test/<behaviour>` on provider `fakeollama` (kind ollama) and `openrouter-test/<behaviour>`
# on provider `fakeopenrouter` (kind openrouter); present only for tests using the matching fixture.
OLLAMA_BEHAVIOURS = ["llama3.2", "echo", "think", "tool", "tool-parallel", "truncate", "midstream-error",
                     "error-400", "error-429", "error-500", "missing"]
OPENROUTER_UPSTREAM_KEY = "sk-or-upstream-test"
OPENROUTER_BEHAVIOURS = ["fake-gpt", "fake-tool", "fake-tool-parallel", "echo", "reset", "error-400",
                         "error-402", "error-429", "error-500"]


def add_ollama(config: dict, ollama_url: str) -> None:
    config["providers"].append({"name": "fakeollama", "kind": "ollama", "base_url": ollama_url,
                                "allow_private": True})
    config["models"] += [{"slug": f"ollama-test/{b}", "routes": [
        {"provider": "fakeollama", "upstream_model": b, **PRICES}]} for b in OLLAMA_BEHAVIOURS]
    config["models"] += [
        {"slug": "ollama-test/free", "routes": [  # a local model: the catalog prices it at zero
            {"provider": "fakeollama", "upstream_model": "llama3.2", "input_per_mtok": 0,
             "output_per_mtok": 0}]},
        {"slug": "ollama-test/embed", "routes": [
            {"provider": "fakeollama", "upstream_model": "nomic-embed-text", "input_per_mtok": 100,
             "output_per_mtok": 0}]},
        {"slug": "ollama-test/embed-falls-back", "routes": [  # 500 is retryable: the OpenAI route serves
            {"provider": "fakeollama", "upstream_model": "error-500", "input_per_mtok": 100,
             "output_per_mtok": 0},
            {"provider": "fake", "upstream_model": "text-embedding-3-small", "input_per_mtok": 100,
             "output_per_mtok": 0}]},
    ]


def add_openrouter(config: dict, openrouter_url: str) -> None:
    config["providers"].append({"name": "fakeopenrouter", "kind": "openrouter", "base_url": openrouter_url,
                                "allow_private": True, "api_key": OPENROUTER_UPSTREAM_KEY})
    config["models"] += [{"slug": f"openrouter-test/{b}", "routes": [
        {"provider": "fakeopenrouter", "upstream_model": b, **PRICES}]} for b in OPENROUTER_BEHAVIOURS]
    config["models"].append({"slug": "openrouter-test/embed", "routes": [
        {"provider": "fakeopenrouter", "upstream_model": "text-embedding-3-small", "input_per_mtok": 100,
         "output_per_mtok": 0}]})
    config["models"].append({"slug": "openrouter-test/out-of-credits", "routes": [  # 402 is retryable: next route
        {"provider": "fakeopenrouter", "upstream_model": "error-402", **PRICES},
        {"provider": "fake", "upstream_model": "fake-gpt", **PRICES}]})


@pytest.fixture(scope="session")
def fake_ollama():
    from tests.fakes.ollama_upstream import FakeOllama
    from tests.fakes.ollama_upstream import serve as serve_ollama

    with served(FakeOllama(), serve_ollama) as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_openrouter():
    from tests.fakes.openrouter_upstream import FakeOpenRouter
    from tests.fakes.openrouter_upstream import serve as serve_openrouter

    with served(FakeOpenRouter(api_key=OPENROUTER_UPSTREAM_KEY), serve_openrouter) as fake:
        yield fake


# ---- the console in a real browser (Debian's Chromium, driven by Playwright's sync API) -----------------
# Playwright runs in this gevent-patched process: its driver talks over a pipe through an asyncio loop
# whose selector is gevent's, so while Playwright waits the hub keeps serving the gateway. `make test`
# installs Debian's chromium; a missing browser is a failure, never a skip.
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run"]
TIMEOUT_MS = 15_000


@pytest.fixture
def page():
    """A fresh page in headless Chromium (1400 x 900), every wait and `expect` bounded by TIMEOUT_MS."""
    from playwright import sync_api

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            context.set_default_navigation_timeout(TIMEOUT_MS)
            sync_api.expect.set_options(timeout=TIMEOUT_MS)
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def start_gateway(tmp: Path, config: dict, **overrides) -> tuple[Gateway, object, object]:
    """A live gateway on `config` (the YAML as a dict) for a module or class of tests that share one:
    (gateway, server, app). Stop it with stop_gateway(server, app)."""
    from gateway import boot
    from gateway.server import make_server

    instance = tmp / "instance"
    instance.mkdir()
    config_path = instance / "gateway.yaml"
    for provider in config.get("providers", ()):
        provider.setdefault("allow_private", True)  # the fakes listen on loopback
    config_path.write_text(yaml.safe_dump(config))
    app = create_app({"instance": instance, "config_path": config_path, "secret_key": "test-secret",
                      "start_jobs": False, "sync_interval": 0.05, **overrides})
    first = boot.prepare(app)
    with db.write_lock, db.session_scope() as s:  # calls hold their worst case at the test catalog's prices
        tenancy.add_credits(s, tenancy.org_by_name(s, "default"), usd_to_micros(DEFAULT_ORG_TOP_UP_USD),
                            actor="test", note="test top-up")
    boot.start_background(app)
    server = make_server(app, "127.0.0.1", 0)
    server.start()
    gw = Gateway(url=f"http://127.0.0.1:{server.server_port}", app=app, instance=instance, api_key=first.api_key,
                 admin_email=first.email, admin_password=first.password, config_path=config_path,
                 env=_gateway_env(instance, config_path))
    return gw, server, app


def stop_gateway(server, app) -> None:
    from gateway import boot

    server.stop(timeout=2)
    boot.stop_background(app)


@pytest.fixture(scope="module")
def faulty_upstream():
    """tests/fakes/faulty_upstream.py, one per module: an upstream that answers well or fails on demand."""
    from tests.fakes.faulty_upstream import FaultyUpstream, serve_faulty

    fake = FaultyUpstream()
    server, fake.url = serve_faulty(fake)
    fake.pool = server.pool
    yield fake
    fake.release()
    from gateway.providers import http

    for base_url in [u for u in http._pools if u.startswith(fake.url)]:  # the gateway's kept-alive
        http.forget(base_url)  # connections: otherwise their handlers wait out the stop's timeout
    server.stop(timeout=2)


SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"


def screenshot(page, name: str) -> None:
    """A 1280x800 screenshot of the page into docs/screenshots/<name>.png, when GATEWAY_SCREENSHOTS=1
    (refreshing the docs); otherwise the page is still rendered to an image, so a page that cannot
    be drawn fails, but the clone's files are left as they are."""
    page.set_viewport_size({"width": 1280, "height": 800})
    page.evaluate("window.scrollTo(0, 0)")
    if os.environ.get("GATEWAY_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    else:
        assert page.screenshot()
