"""Semantic cache: a reworded question is served from the cache, near-misses and other contexts go
upstream (with the reason), pasted context must be identical, it never crosses orgs, it is off
unless enabled, a failing embedder never fails a request, the index survives a restart, answers
replay in either framing; and the decision meets its goals on the development set's holdout half."""

import anthropic
import numpy as np
import pytest
from sqlalchemy import select

from gateway import db
from gateway.models import SemanticEntry
from gateway.pipeline.savings import DEFAULTS, embeddings, semantic_cache
from gateway.pipeline.savings.semantic_match import refusal
from gateway.stores.semantic_index import INDEX, SemanticIndex
from gateway.wire.canonical import ChatResponse, Part, Usage
from tests.conftest import chat_calls, configure_savings, database_statements, savings_override, wait_for
from tests.data.semantic_dev import HOLDOUT, PAIRS, long_prompt

ECHO = "test/echo"  # the fake answers with the body it received: a hit shows the first question
QUESTION = "How do I reverse a list in Python?"
REWORDED = "In Python, how can I reverse a list? Thanks!"
ON = {"x-gateway-semantic-cache": "on"}


# ---- helpers ----------------------------------------------------------------------------------

def ask(gw, text, key=None, headers=None, model=ECHO, history=(), **kw):
    """One chat completion through the OpenAI SDK: (parsed, headers)."""
    messages = [*history, {"role": "user", "content": text}]
    raw = gw.sdk(key).chat.completions.with_raw_response.create(
        model=model, messages=messages, temperature=0, extra_headers=headers or {}, **kw)
    return raw.parse(), raw.headers


def ask_stream(gw, text, key=None, headers=None, **kw):
    raw = gw.sdk(key).chat.completions.with_raw_response.create(
        model=ECHO, messages=[{"role": "user", "content": text}], temperature=0, stream=True,
        extra_headers=headers or {}, **kw)
    chunks = list(raw.parse())
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks, raw.headers


@pytest.fixture
def gw(gateway_factory):
    semantic_cache.settle()  # the last test's background stores land before this gateway loads the index
    gw = gateway_factory()
    configure_savings(gw, semantic_cache={"enabled": True})
    return gw


# ---- what it saves ----------------------------------------------------------------------------

