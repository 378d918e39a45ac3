"""What a started server holds: no Alembic (a schema upgrade runs in a child process), no botocore
unless a Bedrock provider is configured (then it is imported at start, not by a request), no tiktoken,
no OpenTelemetry unless OTEL_EXPORTER_OTLP_ENDPOINT is set."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys
from gateway import boot, create_app, db
from sqlalchemy import text
app = create_app({"instance": sys.argv[1], "secret_key": "t", "start_jobs": False,
                  "config_path": sys.argv[2] or None})
boot.prepare(app)
boot.start_background(app)
with db.engine().connect() as conn:
    version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
boot.stop_background(app)
print(json.dumps({"modules": sorted(m for m in ("alembic", "mako", "botocore", "tiktoken", "opentelemetry")
                                    if m in sys.modules),
                  "current": boot.schema_current(), "version": version}))
"""

BEDROCK = """\
providers:
  - name: aws
    kind: bedrock
    base_url: https://bedrock-runtime.us-east-1.amazonaws.com
    api_key: AKIDEXAMPLE:secret
"""


def _start(instance: Path, config: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", PROBE, str(instance), str(config or "")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_fresh_instance_is_upgraded_without_alembic_in_the_server(tmp_path):
    first = _start(tmp_path / "inst")
    assert first["current"] and first["version"]  # upgraded to head, by the child
    assert first["modules"] == []
    assert _start(tmp_path / "inst")["modules"] == []  # and a restart on a current schema


def test_botocore_is_loaded_at_start_only_with_a_bedrock_provider(tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(BEDROCK)
    assert _start(tmp_path / "inst", config)["modules"] == ["botocore"]
