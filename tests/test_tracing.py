"""OpenTelemetry traces: one span per request with a child per stage and per upstream attempt,
GenAI semantic-convention attributes and the gateway's own, never prompt text; off (nothing
imported) unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and then a real OTLP/HTTP receiver gets them.

The SDK's InMemorySpanExporter is installed through the test hook `tracing.install(exporter)`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway import tracing
from tests.conftest import ROOT, wait_for
from tests.otlp_receiver import OtlpReceiver, serve

SECRET_PROMPT = "the-launch-code-is-4471"


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    tracing.install(exporter)
    yield exporter
    tracing.uninstall()


def by_name(exporter, prefix: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def request_span(exporter, model: str, nth: int = 0):
    found = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER
             and s.attributes.get("gen_ai.request.model") == model]
    return found[nth]


def children(exporter, parent) -> list:
    return [s for s in exporter.get_finished_spans()
            if s.parent is not None and s.parent.span_id == parent.context.span_id]


def no_prompt_text(exporter) -> None:
    for span in exporter.get_finished_spans():
        for value in span.attributes.values():
            assert SECRET_PROMPT not in str(value), span.name
        assert SECRET_PROMPT not in span.name


def test_plain_request(gateway, spans):
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="test/fake-gpt", max_tokens=50, temperature=0.5,
        messages=[{"role": "user", "content": f"Say hi. {SECRET_PROMPT}"}])
    reply = raw.parse()
    root = request_span(spans, "test/fake-gpt")
    a = root.attributes
    assert root.name == "chat test/fake-gpt" and root.parent is None
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.system"] == "openai" and a["gen_ai.response.model"] == "fake-gpt"
    assert a["gen_ai.request.max_tokens"] == 50 and a["gen_ai.request.temperature"] == 0.5
    assert a["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gateway.cache"] == "miss" and a["gateway.request_id"] == raw.headers["x-request-id"]
    (row,) = gateway.rows(request_id=raw.headers["x-request-id"])
    assert a["gateway.org_id"] == row.org_id
    assert a["gateway.charge_micros"] == row.charge_micros > 0
    assert a["gateway.benchmark_micros"] == row.benchmark_micros
    assert a["gateway.saved_micros"] == row.benchmark_micros - row.charge_micros
    kids = children(spans, root)
    stages = [s.attributes["gateway.stage"] for s in kids if s.name.startswith("stage ")]
    assert stages[:3] == ["auth", "decode", "route"] and "output_budget" in stages
    (attempt,) = [s for s in kids if s.kind == SpanKind.CLIENT]
    assert attempt.name == "chat fake-gpt" and attempt.attributes["server.address"] == "127.0.0.1"
    assert attempt.attributes["gen_ai.request.model"] == "fake-gpt"
    assert attempt.attributes["gateway.mode"] == "passthrough"
    assert all(s.context.trace_id == root.context.trace_id for s in kids)
    no_prompt_text(spans)


def test_streamed_request_ends_its_span_with_the_stream(gateway, spans):
    stream = gateway.sdk().chat.completions.create(
        model="test/fake-gpt", stream=True, messages=[{"role": "user", "content": f"Hi. {SECRET_PROMPT}"}])
    seen = [c for c in stream]
    assert seen
    root = wait_for(lambda: [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER])[0]
    a = root.attributes
    assert a["gen_ai.request.model"] == "test/fake-gpt" and list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gen_ai.usage.output_tokens"] > 0 and a["gateway.charge_micros"] > 0
    (attempt,) = [s for s in children(spans, root) if s.kind == SpanKind.CLIENT]
    assert attempt.end_time <= root.end_time
    no_prompt_text(spans)


def test_cached_request_has_no_attempt(gateway, spans):
    messages = [{"role": "user", "content": f"Cache me. {SECRET_PROMPT}"}]
    sdk = gateway.sdk()
    for _ in range(2):  # temperature 0: reproducible, so cacheable
        sdk.chat.completions.create(model="test/fake-gpt", messages=messages, temperature=0)
    first, second = (request_span(spans, "test/fake-gpt", n) for n in (0, 1))
    assert first.attributes["gateway.cache"] == "miss" and second.attributes["gateway.cache"] == "hit"
    assert second.attributes["gateway.cache_mechanism"] == "exact_cache"
    kids = children(spans, second)
    assert not [s for s in kids if s.kind == SpanKind.CLIENT]
    (answered,) = [s for s in kids if s.attributes.get("gateway.answered")]
    assert answered.name == "stage exact_cache"
    assert kids[-1] is answered  # the stages after the hit did not run
    no_prompt_text(spans)


def test_failing_upstream_marks_the_spans(gateway, spans):
    with pytest.raises(openai.BadRequestError):
        gateway.sdk().chat.completions.create(model="test/error-400",
                                              messages=[{"role": "user", "content": SECRET_PROMPT}])
    root = request_span(spans, "test/error-400")
    assert root.status.status_code == StatusCode.ERROR
    assert root.attributes["http.response.status_code"] == 400 and root.attributes["error.type"]
    (attempt,) = [s for s in children(spans, root) if s.kind == SpanKind.CLIENT]
    assert attempt.status.status_code == StatusCode.ERROR and attempt.attributes["error.type"]
    no_prompt_text(spans)


def test_fallback_is_one_span_per_attempt(gateway, spans):
    gateway.sdk().chat.completions.create(model="test/error-500", messages=[{"role": "user", "content": "hi"}])
    root = request_span(spans, "test/error-500")
    attempts = [s for s in children(spans, root) if s.kind == SpanKind.CLIENT]
    assert [s.attributes["gen_ai.request.model"] for s in attempts] == ["error-500", "fake-gpt"]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.UNSET]
    assert root.status.status_code == StatusCode.UNSET and root.attributes["gen_ai.response.model"] == "fake-gpt"


def test_client_traceparent_is_the_parent(gateway, spans):
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    gateway.sdk().chat.completions.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    root = request_span(spans, "test/fake-gpt")
    assert format(root.context.trace_id, "032x") == trace_id
    assert format(root.parent.span_id, "016x") == parent_id


def test_off_by_default_and_nothing_imported():
    """Without OTEL_EXPORTER_OTLP_ENDPOINT a started app has no tracer and never imported
    OpenTelemetry (memory and start-up untouched)."""
    probe = ("import sys, tempfile\nfrom gateway import create_app, tracing\n"
             "create_app({'instance': tempfile.mkdtemp(), 'secret_key': 't', 'start_jobs': False})\n"
             "import json; print(json.dumps([tracing.TRACER is None, "
             "sorted(m for m in sys.modules if m.startswith('opentelemetry'))]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OTEL_"))}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, []]


@pytest.fixture
def receiver():
    rec = OtlpReceiver()
    server = serve(rec)
    yield rec
    tracing.uninstall()  # the gateway installed a batch exporter for this process: export, then stop
    server.stop()


def test_a_real_otlp_receiver_gets_the_trace(gateway_factory, receiver, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    gw = gateway_factory()
    assert tracing.TRACER is not None
    gw.sdk().chat.completions.create(model="test/fake-gpt", max_tokens=20,
                                     messages=[{"role": "user", "content": SECRET_PROMPT}])
    tracing.flush()
    wait_for(lambda: any(s["kind"] == 2 for s in receiver.spans))  # SPAN_KIND_SERVER
    (root,) = [s for s in receiver.spans if s["kind"] == 2]
    assert root["name"] == "chat test/fake-gpt" and root["resource"]["service.name"] == "gateway-under-test"
    assert root["attributes"]["gen_ai.request.model"] == "test/fake-gpt"
    assert root["attributes"]["gen_ai.request.max_tokens"] == 20
    assert root["attributes"]["gen_ai.usage.output_tokens"] > 0
    kids = [s for s in receiver.spans if s["parent_span_id"] == root["span_id"]]
    assert any(s["name"] == "stage auth" for s in kids) and any(s["kind"] == 3 for s in kids)  # CLIENT
    assert all(s["trace_id"] == root["trace_id"] for s in kids)
    assert SECRET_PROMPT.encode() not in json.dumps(receiver.spans).encode()


def test_a_layers_own_call_is_a_child_of_its_stage(gateway, spans):
    """Compression's summary call runs through the pipeline: its span sits under `stage compression`."""
    from tests.conftest import configure_savings
    from tests.test_compression import SUMMARY_MODEL, chat, conversation

    configure_savings(gateway, compression={"enabled": True, "budget_tokens": 300, "keep_last_turns": 2,
                                            "mode": "summary", "summary_model": SUMMARY_MODEL})
    chat(gateway, conversation(8))
    root = request_span(spans, "test/echo")
    (stage,) = [s for s in children(spans, root) if s.name == "stage compression"]
    (summary,) = [s for s in children(spans, stage)]
    assert summary.kind == SpanKind.INTERNAL and summary.name == f"chat {SUMMARY_MODEL}"
    assert summary.attributes["gateway.endpoint"] == "compression.summary"
    assert summary.attributes["gateway.request_id"] == root.attributes["gateway.request_id"] + ".summary"
    assert [s.kind for s in children(spans, summary) if s.kind == SpanKind.CLIENT] == [SpanKind.CLIENT]


