"""Fixtures: a fake OpenAI upstream, and a real gateway (real SQLite, real gevent server on loopback)."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import openai  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import select  # noqa: E402

from gateway import accounts, create_app, db  # noqa: E402
from gateway.ledger.pricing import usd_to_micros  # noqa: E402
from gateway.ledger.writer import WRITER  # noqa: E402
from gateway.models import LedgerEntry, Org  # noqa: E402
from tests.fakes import FakeOpenAI, serve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_KEY = "sk-upstream-test"

# Upstream behaviours (see tests/fakes/openai_upstream.py) exposed as model slugs `test/<name>`.
BEHAVIOURS = ["fake-gpt", "fake-tool", "fake-tool-parallel", "fake-cached", "echo", "reset", "drip-30",
              "error-400", "error-401", "error-429", "error-500", "error-503", "slow-3000"]
PRICES = {"input_per_mtok": 1000, "output_per_mtok": 2000, "cached_input_per_mtok": 250}


def gateway_config(upstream_url: str) -> dict:
    models = [{"slug": f"test/{b}", "context_window": 8192,
               "routes": [{"provider": "fake", "upstream_model": b, **PRICES}]} for b in BEHAVIOURS]
    models.append({"slug": "test/cheap", "routes": [{"provider": "fake", "upstream_model": "fake-gpt",
                                                     "input_per_mtok": 100, "output_per_mtok": 200}]})
    return {
        "providers": [{"name": "fake", "kind": "openai", "base_url": upstream_url, "api_key": UPSTREAM_KEY}],
        "models": models,
        "aliases": {"fast": "test/fake-gpt"},
        "fallbacks": {"test/error-500": ["test/cheap"]},
    }


@pytest.fixture(scope="session")
def fake_openai():
    fake = FakeOpenAI(api_key=UPSTREAM_KEY)
    server, url = serve(fake)
    fake.url = url
    yield fake
    server.stop()


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

    def new_org(self, name: str, usd: float = 10) -> Org:
        with db.write_lock, db.session_scope() as s:
            org = accounts.create_org(s, name, usd_to_micros(usd), actor="test")
        self.flush()  # the writer's sync picks the change up
        return org

    def new_key(self, org: str = "default", scope: str = "inference", name: str = "") -> str:
        with db.write_lock, db.session_scope() as s:
            secret = accounts.create_key(s, accounts.org_by_name(s, org), name=name, scope=scope, actor="test").secret
        self.flush()
        return secret

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the `gateway` console script against this instance, as an operator would."""
        proc = subprocess.run([str(Path(sys.executable).parent / "gateway"), *args], env=self.env,
                              capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"gateway {' '.join(args)} failed: {proc.stderr}")
        return proc


def _gateway_env(instance: Path, config_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config_path))
    return env


@pytest.fixture
def gateway_factory(tmp_path, fake_openai):
    """Build a live gateway with optional settings overrides; at most one per test."""
    from gateway import boot
    from gateway.server import make_server

    started = []

    def make(**overrides) -> Gateway:
        instance = tmp_path / "instance"
        instance.mkdir(exist_ok=True)
        config_path = instance / "gateway.yaml"
        config_path.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
        settings = {"instance": instance, "config_path": config_path, "secret_key": "test-secret",
                    "start_jobs": False, "sync_interval": 0.05, **overrides}
        app = create_app(settings)
        first = boot.prepare(app)
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


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def sdk(gateway) -> openai.OpenAI:
    return gateway.sdk()


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