def test_a_reworded_question_is_served_from_the_cache(gw, fake_openai):
    first, h1 = ask(gw, QUESTION)
    assert h1["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 1
    second, h2 = ask(gw, REWORDED)
    assert chat_calls(fake_openai) == 1  # no upstream call
    assert second.choices[0].message.content == first.choices[0].message.content
    assert QUESTION in second.choices[0].message.content  # the answer to the cached wording
    assert h2["x-gateway-cache"] == "semantic"
    similarity = h2["x-gateway-similarity"]
    assert len(similarity.split(".")[1]) == 4
    assert DEFAULTS["semantic_cache"]["threshold"] <= float(similarity) <= 1
    assert h2["x-gateway-charge"] == "0.000000"
    assert h2["x-gateway-saved"] == h2["x-gateway-benchmark-cost"] and float(h2["x-gateway-saved"]) > 0
    miss, hit = gw.rows()
    assert (hit.cache, hit.charge_micros, hit.status) == ("semantic", 0, 200)
    assert hit.saved_micros == hit.benchmark_micros == miss.benchmark_micros > 0
    assert hit.saved_by == f"semantic_cache={hit.benchmark_micros}"
    assert (hit.input_tokens, hit.output_tokens) == (miss.input_tokens, miss.output_tokens)


def test_a_near_miss_goes_upstream(gw, fake_openai):
    ask(gw, "What is 15% of 80?")
    answer, headers = ask(gw, "What is 25% of 80?")
    assert chat_calls(fake_openai) == 2 and headers["x-gateway-cache"] == "miss"
    assert "25%" in answer.choices[0].message.content
    assert "x-gateway-similarity" not in headers
    assert headers["x-gateway-semantic-reason"] == "a word differs"  # why, never the other prompt


def test_a_role_swap_is_refused_by_order(gw, fake_openai):
    ask(gw, "Should I move my savings from bonds into stocks?")
    _, headers = ask(gw, "Should I move my savings from stocks into bonds?")
    assert chat_calls(fake_openai) == 2 and headers["x-gateway-semantic-reason"] == "word order differs"


def test_long_prompts_compare_the_question_and_need_the_same_pasted_context(gw, fake_openai):
    """Both prompts paste the same excerpts and put the question at the end: the embedder would read
    only the excerpts; the decision reads the questions (and the excerpts must be identical)."""
    ask(gw, long_prompt("How is storage counted for old file versions?"))
    answer, headers = ask(gw, long_prompt("Do files in the trash count toward storage?"))
    assert chat_calls(fake_openai) == 2 and headers["x-gateway-cache"] == "miss"
    assert "trash" in answer.choices[0].message.content
    _, headers = ask(gw, long_prompt("how is storage counted for old file versions? Thanks!"))
    assert headers["x-gateway-cache"] == "semantic" and chat_calls(fake_openai) == 2
    _, headers = ask(gw, long_prompt("How is storage counted for old file versions?", order=1))
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 3  # other pasted context


@pytest.mark.parametrize("change", [
    {"history": [{"role": "system", "content": "Answer in French."}]},
    {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
    {"max_tokens": 50},
    {"model": "test/fake-gpt"},
], ids=["system prompt", "tools", "parameters", "model"])
def test_another_context_is_a_miss(gw, fake_openai, change):
    ask(gw, QUESTION)
    _, headers = ask(gw, REWORDED, **change)
    assert chat_calls(fake_openai) == 2 and headers["x-gateway-cache"] == "miss"


def test_conversations_longer_than_max_turns_are_skipped(gw, fake_openai):
    history = [{"role": "user", "content": "Hi, I am learning Python."},
               {"role": "assistant", "content": "Great!"}]
    ask(gw, QUESTION, history=history)
    _, headers = ask(gw, REWORDED, history=history)
    assert chat_calls(fake_openai) == 2 and headers["x-gateway-cache"] == "miss"
    assert INDEX.size() == 0  # not even stored
    configure_savings(gw, semantic_cache={"enabled": True, "max_turns": 2})
    ask(gw, "How do I sort a dict by value in Python?", history=history)
    _, headers = ask(gw, "How can I sort a dict by value in Python?", history=history)
    assert chat_calls(fake_openai) == 3 and headers["x-gateway-cache"] == "semantic"


def test_ineligible_requests_are_skipped(gw, fake_openai):
    ask(gw, QUESTION)
    _, headers = ask(gw, REWORDED, headers={"x-gateway-cache": "bypass"})
    assert headers["x-gateway-cache"] == "miss"
    _, headers = ask(gw, REWORDED, headers={"Cache-Control": "no-store"})
    assert headers["x-gateway-cache"] == "miss"
    raw = gw.sdk().chat.completions.with_raw_response.create(  # not reproducible: temperature 1, no seed
        model=ECHO, messages=[{"role": "user", "content": REWORDED}], temperature=1)
    assert raw.headers["x-gateway-cache"] == "miss"
    assert chat_calls(fake_openai) == 4


# ---- scope, switches ----------------------------------------------------------------------------

def test_never_crosses_orgs(gw, fake_openai):
    gw.new_org("other")
    other = gw.new_key("other")
    ask(gw, QUESTION)
    _, headers = ask(gw, REWORDED, key=other)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    _, headers = ask(gw, "How can I reverse a list in Python?", key=other)  # the other org's own entry serves
    assert headers["x-gateway-cache"] == "semantic" and chat_calls(fake_openai) == 2
    assert {row.scope for row in _stored(gw)} == {f"org:{gw.org().id}", f"org:{gw.org('other').id}"}


def test_off_by_default_and_on_per_request_or_per_org(gateway, fake_openai):
    ask(gateway, QUESTION)
    _, headers = ask(gateway, REWORDED)
    assert headers["x-gateway-cache"] == "miss" and INDEX.size() == 0
    ask(gateway, "How do I sort a dict by value in Python?", headers=ON)
    _, headers = ask(gateway, "How can I sort a dict by value in Python?", headers=ON)
    assert headers["x-gateway-cache"] == "semantic"
    gateway.new_org("opted")
    key = gateway.new_key("opted")
    savings_override(gateway, "opted", "semantic_cache", enabled=True)
    ask(gateway, QUESTION, key=key)
    _, headers = ask(gateway, REWORDED, key=key)
    assert headers["x-gateway-cache"] == "semantic"
    _, headers = ask(gateway, "Can you tell me how to reverse a list in Python?", key=key,
                     headers={"x-gateway-semantic-cache": "off"})
    assert headers["x-gateway-cache"] == "miss"


def test_a_failing_embedder_never_fails_the_request(gw, fake_openai, monkeypatch):
    def broken(self, text, ctx=None):
        raise RuntimeError("embedder exploded")

    monkeypatch.setattr(embeddings.LocalEmbedder, "embed", broken)
    answer, headers = ask(gw, QUESTION)
    assert headers["x-gateway-cache"] == "miss" and QUESTION in answer.choices[0].message.content
    _, headers = ask(gw, QUESTION)  # the exact cache still works
    assert headers["x-gateway-cache"] == "hit" and chat_calls(fake_openai) == 1
    monkeypatch.setattr(embeddings, "local", lambda: None)  # no model installed at all
    _, headers = ask(gw, REWORDED)
    assert headers["x-gateway-cache"] == "miss" and chat_calls(fake_openai) == 2
    semantic_cache.settle()
    assert INDEX.size() == 0


# ---- persistence, replay --------------------------------------------------------------------------

def test_the_index_is_persisted_and_reloaded(gw, fake_openai):
    ask(gw, QUESTION)
    (row,) = wait_for(lambda: _stored(gw))
    assert row.text == QUESTION and row.model == ECHO and len(row.embedding) == 384 * 4
    INDEX.clear()
    with db.session_scope() as s:
        assert INDEX.load(s) == 1
    _, headers = ask(gw, REWORDED)
    assert headers["x-gateway-cache"] == "semantic" and chat_calls(fake_openai) == 1


def test_stored_answers_replay_in_either_framing(gw, fake_openai):
    first, _ = ask(gw, QUESTION)
    text, chunks, headers = ask_stream(gw, REWORDED, stream_options={"include_usage": True})
    assert headers["x-gateway-cache"] == "semantic" and "x-gateway-similarity" in headers
    assert text == first.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == first.usage.prompt_tokens
    streamed, _, _ = ask_stream(gw, "How do I sort a dict by value in Python?")
    answer, headers = ask(gw, "How can I sort a dict by value in Python?")
    assert headers["x-gateway-cache"] == "semantic" and answer.choices[0].message.content == streamed
    assert chat_calls(fake_openai) == 2
    assert [r.cache for r in gw.rows()] == ["miss", "semantic", "miss", "semantic"]


def test_anthropic_clients_are_answered_in_their_dialect(gw, fake_anthropic):
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=gw.api_key, max_retries=0)
    params = {"model": "anthropic-test/claude-fake", "max_tokens": 100, "extra_body": {"temperature": 0}}
    first = sdk.messages.with_raw_response.create(messages=[{"role": "user", "content": QUESTION}], **params)
    second = sdk.messages.with_raw_response.create(messages=[{"role": "user", "content": REWORDED}], **params)
    assert second.headers["x-gateway-cache"] == "semantic"
    assert second.parse().content[0].text == first.parse().content[0].text
    assert len([r for r in fake_anthropic.requests if r["path"].endswith("/messages")]) == 1


def test_a_hit_and_a_miss_make_no_database_query(gw):
    ask(gw, QUESTION)  # loads the model and warms everything up
    gw.flush()
    with database_statements() as statements:
        assert ask(gw, "What is the capital of France?")[1]["x-gateway-cache"] == "miss"
        assert ask(gw, REWORDED)[1]["x-gateway-cache"] == "semantic"
    assert statements == []


def test_an_embeddings_route_can_embed(gw, fake_openai, monkeypatch):
    monkeypatch.setattr(semantic_cache, "FEW", 0)  # search by vector even for one entry
    configure_savings(gw, semantic_cache={"enabled": True, "embeddings_model": "test/embed"},
              exact_cache={"enabled": False})
    ask(gw, QUESTION)
    _, headers = ask(gw, QUESTION)  # the fake's vectors only match the same text
    assert headers["x-gateway-cache"] == "semantic" and headers["x-gateway-similarity"] == "1.0000"
    assert chat_calls(fake_openai) == 1
    semantic_cache.settle()
    embeds = [r for r in fake_openai.requests if r["path"] == "/v1/embeddings"]
    assert [r["body"]["input"] for r in embeds] == [QUESTION, QUESTION]
    rows = gw.rows()
    assert sorted(r.endpoint for r in rows) == ["chat.completions"] * 2 + ["embeddings"] * 2
    assert all(r.charge_micros > 0 for r in rows if r.endpoint == "embeddings")  # embedding is paid for
    assert len(_stored(gw)[0].embedding) == 8 * 4  # the route's width, not the local model's


# ---- the index and the threshold -----------------------------------------------------------------

def _stored(gw) -> list[SemanticEntry]:
    semantic_cache.settle()
    gw.flush()
    with db.session_scope() as s:
        return list(s.scalars(select(SemanticEntry).order_by(SemanticEntry.id)))


def _unit(*values):
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_index_expiry_bound_and_partitions(monkeypatch):
    from gateway.ledger.writer import WRITER

    monkeypatch.setattr(WRITER, "enqueue_record", lambda model, row: None)
    now = [1000.0]
    index = SemanticIndex(clock=lambda: now[0])
    resp = ChatResponse(id="r", model="m", content=[Part("text", text="hi")], usage=Usage(3, 1))
    for i, text in enumerate(["a", "b", "c"]):
        now[0] += 1
        index.put("org:1", "m", "ctx", text, _unit(1, i * 0.01, 0), resp, org_id=1, ttl=60, max_entries=2)
    assert index.size() == 2  # the oldest went
    assert {e.text for _, e in index.search("org:1", "m", "ctx", _unit(1, 0, 0), 0.5)} == {"b", "c"}
    assert index.search("org:1", "m", "other-ctx", _unit(1, 0, 0), 0.5) == []
    assert index.search("org:2", "m", "ctx", _unit(1, 0, 0), 0.5) == []
    assert index.search("org:1", "m", "ctx", _unit(1, 0, 0, 0), 0.5) == []  # another embedder's width
    assert index.search("org:1", "m", "ctx", _unit(0, 1, 0), 0.5) == []  # below the threshold
    now[0] += 61
    assert index.search("org:1", "m", "ctx", _unit(1, 0, 0), 0.5) == []  # expired


def rates(pairs) -> tuple[int, float, dict[str, float]]:
    """(near-misses served, paraphrases served, paraphrases served by kind)."""
    same = [p for p in pairs if p.same]
    kinds = {p.kind for p in same}
    served = {p: refusal(p.a, p.b) is None for p in pairs}
    by_kind = {k: sum(served[p] for p in same if p.kind == k) / sum(p.kind == k for p in same) for k in kinds}
    return sum(served[p] for p in pairs if not p.same), sum(served[p] for p in same) / len(same), by_kind


def test_the_holdout_half_of_the_development_set_meets_the_goals():
    """Chosen on the tune half, judged here on the holdout half only (bench/semantic_threshold.py)."""
    assert len(PAIRS) >= 600 and len(HOLDOUT) >= 250
    false_hits, paraphrases, by_kind = rates(HOLDOUT)
    assert false_hits == 0
    assert paraphrases >= 0.60
    assert by_kind["typo"] >= 0.80 and by_kind["case_whitespace"] >= 0.80


def test_the_threshold_keeps_every_accepted_tune_paraphrase_a_candidate():
    """Embeddings only pick candidates: the default threshold is below every tune paraphrase the
    decision accepts (typos move all-MiniLM a long way), so a large context still finds them."""
    from tests.data.semantic_dev import TUNE

    model = embeddings.local()
    threshold = DEFAULTS["semantic_cache"]["threshold"]
    accepted = [p for p in TUNE if p.same and refusal(p.a, p.b) is None]
    assert accepted and all(float(model.vector(p.a) @ model.vector(p.b)) >= threshold for p in accepted
                            if len(p.a) < 300)


NEAR_MISS_SAMPLES = sorted({p.kind: p for p in PAIRS if not p.same}.values(), key=lambda p: p.kind)


@pytest.mark.parametrize("pair", NEAR_MISS_SAMPLES, ids=[p.kind for p in NEAR_MISS_SAMPLES])
def test_a_sample_of_each_near_miss_kind_is_refused(pair):
    assert refusal(pair.a, pair.b) is not None


@pytest.mark.parametrize("a, b", [
    ("What is 15% of 80?", "What is 25% of 80?"),
    ("Why is my code working?", "Why is my code not working?"),
    ("Convert 10 miles to kilometers.", "Convert 10 kilometers to miles."),
    ("Is Python faster than Java?", "Is Java faster than Python?"),
    ("How do I enable 2FA?", "How do I disable 2FA?"),
    ("How do I install numpy?", "How do I uninstall numpy?"),
    ("Paris or London: which is older?", "Rome or London: which is older?"),
    ("What does `git fetch` do?", "What does `git pull` do?"),
    ("What is the weather today?", "What is the weather tomorrow?"),
    ("What is the average weight of a giraffe?", "What is the average height of a giraffe?"),
    ("Explain APIs in one sentence.", "Explain APIs in one paragraph."),
    ("Does vitamin C help absorb iron?", "Does iron help absorb vitamin C?"),
    ("Round 2.5 up.", "Round 2.5 down."),
])
def test_the_decision_refuses_near_misses(a, b):
    assert refusal(a, b) is not None


@pytest.mark.parametrize("a, b", [
    ("How do I reverse a list in Python?", "In Python, how do I reverse a list?"),
    ("How do I reverse a list in Python?", "how do i reverse a list in pyhton"),
    ("What is 15% of 80?", "Quick question: what is 15% of 80? Thanks!"),
    ("How do I fix a leaking faucet?", "How do I repair a leaky faucet?"),
    ("I don't understand recursion.", "I do not understand recursion."),
])
def test_the_decision_accepts_rewordings(a, b):
    assert refusal(a, b) is None


def test_split_only_takes_a_plain_text_last_user_message():
    body = {"model": "m", "stream": True, "temperature": 0,
            "messages": [{"role": "system", "content": "s"},
                         {"role": "user", "content": [{"type": "text", "text": "q"}]}]}
    context, text, turns = semantic_cache.split(body)
    assert (text, turns) == ("q", 1) and "stream" not in context and "model" not in context
    assert context["messages"][-1] == {"role": "user", "content": None}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    assert semantic_cache.split({"messages": [{"role": "user", "content": [image]}]}) is None
    assert semantic_cache.split({"messages": [{"role": "assistant", "content": "a"}]}) is None


def test_a_failing_embeddings_route_skips_the_layer(gw, fake_openai):
    configure_savings(gw, semantic_cache={"enabled": True, "embeddings_model": "no/such-model"})
    answer, headers = ask(gw, QUESTION)
    assert headers["x-gateway-cache"] == "miss" and QUESTION in answer.choices[0].message.content
    semantic_cache.settle()
    assert INDEX.size() == 0
