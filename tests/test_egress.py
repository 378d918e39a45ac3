"""Where provider traffic may go: metadata and link-local addresses never, loopback and private ones
only for providers marked allow_private; checked when a base URL is set (config, console) and again
after DNS resolution at connect time; redirects are not followed. `api_key_env` names only
variables allowed by GATEWAY_KEY_ENV_ALLOW."""

import socket

import pytest
from gevent.pywsgi import WSGIServer

from gateway import db, seed
from gateway.memo import MEMO
from gateway.providers import egress
from tests.conftest import PRICES, UPSTREAM_KEY, chat_calls
from tests.test_routing_console import admin

MSG = [{"role": "user", "content": "hi"}]
NEVER = ["http://169.254.169.254/latest", "http://metadata.google.internal/computeMetadata/v1",
         "http://metadata.google.internal./x", "http://100.100.100.200", "http://[fd00:ec2::254]",
         "http://[fe80::1]:8080", "http://[::ffff:169.254.169.254]", "http://0xa9fea9fe", "http://2852039166",
         "http://0251.0376.0251.0376"]
PRIVATE = ["http://127.0.0.1:11434", "http://0x7f000001", "http://2130706433", "http://0177.0.0.1", "http://127.1",
           "http://localhost:8000/v1", "http://10.1.2.3/v1", "http://192.168.1.20", "http://[::1]:8080",
           "http://0.0.0.0:80", "http://[::ffff:127.0.0.1]"]


@pytest.mark.parametrize("url", NEVER)
def test_metadata_and_link_local_are_refused_even_when_private_is_allowed(url):
    assert egress.check_url(url, allow_private=False)
    assert "never allowed" in egress.check_url(url, allow_private=True)


@pytest.mark.parametrize("url", PRIVATE)
def test_loopback_and_private_need_allow_private(url):
    assert "allow_private" in egress.check_url(url, allow_private=False)
    assert egress.check_url(url, allow_private=True) is None


def test_public_hosts_pass_the_static_check():
    for url in ("https://api.openai.com/v1", "https://api.anthropic.com", "http://8.8.8.8", "https://beef.cafe"):
        assert egress.check_url(url, allow_private=False) is None


def _config(base_url: str, **extra) -> str:
    fields = "".join(f", {k}: {v}" for k, v in extra.items())
    return f"providers:\n  - {{name: p, kind: openai, base_url: '{base_url}'{fields}}}\n"


def test_config_load_refuses_with_a_clear_message():
    with pytest.raises(seed.ConfigError, match="provider 'p': base_url refused: 169.254.169.254 is a link-local"):
        seed.parse(_config("http://169.254.169.254/v1", allow_private="true"), "gw.yaml")
    with pytest.raises(seed.ConfigError, match="0x7f000001 means 127.0.0.1 is a loopback .*allow_private"):
        seed.parse(_config("http://0x7f000001/v1"), "gw.yaml")
    assert seed.parse(_config("http://127.0.0.1:11434", allow_private="true"))["providers"][0]["allow_private"]


def test_api_key_env_accepts_only_allowed_names(monkeypatch):
    monkeypatch.delenv("GATEWAY_KEY_ENV_ALLOW", raising=False)
    with pytest.raises(seed.ConfigError, match="HOME is not an allowed key variable"):
        seed.parse(_config("https://api.example.com", api_key_env="HOME"))
    with pytest.raises(seed.ConfigError, match="gateway's own settings"):
        seed.parse(_config("https://api.example.com", api_key_env="GATEWAY_SECRET_KEY"))
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "MY_KEY"):
        seed.parse(_config("https://api.example.com", api_key_env=name))
    monkeypatch.setenv("GATEWAY_KEY_ENV_ALLOW", "ACME_*")
    seed.parse(_config("https://api.example.com", api_key_env="ACME_SECRET"))
    with pytest.raises(seed.ConfigError, match="ACME_"):
        seed.parse(_config("https://api.example.com", api_key_env="OPENAI_API_KEY"))


def test_a_stored_disallowed_env_name_is_never_read(gateway, monkeypatch):
    """A database written before the rule (api_key_env: HOME) sends nothing upstream."""
    monkeypatch.setenv("HOME", "/home/someone")
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, {"providers": [{"name": "homey", "kind": "openai", "base_url": "https://api.example.com",
                                      "api_key_env": "HOME"}]}, "test-secret")
    gateway.flush()
    assert MEMO.catalog.providers["homey"].api_key is None


@pytest.mark.parametrize("base_url, fields, says", [
    ("http://169.254.169.254/v1", {"allow_private": "on"}, "link-local or cloud metadata"),
    ("http://metadata.google.internal/v1", {"allow_private": "on"}, "cloud metadata service"),
    ("http://0x7f000001:9/v1", {"allow_private": None}, "mark the provider allow_private"),
    ("https://api.example.com/v1", {"api_key": None, "api_key_env": "HOME"}, "HOME is not an allowed key variable"),
])
def test_the_console_form_refuses_with_the_reason(gateway, base_url, fields, says):
    console = admin(gateway)
    data = {"name": "evil", "kind": "openai", "base_url": base_url, "api_key": "sk-x-123456789", "enabled": "on",
            "responses_api": "auto", **fields}
    r = console.post("/admin/providers", {k: v for k, v in data.items() if v is not None}, htmx=True)
    assert says in r.text
    assert "evil" not in MEMO.catalog.providers


