"""Gateway settings -> Ollama: Test reads a real-wire fake Ollama's `/api/tags` through the egress
guard; Save adds the `ollama` provider and serves its models as `ollama/<name>` at zero cost; bad
addresses (link-local, metadata, not http) are refused before any connection; a hostile instance
(hanging, malformed, huge, failing) gets a clear message; a local Ollama found at start is offered
on the Ollama and Providers pages and by `gateway serve`, never added by itself."""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
import yaml
from sqlalchemy import select

from gateway import db
from gateway.models import AuditLog, Model, Provider, Route
from gateway.services import ollama as ollama_service
from tests.conftest import free_port, served, wait_for
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.ollama_upstream import serve as serve_ollama
from tests.test_routing_console import admin


@pytest.fixture
def ollama():
    """A fake Ollama of this test's own (the gateway's config does not name it)."""
    with served(FakeOllama(), serve_ollama) as fake:
        yield fake
    ollama_service.forget_offer()


def ollama_models() -> dict[str, tuple[str, int, int]]:
    with db.session_scope() as s:
        q = (select(Model.slug, Route.upstream_model, Route.input_micros_per_mtok, Route.output_micros_per_mtok)
             .join(Route, Route.model_id == Model.id).join(Provider, Provider.id == Route.provider_id)
             .where(Provider.name == "ollama"))
        return {slug: (up, i, o) for slug, up, i, o in s.execute(q).all()}


def test_test_lists_the_models_and_save_serves_them_at_zero_cost(gateway, ollama):
    console = admin(gateway)
    page = console.get("/admin/ollama")
    assert page.status_code == 200 and 'id="ollama-test"' in page.text

    r = console.post("/admin/ollama/test", {"base_url": ollama.url}, htmx=True)
    assert r.status_code == 200 and "Ollama answered: 3 models" in r.text
    for slug, name in (("ollama/llama3.2", "llama3.2:latest"), ("ollama/qwen3:8b", "qwen3:8b")):
        assert f"<code>{slug}</code></td><td>{name}</td>" in r.text
    assert ollama.requests[-1]["path"] == "/api/tags" and ollama_models() == {}  # Test saves nothing

    r = console.post("/admin/ollama", {"base_url": ollama.url + "/"}, htmx=True)
    assert r.status_code == 200 and "Saved Ollama at" in r.text, r.text
    assert ollama_models() == {"ollama/llama3.2": ("llama3.2:latest", 0, 0),
                               "ollama/nomic-embed-text": ("nomic-embed-text:latest", 0, 0),
                               "ollama/qwen3:8b": ("qwen3:8b", 0, 0)}
    with db.session_scope() as s:
        p = s.scalar(select(Provider).where(Provider.name == "ollama"))
        audit = s.scalar(select(AuditLog).where(AuditLog.action == "ollama.save"))
    assert (p.kind, p.base_url, p.allow_private, p.enabled) == ("ollama", ollama.url, True, True)
    assert audit.actor == gateway.admin_email and "models at $0" in audit.detail
    gateway.flush()

    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="ollama/llama3.2", messages=[{"role": "user", "content": "hello local"}])
    assert raw.parse().choices[0].message.content == "Hello from ollama llama3.2:latest."
    assert raw.headers["x-gateway-charge"] == "0.000000" and raw.headers["x-gateway-route"] == "ollama/llama3.2:latest"
    assert ollama.requests[-1]["path"] == "/api/chat" and ollama.requests[-1]["body"]["model"] == "llama3.2:latest"
    assert "ollama/qwen3:8b" in {m.id for m in gateway.sdk().models.list().data}

    # a model removed from the instance goes on the next save; a new one comes
    ollama.tags = ["llama3.2:latest", "mistral:7b"]
    r = console.post("/admin/ollama", {"base_url": ollama.url})
    assert "added ollama/mistral:7b" in r.text and "ollama/qwen3:8b" in r.text.split("removed")[1]
    assert set(ollama_models()) == {"ollama/llama3.2", "ollama/mistral:7b"}
    page = console.get("/admin/ollama").text
    assert 'data-model="ollama/mistral:7b"' in page and 'data-model="ollama/qwen3:8b"' not in page


@pytest.mark.parametrize("url, message", [
    ("http://169.254.169.254", "link-local or cloud metadata"),
    ("http://0xa9fea9fe:11434", "link-local or cloud metadata"),  # 169.254.169.254 spelled in hex
    ("http://[::ffff:169.254.169.254]:11434", "link-local or cloud metadata"),
    ("http://[fe80::1]:11434", "link-local or cloud metadata"),
    ("http://metadata.google.internal", "cloud metadata service"),
    ("http://100.100.100.200", "link-local or cloud metadata"),
    ("file:///etc/passwd", "not an http(s) URL"),
    ("javascript:alert(1)", "not an http(s) URL"),
    ("gopher://127.0.0.1:11434", "not an http(s) URL"),
    ("http://user:secret@127.0.0.1:11434", "credentials"),
    ("http://127.0.0.1:99999", "invalid port"),
    ("http://" + "a" * 100_000 + ".example", "too long"),
    ("", "Enter the base URL"),
    ("   ", "Enter the base URL"),
    ("http://127.0.0.1:11434/\x00", "not an http(s) URL"),
    ("http://[::1", "is not a valid URL"),
    ("http://" + "1" * 300, "Could not"),  # no resolver takes it
    ("http://xn--", "Could not"),
    ("http://%00:11434", "Could not"),
])
def test_bad_addresses_are_refused_before_any_connection(gateway, ollama, url, message):
    console = admin(gateway)
    for path in ("/admin/ollama/test", "/admin/ollama"):
        r = console.post(path, {"base_url": url}, htmx=True)
        assert r.status_code == 200 and message in r.text, (path, r.text[:500])
        assert 'role="alert"' in r.text
    assert ollama.requests == [] and ollama_models() == {}  # the fake is never reached
    with db.session_scope() as s:
        assert s.scalar(select(Provider).where(Provider.name == "ollama")) is None


