"""fly.toml and the Dockerfile cannot be deployed here; check that they say what the README promises."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_fly_runs_the_server_on_all_interfaces_with_instance_on_a_volume():
    fly = tomllib.loads((ROOT / "fly.toml").read_text())
    assert "--host 0.0.0.0" in fly["processes"]["app"]
    assert fly["env"]["GATEWAY_INSTANCE"] == fly["mounts"][0]["destination"]
    assert fly["http_service"]["internal_port"] == 8080
    assert fly["http_service"]["checks"][0]["path"] == "/readyz"
    assert fly["kill_signal"] == "SIGTERM"


def test_dockerfile_serves_the_same_command():
    text = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["gateway", "serve", "--host", "0.0.0.0", "--port", "8080"]' in text
    assert "requirements.txt" in text


def test_app_module_is_a_wsgi_entry_that_patches_gevent_first():
    """gevent must patch before anything imports ssl, requests or SQLAlchemy."""
    import ast

    body = ast.parse((ROOT / "app.py").read_text()).body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the module docstring
    assert ast.unparse(body[0]) == "from gevent import monkey"
    assert ast.unparse(body[1]) == "monkey.patch_all()"
    assert any(ast.unparse(node) == "app = create_app()" for node in body)


def test_retention_jobs_delete_only_what_expired(gateway):
    from datetime import timedelta

    from gateway import db, jobs
    from gateway.models import CacheEntry, utcnow

    org_id = gateway.org().id
    with db.write_lock, db.session_scope() as s:
        for minutes in (-5, 5):
            s.add(CacheEntry(org_id=org_id, scope=f"org:{org_id}", key=f"k{minutes}", model="m", response={},
                             expires_at=utcnow() + timedelta(minutes=minutes)))
    jobs.prune_expired_savings()
    with db.session_scope() as s:
        assert [e.key for e in s.query(CacheEntry)] == ["k5"]
