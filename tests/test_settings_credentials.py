"""Provider credentials: a key saved in the console wins over the config and the environment, at
every start, until it is reset (then the config's or the environment's applies again). The page
names each key's source ("from config", "from environment", "set in console"), never shows more
than a saved key's last 4 characters, audits every change without the key, and refuses org admins."""

import pytest
import yaml
from sqlalchemy import select

from gateway import boot, create_app, db
from gateway.memo import MEMO
from gateway.models import AuditLog, Provider
from gateway.server import make_server
from tests.conftest import Gateway, from_template, served
from tests.fakes import FakeOpenAI, serve
from tests.test_routing_console import Console, admin, org_console

ENV_ONE, ENV_TWO = "sk-env-first-1111", "sk-env-second-5555"
CONFIG_ONE, CONFIG_TWO = "sk-config-first-2222", "sk-config-second-6666"
CONSOLE_ENV, CONSOLE_CFG = "sk-console-for-env-3333", "sk-console-for-cfg-4444"
MSG = [{"role": "user", "content": "which key"}]


@pytest.fixture
def upstream():
    fake = FakeOpenAI(api_key="unused")
    fake.extra_keys = {ENV_ONE, ENV_TWO, CONFIG_ONE, CONFIG_TWO, CONSOLE_ENV, CONSOLE_CFG}
    with served(fake, serve) as fake:
        yield fake


class Instance:
    """One instance folder started, stopped and started again, as `gateway serve` would be."""

    def __init__(self, tmp_path, upstream, schema_template):
        self.folder = tmp_path / "instance"
        self.folder.mkdir()
        from_template(schema_template, self.folder)
        self.config = self.folder / "gateway.yaml"
        self.upstream = upstream
        self.running = None

    def write_config(self, config_key: str) -> None:
        url = self.upstream.url
        self.config.write_text(yaml.safe_dump({
            "providers": [
                {"name": "envp", "kind": "openai", "base_url": url, "api_key_env": "ENVP_API_KEY", "allow_private": True},
                {"name": "cfgp", "kind": "openai", "base_url": url, "api_key": config_key, "allow_private": True},
            ],
            "models": [{"slug": f"m/{p}", "routes": [{"provider": p, "upstream_model": "fake-gpt", "input_per_mtok": 1,
                                                      "output_per_mtok": 2}]} for p in ("envp", "cfgp")],
        }))

    def start(self) -> Gateway:
        app = create_app({"instance": self.folder, "config_path": self.config, "secret_key": "test-secret",
                          "start_jobs": False, "sync_interval": 0.05})
        first = boot.prepare(app)
        if first is not None:
            self.first = first
            from gateway.models import User

            with db.write_lock, db.session_scope() as s:
                s.scalar(select(User).where(User.email == first.email)).must_change_password = False
        boot.start_background(app)
        server = make_server(app, "127.0.0.1", 0)
        server.start()
        self.running = (server, app)
        return Gateway(url=f"http://127.0.0.1:{server.server_port}", app=app, instance=self.folder,
                       api_key=self.first.api_key, admin_email=self.first.email,
                       admin_password=self.first.password, config_path=self.config)

    def stop(self) -> None:
        server, app = self.running
        server.stop(timeout=2)
        boot.stop_background(app)
        self.running = None


@pytest.fixture
def instance(tmp_path, upstream, schema_template):
    inst = Instance(tmp_path, upstream, schema_template)
    yield inst
    if inst.running:
        inst.stop()


def used_key(gw, upstream, model: str) -> str:
    """The key the upstream saw for one request to `model` (an OpenAI SDK call through the gateway)."""
    gw.sdk().chat.completions.create(model=model, messages=MSG)
    return upstream.requests[-1]["headers"]["authorization"].removeprefix("Bearer ")


def row_of(page: str, name: str) -> str:
    return page.split(f'data-provider="{name}"')[1].split("</tr>")[0]


def provider_id(name: str) -> int:
    with db.session_scope() as s:
        return s.scalar(select(Provider.id).where(Provider.name == name))