def test_anthropic_request(gateway, fake_anthropic, spans):
    import anthropic

    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway.api_key, max_retries=0)
    client.messages.create(model="anthropic-test/claude-fake", max_tokens=64,
                           messages=[{"role": "user", "content": SECRET_PROMPT}])
    root = request_span(spans, "anthropic-test/claude-fake")
    a = root.attributes
    assert a["gen_ai.provider.name"] == "anthropic" and a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.max_tokens"] == 64 and list(a["gen_ai.response.finish_reasons"]) == ["end_turn"]
    assert a["gen_ai.usage.input_tokens"] > 0
    no_prompt_text(spans)


def test_a_client_gone_mid_stream_still_ends_the_span(gateway, spans):
    from tests.conftest import raw_socket_post, read_events

    sock = raw_socket_post(gateway, {"model": "test/drip-30", "stream": True,
                                     "messages": [{"role": "user", "content": "count"}]})
    read_events(sock, 4)
    sock.close()
    root = wait_for(lambda: [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER])[0]
    assert root.attributes["http.response.status_code"] == 499
    assert root.attributes["gen_ai.usage.output_tokens"] >= 3 and root.attributes["gateway.usage_estimated"]


def test_concurrent_requests_are_separate_traces(gateway, spans):
    """Stage spans are the current span only in their own greenlet: requests that overlap never
    adopt one another's spans."""
    import gevent

    sdk = gateway.sdk()
    jobs = [gevent.spawn(sdk.chat.completions.create, model="test/slow-1000",
                         messages=[{"role": "user", "content": f"n{i}"}]) for i in range(4)]
    gevent.joinall(jobs, raise_error=True)
    roots = [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(roots) == 4 and all(r.parent is None for r in roots)
    assert len({r.context.trace_id for r in roots}) == 4
    for root in roots:
        kids = children(spans, root)
        assert len([s for s in kids if s.kind == SpanKind.CLIENT]) == 1
        assert all(s.context.trace_id == root.context.trace_id for s in kids)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_responses_request(gateway, spans, stream):
    sdk = gateway.sdk()
    result = sdk.responses.create(model="test/fake-gpt", input=SECRET_PROMPT, max_output_tokens=32, stream=stream)
    if stream:
        for _ in result:
            pass
    root = wait_for(lambda: [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER])[0]
    a = root.attributes
    assert a["gateway.endpoint"] == "responses" and a["gen_ai.request.max_tokens"] == 32
    assert list(a["gen_ai.response.finish_reasons"]) == ["completed"]
    no_prompt_text(spans)