def _add_unchecked(gateway, name: str, base_url: str, allow_private: bool) -> str:
    """A provider written straight to the database (as a database from before the guard holds it)."""
    slug = f"{name}/chat"
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, {"providers": [{"name": name, "kind": "openai", "base_url": base_url, "api_key": UPSTREAM_KEY,
                                      "allow_private": allow_private}],
                       "models": [{"slug": slug, "routes": [
                           {"provider": name, "upstream_model": "fake-gpt", **PRICES}]}]}, "test-secret")
    gateway.flush()
    return slug


def test_connect_time_refuses_loopback_without_allow_private(gateway, fake_openai):
    # the fake's own address in another spelling (the conftest's provider allows its usual one)
    slug = _add_unchecked(gateway, "sneaky", fake_openai.url.replace("127.0.0.1", "0x7f000001"), allow_private=False)
    before = chat_calls(fake_openai)
    r = gateway.post("/v1/chat/completions", {"model": slug, "messages": MSG})
    assert r.status_code == 502 and r.json()["error"]["type"] == "api_error"
    assert chat_calls(fake_openai) == before  # nothing went out
    ok = _add_unchecked(gateway, "local", fake_openai.url.replace("127.0.0.1", "localhost"), allow_private=True)
    assert gateway.post("/v1/chat/completions", {"model": ok, "messages": MSG}).status_code == 200


def test_connect_time_checks_what_the_name_resolves_to(gateway, fake_openai, monkeypatch):
    """A public-looking name that resolves to the metadata address (or rebinds to it) is refused,
    allow_private or not; the connection goes to the checked address, not a second lookup."""
    real = socket.getaddrinfo
    port = int(fake_openai.url.rsplit(":", 1)[1].split("/")[0])
    answers = {"rebind.example": "169.254.169.254", "internal.example": "127.0.0.1"}

    def resolve(host, *args, **kw):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port))]
        return real(host, *args, **kw)

    monkeypatch.setattr(egress.socket, "getaddrinfo", resolve)
    with pytest.raises(egress.EgressRefused, match="never allowed"):
        egress.guard_address("rebind.example", port, "http://rebind.example")
    slug = _add_unchecked(gateway, "rebind", f"http://rebind.example:{port}/v1", allow_private=True)
    before = chat_calls(fake_openai)
    assert gateway.post("/v1/chat/completions", {"model": slug, "messages": MSG}).status_code == 502
    assert chat_calls(fake_openai) == before
    # a name resolving to loopback reaches the fake only when its provider allows private addresses
    assert egress.check_url(f"http://internal.example:{port}/v1", allow_private=False) is None  # unknown statically
    closed = _add_unchecked(gateway, "internal", f"http://internal.example:{port}/v1", allow_private=False)
    assert gateway.post("/v1/chat/completions", {"model": closed, "messages": MSG}).status_code == 502
    opened = _add_unchecked(gateway, "internal", f"http://internal.example:{port}/v1", allow_private=True)
    assert gateway.post("/v1/chat/completions", {"model": opened, "messages": MSG}).status_code == 200


@pytest.fixture
def redirector(fake_openai):
    """An upstream that answers every request with a redirect to the (loopback) fake."""
    def app(environ, start_response):
        start_response("307 Temporary Redirect", [("Location", fake_openai.url + "/chat/completions"),
                                                 ("Content-Length", "0")])
        return [b""]

    server = WSGIServer(("127.0.0.1", 0), app, log=None)
    server.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.stop()


def test_redirects_are_not_followed(gateway, fake_openai, redirector):
    slug = _add_unchecked(gateway, "bouncer", redirector, allow_private=True)
    before = chat_calls(fake_openai)
    r = gateway.post("/v1/chat/completions", {"model": slug, "messages": MSG})
    assert r.status_code == 502
    assert chat_calls(fake_openai) == before


def test_withdrawing_allow_private_closes_kept_alive_connections(gateway, fake_openai):
    url = fake_openai.url.replace("127.0.0.1", "2130706433")  # its own pool, apart from the conftest provider's
    slug = _add_unchecked(gateway, "lan", url, allow_private=True)
    assert gateway.post("/v1/chat/completions", {"model": slug, "messages": MSG}).status_code == 200
    _add_unchecked(gateway, "lan", url, allow_private=False)
    assert gateway.post("/v1/chat/completions", {"model": slug, "messages": MSG}).status_code == 502


def test_check_config_on_the_command_line_names_the_refusal(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "gw.yaml"
    path.write_text(_config("http://[::ffff:a9fe:a9fe]/latest/meta-data", allow_private="true"))
    exe = str(Path(sys.executable).parent / "gateway")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
           "GATEWAY_INSTANCE": str(tmp_path / "inst")}
    proc = subprocess.run([exe, "check-config", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert "base_url refused" in proc.stderr and "169.254.169.254" in proc.stderr