def test_a_missing_field_is_explained(gateway):
    console = admin(gateway)
    r = console.post("/admin/ollama/test", {}, htmx=True)
    assert r.status_code == 200 and "Enter the base URL" in r.text
    r = console.post("/admin/ollama", {})
    assert r.status_code == 422 and "Enter the base URL" in r.text


@pytest.mark.parametrize("fault, message", [
    ("hang", "No answer from"),
    ("malformed", "did not answer with Ollama&#39;s model list"),
    ("huge", "too large or too slow"),
    ("error-500", "answered HTTP 500"),
])
def test_a_hostile_instance_gets_a_clear_message(gateway, ollama, monkeypatch, fault, message):
    monkeypatch.setattr(ollama_service, "TEST_TIMEOUT", 0.5)
    ollama.tags_fault = fault
    console = admin(gateway)
    r = console.post("/admin/ollama/test", {"base_url": ollama.url}, htmx=True)
    assert r.status_code == 200 and message in r.text and 'id="ollama-test-error"' in r.text, r.text[:400]
    r = console.post("/admin/ollama", {"base_url": ollama.url}, htmx=True)
    assert message in r.text and ollama_models() == {}


def test_nothing_listening_is_said_plainly(gateway):
    url = f"http://127.0.0.1:{free_port()}"
    r = admin(gateway).post("/admin/ollama/test", {"base_url": url}, htmx=True)
    assert "Could not connect (connection refused or unreachable)" in r.text


def test_a_local_ollama_found_at_start_is_offered_not_added(gateway, ollama):
    found = ollama_service.detect(SimpleNamespace(ollama_probe_url=ollama.url))
    assert found.url == ollama.url and "llama3.2:latest" in found.models
    assert ollama_models() == {}  # offered only
    console = admin(gateway)
    for path in ("/admin/ollama", "/admin/providers"):
        page = console.get(path).text
        assert f"Ollama detected at {ollama.url}" in page and ">Add it</button>" in page, path
    r = console.post("/admin/ollama", {"base_url": ollama.url})
    assert r.status_code == 200 and "Saved Ollama" in r.text and "ollama/llama3.2" in ollama_models()
    assert "Ollama detected" not in console.get("/admin/providers").text  # taken: no offer any more
    # a provider already at that address, nothing listening, or the look switched off: no offer
    assert ollama_service.detect(SimpleNamespace(ollama_probe_url=ollama.url)) is None
    assert ollama_service.detect(SimpleNamespace(ollama_probe_url=f"http://127.0.0.1:{free_port()}")) is None
    assert ollama_service.detect(SimpleNamespace(ollama_probe_url="")) is None
    assert ollama_service.detect(SimpleNamespace(ollama_probe_url="http://169.254.169.254")) is None


def test_gateway_serve_prints_the_offer(tmp_path, ollama, fake_openai):
    """`gateway serve` (what `make run` runs) looks at GATEWAY_OLLAMA_PROBE_URL and says what it found."""
    instance = tmp_path / "instance"
    instance.mkdir()
    config = instance / "gateway.yaml"
    config.write_text(yaml.safe_dump({"providers": [{"name": "fake", "kind": "openai", "base_url": fake_openai.url,
                                                     "api_key": "sk-x", "allow_private": True}]}))
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    port = free_port()
    env.update(GATEWAY_INSTANCE=str(instance), GATEWAY_CONFIG=str(config), GATEWAY_OLLAMA_PROBE_URL=ollama.url)
    exe = str(Path(sys.executable).parent / "gateway")
    proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Serving on" in line:
                break
        gevent.spawn(proc.stdout.read)
        out = "".join(lines)
        assert f"Ollama detected at {ollama.url} (3 models): add it in the console" in out, out
        assert f"http://127.0.0.1:{port}/admin/ollama" in out
        wait_for(lambda: proc.poll() is None)
    finally:
        proc.kill()
        proc.wait()
    assert [r["path"] for r in ollama.requests] == ["/api/tags"]  # looked, added nothing


def test_a_name_resolving_to_a_metadata_address_is_refused_at_connect(gateway, monkeypatch):
    """The host as written passes; what it resolves to is checked when connecting (no rebinding)."""
    import socket

    from gateway.providers import egress

    real = socket.getaddrinfo

    def resolve(host, *args, **kw):
        if host == "ollama.evil.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 11434))]
        return real(host, *args, **kw)

    monkeypatch.setattr(egress.socket, "getaddrinfo", resolve)
    r = admin(gateway).post("/admin/ollama/test", {"base_url": "http://ollama.evil.example:11434"}, htmx=True)
    assert "Base URL refused: 169.254.169.254 is a link-local or cloud metadata address" in r.text, r.text
