"""deploy/: the compose file runs what the README's "Outgrowing one machine" says, and the Grafana
dashboard only queries metrics the gateway exports."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_runs_two_gevent_workers_on_postgres_and_redis():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "gateway"} <= set(services)
    gw = services["gateway"]
    env = gw["environment"]
    assert env["GATEWAY_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert env["GATEWAY_REDIS_URL"].startswith("redis://redis:")
    assert "gunicorn -k gateway.gunicorn_worker.Worker -w 2" in gw["command"] and "gateway init" in gw["command"]
    assert env["GATEWAY_WORKERS"] == "2" and "PROMETHEUS_MULTIPROC_DIR" in env
    assert gw["build"]["dockerfile"] == "Dockerfile" and (ROOT / "Dockerfile").exists()


def test_the_dashboard_queries_only_exported_metrics():
    from gateway import metrics

    exported = set()
    for collector in list(metrics.REGISTRY._collector_to_names):
        exported |= set(metrics.REGISTRY._collector_to_names[collector])
    exported |= {"gateway_ledger_queue_rows", "gateway_credit_holds_usd", "gateway_route_breaker_open"}
    dash = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    used = {name for panel in dash["panels"] for target in panel["targets"]
            for name in re.findall(r"\b(gateway_[a-z_]+)", target["expr"])}
    assert used and used <= exported, used - exported
