"""The operator CLI: exact commands and outputs, and changes that reach a running server."""

import re
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.conftest import wait_for

# The checkout under test, also when the console script was installed from another one.
CHECKOUT = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

MSG = [{"role": "user", "content": "hi"}]


def works(sdk) -> bool:
    return status_of(sdk) == 200


def test_key_created_by_cli_while_serving_works(gateway):
    out = gateway.cli("key", "create", "--org", "default", "--name", "ci").stdout
    assert out.count("\n") == 1 and out.startswith("gw-")  # the secret alone on stdout
    secret = out.strip()
    wait_for(lambda: works(gateway.sdk(secret)))
    listing = gateway.cli("key", "list", "--org", "default").stdout
    assert "ci" in listing and secret not in listing


def test_key_revoked_by_cli_stops_working(gateway):
    secret = gateway.cli("key", "create", "--org", "default").stdout.strip()
    wait_for(lambda: works(gateway.sdk(secret)))
    gateway.cli("key", "revoke", "--org", "default", secret[:10])
    wait_for(lambda: not works(gateway.sdk(secret)))
    with pytest.raises(openai.AuthenticationError):
        gateway.sdk(secret).chat.completions.create(model="test/fake-gpt", messages=MSG)


def status_of(sdk) -> int:
    try:
        sdk.chat.completions.create(model="test/fake-gpt", messages=MSG)
        return 200
    except openai.APIStatusError as e:
        return e.status_code


def test_credits_added_by_cli_lift_a_402(gateway):
    gateway.cli("org", "create", "acme")
    key = gateway.cli("key", "create", "--org", "acme", "--scope", "inference").stdout.strip()
    wait_for(lambda: status_of(gateway.sdk(key)) == 402)  # known key, no credits
    # enough for the call's hold: its prompt and 4096 output tokens (no max_tokens) at $2000 per Mtok
    out = gateway.cli("credits", "add", "--org", "acme", "--usd", "50").stdout
    assert "50.000000" in out
    wait_for(lambda: status_of(gateway.sdk(key)) == 200)


def test_org_create_with_credits_and_admin_create(gateway):
    assert "credits: $2.500000" in gateway.cli("org", "create", "beta", "--credits", "2.5").stdout
    assert gateway.org("beta").credits_micros == 2_500_000
    out = gateway.cli("admin", "create", "--email", "ops@example.com", "--password", "s3cret-pass", "--superadmin")
    assert "super-admin ops@example.com" in out.stdout


@pytest.mark.parametrize("args, message", [
    (["org", "create", "default"], "already exists"),
    (["credits", "add", "--org", "ghost", "--usd", "1"], "no org named 'ghost'"),
    (["credits", "add", "--org", "default", "--usd", "lots"], "not an amount"),
    (["credits", "add", "--org", "default", "--usd", "NaN"], "not an amount"),
    (["credits", "add", "--org", "default", "--usd", "Infinity"], "not an amount"),
    (["org", "create", "gamma", "--credits", "-5"], "must not be negative"),
    (["org", "create", "g" * 121], "at most 120 characters"),
    (["key", "create", "--org", "default", "--name", "k" * 121], "at most 120 characters"),
    (["admin", "create", "--email", "nope", "--password", "longenough"], "valid email"),
])
def test_cli_errors_are_clear_and_exit_nonzero(gateway, args, message):
    proc = gateway.cli(*args, check=False)
    assert proc.returncode == 1 and message in proc.stderr


def test_scope_choice_is_enforced(gateway):
    proc = gateway.cli("key", "create", "--org", "default", "--scope", "root", check=False)
    assert proc.returncode == 2 and "root" in proc.stderr


def test_python_dash_m_gateway_is_the_same_cli(gateway):
    proc = subprocess.run([sys.executable, "-m", "gateway", "--help"], capture_output=True, text=True)
    for command in ("serve", "init", "admin", "org", "credits", "key"):
        assert command in proc.stdout


BAD_CONFIGS = [
    ("providers:\n  - name: a\n    kind: openai\n    base_url: http://x\n    colour: red\n", "line 5", "colour"),
    ("providers:\n  - name: a\n    kind: telepathy\n    base_url: http://x\n", "", "unknown kind"),
    ("models:\n  - slug: m\n    routes:\n      - provider: p\n        upstream_model: u\n"
     "        input_per_mtok: -1\n        output_per_mtok: 1\n", "line 6", "non-negative"),
    ("aliases: [1, 2]\n", "line 1", "mapping"),
    ("bogus: 1\n", "line 1", "unknown key 'bogus'"),
]


@pytest.mark.parametrize("text, where, what", BAD_CONFIGS)
def test_bad_config_is_rejected_naming_the_line(tmp_path, text, where, what):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    exe = str(Path(sys.executable).parent / "gateway")
    env = {"GATEWAY_INSTANCE": str(tmp_path / "inst"), "GATEWAY_CONFIG": str(path), "PATH": "/usr/bin:/bin",
           **CHECKOUT}
    for args in (["check-config", str(path)], ["init"]):
        proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1, proc.stderr
        assert what in proc.stderr and where in proc.stderr and str(path) in proc.stderr


def test_init_upgrades_and_loads_config(tmp_path, fake_openai):
    import yaml

    from tests.conftest import gateway_config

    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(gateway_config(fake_openai.url)))
    env = {"GATEWAY_INSTANCE": str(tmp_path / "inst"), "GATEWAY_CONFIG": str(path), "PATH": "/usr/bin:/bin",
           **CHECKOUT}
    exe = str(Path(sys.executable).parent / "gateway")
    proc = subprocess.run([exe, "init"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and "database ready" in proc.stdout
    assert (tmp_path / "inst" / "gateway.db").exists() and (tmp_path / "inst" / "secret_key").exists()
    # the first run's one-time credentials are shown here when init is what set the instance up
    # (before `gunicorn app:app`, which never prints them), and only then
    assert "First run" in proc.stdout and re.search(r"Password:\s+\S+", proc.stdout)
    key = re.search(r"API key:\s+(gw-\S+)", proc.stdout).group(1)
    listed = subprocess.run([exe, "key", "list", "--org", "default"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert key[:10] in listed.stdout
    again = subprocess.run([exe, "init"], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0 and "First run" not in again.stdout and "API key" not in again.stdout
