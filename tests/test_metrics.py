"""GET /metrics: Prometheus text counted from ledger rows (one per request), loopback-only unless
GATEWAY_METRICS_TOKEN is set, and scraped by a real Prometheus (Debian's binary)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families


def _samples(body: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == str(want) for k, want in labels.items()))


def _chat(gw, model: str) -> int:
    return gw.post("/v1/chat/completions", {"model": model, "messages": [{"role": "user", "content": "hi"}]}).status_code


def _scrape(gw) -> dict:
    r = requests.get(gw.url + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return _samples(r.text)


def test_requests_tokens_money_and_errors_are_counted(gateway):
    before = _scrape(gateway)  # counters live for the process: compare what this test adds

    def added(name: str, **labels) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert [_chat(gateway, "test/fake-gpt") for _ in range(3)] == [200] * 3
    assert _chat(gateway, "test/error-400") == 400
    gateway.flush()
    after = _scrape(gateway)
    assert added("gateway_requests_total", endpoint="chat.completions", model="test/fake-gpt", status=200) == 3
    assert added("gateway_requests_total", model="test/error-400", status=400) == 1
    rows = gateway.rows()
    assert added("gateway_tokens_total", direction="input") == sum(r.input_tokens for r in rows)
    assert added("gateway_usd_total", kind="charge") == pytest.approx(sum(r.charge_micros for r in rows) / 1e6)
    assert added("gateway_upstream_errors_total", provider="fake") == 1
    assert added("gateway_request_seconds_count", model="test/fake-gpt") == 3
    assert ("gateway_ledger_queue_rows", ()) in after


def test_a_metrics_token_is_required_when_set(gateway_factory):
    gw = gateway_factory(metrics_token="scrape-secret")
    assert requests.get(gw.url + "/metrics", timeout=10).status_code == 401
    wrong = requests.get(gw.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    ok = requests.get(gw.url + "/metrics", headers={"Authorization": "Bearer scrape-secret"}, timeout=10)
    assert ok.status_code == 200 and "gateway_requests" in ok.text


def test_a_real_prometheus_scrapes_it(gateway, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run `make test`, which installs Debian's prometheus")
    assert _chat(gateway, "test/fake-gpt") == 200
    gateway.flush()
    expected = _value(_scrape(gateway), "gateway_requests_total", model="test/fake-gpt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = gateway.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen([binary, f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        found = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/v1/query", timeout=2,
                                      params={"query": 'sum(gateway_requests_total{model="test/fake-gpt"})'}).json()
                found = answer["data"]["result"]
            except (requests.RequestException, ValueError, KeyError):
                pass
            if not found:
                time.sleep(0.5)
        assert found, "Prometheus never scraped the gateway"
        assert float(found[0]["value"][1]) == expected >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_batched_histogram_counts_equal_prometheus_client_observe():
    """The writer observes a batch per bucket; the exposition must equal observing one by one."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from gateway import metrics

    values = [0.0, 0.004, 0.005, 0.0051, 0.1, 0.25, 7.5, 59.9, 60.0, 121.0, 1e9, -1.0, 0.01, 0.01]
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "x", buckets=metrics.LATENCY_BUCKETS, registry=reg_a)
    b = Histogram("h", "x", buckets=metrics.LATENCY_BUCKETS, registry=reg_b)
    for v in values:
        a.observe(v)
    metrics._observe_all(b, values)
    def samples(reg):  # every line but the creation time
        return [line for line in generate_latest(reg).splitlines() if b"_created" not in line]

    assert samples(reg_a) == samples(reg_b)
    assert b'h_bucket{le="0.005"} 4.0' in samples(reg_b)  # 0.0, 0.004, 0.005 and -1.0 fit; 0.0051 does not
