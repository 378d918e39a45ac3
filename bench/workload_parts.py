"""The savings workload's six parts, as lists of calls generated from a seed (same seed, same calls).

Each part targets one mechanism, but runs with every layer on, as real traffic would:
  a  repeated prompts     a few questions asked again and again at temperature 0 (exact cache);
  b  paraphrased          the paraphrase pairs of tests/data/semantic_pairs.py, each wording asked
                          once at temperature 0 (semantic cache);
  c  bursts               ten identical calls at once to a slow (~200 ms) model (in-flight dedupe);
  d  RAG                  prompts pasting retrieved chunks, the same chunk several times across and
                          within turns (context dedupe);
  e  long chats           multi-turn conversations that outgrow the compression budget (compression);
  f  long system prompts  an Anthropic route, long system prompts shared by many questions
                          (provider prompt caching, which the gateway marks up).
Text is drawn from a fixed vocabulary with `random.Random(seed)`; questions are hand-written.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests/data is a namespace package at the repository root
    sys.path.insert(0, str(ROOT))

from tests.data.semantic_pairs import PARAPHRASES  # noqa: E402

GPT, GPT_SLOW, CLAUDE = "work/gpt-4o", "work/gpt-4o-slow", "work/claude-sonnet-4-5"
SYSTEM = "You are a helpful assistant. Answer briefly."

VOCABULARY = """service request account invoice report server database network cluster deploy release
version update config setting policy budget cost latency error warning queue worker cache index record
table column schema query result customer order payment refund shipment warehouse product catalog price
discount region team project manager engineer review meeting deadline milestone roadmap feature issue
ticket incident outage backup restore migration upgrade rollback monitor alert metric dashboard log trace
token session login password permission role group member tenant quota limit usage billing contract
renewal support document section chapter paragraph summary detail example note the a an of to in for
with on by from and or but so because when while after before during each every all some many most
new old large small fast slow high low first last next previous main other same different important
clear simple complex stable current daily weekly monthly quarterly annual is are was were be has have
will should must can may might does did checks updates sends stores reads writes runs builds ships
tracks measures reduces increases keeps moves""".split()

QUESTIONS = [
    "What does a load balancer do?", "How do I rotate an API key safely?",
    "What is the difference between TCP and UDP?", "Why would a database query suddenly get slower?",
    "How should I name feature flags?", "What is a good retry policy for HTTP clients?",
    "How do I write a useful incident postmortem?", "What is eventual consistency?",
    "When should I add an index to a table?", "How do I estimate the cost of a cloud deployment?",
]
BURST_QUESTIONS = [
    "Summarize today's release notes for the billing service.", "Classify this ticket: login page times out.",
    "Draft a status update for the storage migration.", "List the risks of upgrading the message queue.",
    "Explain the spike in error rates on the checkout API.",
]
RAG_QUESTIONS = [
    "Which team owns the renewal process?", "What changed in the last quarterly report?",
    "How are refunds tracked?", "What is the backup policy?", "Who reviews the roadmap?",
    "What limits apply to tenant usage?", "How is latency monitored?", "What happens after an outage?",
]
ASSISTANT_QUESTIONS = [
    "How do I export my data?", "Can I change the billing currency?", "Why was my invoice higher this month?",
    "How do I add a team member?", "What does the enterprise plan include?", "How do I close my account?",
    "Is there an API rate limit?", "How do I set up single sign-on?",
]


@dataclass
class Call:
    endpoint: str  # "chat" (OpenAI chat completions) or "messages" (Anthropic Messages)
    model: str  # the gateway's model slug
    body: dict  # the request body without `model`


@dataclass
class Part:
    key: str
    name: str
    mechanism: str  # the layer the part is meant to exercise
    steps: list[list[Call]] = field(default_factory=list)  # each step: one call, or a burst sent at once

    @property
    def calls(self) -> int:
        return sum(len(step) for step in self.steps)


def sentence(rng: random.Random, low: int = 8, high: int = 16) -> str:
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(low, high))]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def chat(model: str, messages: list[dict], stream: bool = False, **params) -> Call:
    body = {"messages": messages, **params}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return Call("chat", model, body)


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


def repeated(rng: random.Random, calls: int = 40) -> Part:
    part = Part("a", "repeated prompts", "exact_cache")
    for i in range(calls):
        part.steps.append([chat(GPT, ask(rng.choice(QUESTIONS)), stream=i % 4 == 3, temperature=0)])
    return part


def paraphrased(rng: random.Random, pairs: int = 30) -> Part:
    part = Part("b", "paraphrased questions", "semantic_cache")
    for i, (_, _, first, second) in enumerate(rng.sample(PARAPHRASES, pairs)):
        part.steps.append([chat(GPT, ask(first), temperature=0)])
        part.steps.append([chat(GPT, ask(second), stream=i % 3 == 2, temperature=0)])
    return part


def bursts(rng: random.Random, size: int = 10) -> Part:
    part = Part("c", f"bursts of {size} identical calls", "inflight_dedupe")
    for i, question in enumerate(BURST_QUESTIONS):
        call = chat(GPT_SLOW, ask(question), stream=i % 2 == 1, temperature=0)
        part.steps.append([call] * size)
    return part


def rag(rng: random.Random, calls: int = 12, pool: int = 6) -> Part:
    """Each call: 1-3 user turns, each pasting 4 chunks drawn with replacement from a small pool."""
    part = Part("d", "RAG, repeated chunks", "context_dedupe")
    chunks = [paragraph(rng, 6) for _ in range(pool)]
    for _ in range(calls):
        messages = [{"role": "system", "content": "Answer from the documents the user pastes."}]
        turns = rng.randint(1, 3)
        for turn in range(turns):
            pasted = "\n\n".join(rng.choice(chunks) for _ in range(4))
            question = rng.choice(RAG_QUESTIONS)
            messages.append({"role": "user", "content": f"Documents:\n\n{pasted}\n\n{question}"})
            if turn < turns - 1:
                messages.append({"role": "assistant", "content": paragraph(rng, 2)})
        part.steps.append([chat(GPT, messages)])
    return part


def chats(rng: random.Random, conversations: int = 3, turns: int = 12) -> Part:
    """Conversations sent at every turn, history included; a user turn and its answer: ~300 tokens."""
    part = Part("e", "long multi-turn chats", "compression")
    for _ in range(conversations):
        messages = [{"role": "system", "content": SYSTEM}]
        for turn in range(turns):
            messages.append({"role": "user", "content": paragraph(rng, 6) + " " + rng.choice(QUESTIONS)})
            part.steps.append([chat(GPT, list(messages), stream=turn % 3 == 2)])
            messages.append({"role": "assistant", "content": paragraph(rng, 14)})
    return part


def system_prompts(rng: random.Random, assistants: int = 2, questions: int = 8) -> Part:
    """Anthropic Messages calls: per assistant one ~2,000-token system prompt, then distinct questions."""
    part = Part("f", "long system prompts (Anthropic)", "prompt_cache")
    for _ in range(assistants):
        system = "You are the support assistant of a software company. Policies:\n\n" + "\n\n".join(
            paragraph(rng, 10) for _ in range(16))
        for i, question in enumerate(rng.sample(ASSISTANT_QUESTIONS, questions)):
            body = {"max_tokens": 1024, "system": system, "messages": [{"role": "user", "content": question}]}
            if i % 2:
                body["stream"] = True
            part.steps.append([Call("messages", CLAUDE, body)])
    return part


def build(seed: int) -> list[Part]:
    rng = random.Random(seed)
    return [make(rng) for make in (repeated, paraphrased, bursts, rag, chats, system_prompts)]