def test_console_key_wins_at_every_start_until_reset(instance, upstream, monkeypatch):
    monkeypatch.setenv("ENVP_API_KEY", ENV_ONE)
    instance.write_config(CONFIG_ONE)
    gw = instance.start()
    console = admin(gw)
    page = console.get("/admin/providers").text
    assert 'data-source="from environment"' in row_of(page, "envp")
    assert 'data-source="from config"' in row_of(page, "cfgp")
    assert used_key(gw, upstream, "m/envp") == ENV_ONE and used_key(gw, upstream, "m/cfgp") == CONFIG_ONE

    for name, key in (("envp", CONSOLE_ENV), ("cfgp", CONSOLE_CFG)):
        r = console.post(f"/admin/providers/{provider_id(name)}/key", {"api_key": f"  {key}\n"}, htmx=True)
        assert r.status_code == 200 and f"Saved a key for {name} in the console (…{key[-4:]})" in r.text
        assert 'data-source="set in console"' in row_of(r.text, name) and key not in r.text
    assert used_key(gw, upstream, "m/envp") == CONSOLE_ENV and used_key(gw, upstream, "m/cfgp") == CONSOLE_CFG

    # restart with another environment value and another config key: the console's keys still win
    instance.stop()
    monkeypatch.setenv("ENVP_API_KEY", ENV_TWO)
    instance.write_config(CONFIG_TWO)
    gw = instance.start()
    assert used_key(gw, upstream, "m/envp") == CONSOLE_ENV and used_key(gw, upstream, "m/cfgp") == CONSOLE_CFG
    console = admin(gw)
    page = console.get("/admin/providers").text
    assert 'data-source="set in console"' in row_of(page, "envp") and "…3333" in row_of(page, "envp")
    assert 'data-source="set in console"' in row_of(page, "cfgp") and "…4444" in row_of(page, "cfgp")
    for secret in (CONSOLE_ENV, CONSOLE_CFG, ENV_TWO, CONFIG_TWO):
        assert secret not in page

    # reset: back to the environment's and the config's (the new ones)
    r = console.post(f"/admin/providers/{provider_id('envp')}/key/reset", {}, htmx=True)
    assert "Reset the key of envp: now from environment." in r.text
    assert 'data-source="from environment"' in row_of(r.text, "envp")
    r = console.post(f"/admin/providers/{provider_id('cfgp')}/key/reset", {}, htmx=True)
    assert "now from config" in r.text
    assert used_key(gw, upstream, "m/envp") == ENV_TWO and used_key(gw, upstream, "m/cfgp") == CONFIG_TWO
    # and it stays reset across a start
    instance.stop()
    gw = instance.start()
    assert used_key(gw, upstream, "m/envp") == ENV_TWO and used_key(gw, upstream, "m/cfgp") == CONFIG_TWO

    with db.session_scope() as s:
        audit = s.scalars(select(AuditLog).where(AuditLog.action.like("provider.key%")).order_by(AuditLog.id)).all()
        stored = s.scalar(select(Provider).where(Provider.name == "envp"))
    assert [(a.action, a.target) for a in audit] == [("provider.key_set", "envp"), ("provider.key_set", "cfgp"),
                                                     ("provider.key_reset", "envp"), ("provider.key_reset", "cfgp")]
    assert "…3333" in audit[0].detail and not any(k in a.detail for a in audit for k in (CONSOLE_ENV, CONSOLE_CFG))
    assert stored.console_key_enc is None and stored.console_key_hint is None


def test_the_console_key_is_encrypted_and_bound_to_its_provider(instance, upstream, monkeypatch):
    monkeypatch.setenv("ENVP_API_KEY", ENV_ONE)
    instance.write_config(CONFIG_ONE)
    gw = instance.start()
    admin(gw).post(f"/admin/providers/{provider_id('envp')}/key", {"api_key": CONSOLE_ENV})
    with db.write_lock, db.session_scope() as s:
        envp = s.scalar(select(Provider).where(Provider.name == "envp"))
        cfgp = s.scalar(select(Provider).where(Provider.name == "cfgp"))
        assert CONSOLE_ENV.encode() not in envp.console_key_enc and envp.console_key_hint == "3333"
        cfgp.console_key_enc, cfgp.console_key_hint = envp.console_key_enc, "3333"  # copied to another provider
    with db.session_scope() as s:
        MEMO.reload(s, "catalog")
    assert MEMO.catalog.providers["envp"].api_key == CONSOLE_ENV
    assert MEMO.catalog.providers["cfgp"].api_key is None  # does not decrypt under another name: no key used


@pytest.mark.parametrize("value, message", [
    ("", "Enter the API key"),
    ("   ", "Enter the API key"),
    ("sk-with space", "spaces or control characters"),
    ("sk-\x00nul", "spaces or control characters"),
    ("k" * 5000, "too long"),
])
def test_bad_keys_are_refused_and_change_nothing(instance, upstream, monkeypatch, value, message):
    monkeypatch.setenv("ENVP_API_KEY", ENV_ONE)
    instance.write_config(CONFIG_ONE)
    gw = instance.start()
    r = admin(gw).post(f"/admin/providers/{provider_id('envp')}/key", {"api_key": value}, htmx=True)
    assert r.status_code == 200 and "Key not saved" in r.text and message in r.text
    assert used_key(gw, upstream, "m/envp") == ENV_ONE
    with db.session_scope() as s:
        assert s.scalar(select(Provider.console_key_enc).where(Provider.name == "envp")) is None


def test_missing_provider_and_reset_without_a_console_key(instance, upstream, monkeypatch):
    monkeypatch.setenv("ENVP_API_KEY", ENV_ONE)
    instance.write_config(CONFIG_ONE)
    gw = instance.start()
    console = admin(gw)
    assert console.post("/admin/providers/99999/key", {"api_key": CONSOLE_ENV}).status_code == 404
    assert console.post("/admin/providers/99999/key/reset", {}).status_code == 404
    r = console.post(f"/admin/providers/{provider_id('envp')}/key/reset", {}, htmx=True)
    assert "envp has no key set in the console" in r.text


def test_org_admins_and_members_cannot_set_or_reset_keys(instance, upstream, monkeypatch):
    from tests.test_settings_features import member_console

    monkeypatch.setenv("ENVP_API_KEY", ENV_ONE)
    instance.write_config(CONFIG_ONE)
    gw = instance.start()
    admin(gw).post(f"/admin/providers/{provider_id('cfgp')}/key", {"api_key": CONSOLE_CFG})
    consoles: list[Console] = [org_console(gw, "default"), member_console(gw, "default")]
    for console in consoles:
        for name in ("envp", "cfgp"):
            assert console.post(f"/admin/providers/{provider_id(name)}/key", {"api_key": "sk-stolen-9999"}).status_code == 403
            assert console.post(f"/admin/providers/{provider_id(name)}/key/reset", {}).status_code == 403
    assert used_key(gw, upstream, "m/envp") == ENV_ONE and used_key(gw, upstream, "m/cfgp") == CONSOLE_CFG
