"""`python -m bench.compression_quality [--seed 7] [--conversations 40]`

What conversation compression costs in answers, beside what it saves in tokens. Long chats plant
facts ("the locker code is 4417") at different depths, then the last turn asks for one of them. For
each mode and budget the report says how often the asked-for fact is still in what the provider
receives (verbatim in a kept turn for `trim`; for `summary`, kept verbatim or handed to the summary
model, which may still leave it out), and the prompt tokens saved. Deterministic: same seed, same
table. Runs in-process on the layer's own cut (compress.split): no server, no model.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import tokens, wire  # noqa: E402
from gateway.pipeline.savings import compress  # noqa: E402

TOPICS = ["the quarterly report", "the data migration", "the onboarding flow", "the billing export",
          "the search index", "the mobile release", "the vendor contract", "the incident review"]
FACTS = ["locker code", "flight number", "invoice id", "room number", "project codename", "badge pin"]
BUDGETS = (2000, 4000, 8000)
OVER = (1.1, 1.5, 3.0)  # conversation size as a multiple of the budget
DEPTHS = ("first turn", "early", "middle", "late")


def chatter(rng: random.Random, words: int) -> str:
    topic = rng.choice(TOPICS)
    body = " ".join(rng.choice(["we", "should", "check", "the", "numbers", "again", "before", "friday", "and",
                                "update", "notes", "for", topic]) for _ in range(words))
    return f"About {topic}: {body}."


def conversation(rng: random.Random, target_tokens: int, depth: str) -> tuple[list[dict], str]:
    """A chat of about `target_tokens` with one fact planted at `depth`; the last turn asks for it."""
    messages: list[dict] = [{"role": "system", "content": "You are a helpful assistant for a product team."}]
    fact, value = rng.choice(FACTS), str(rng.randint(1000, 9999))
    turns: list[dict] = []
    size = 0
    while size < target_tokens:
        turns.append({"role": "user", "content": chatter(rng, rng.randint(40, 160))})
        turns.append({"role": "assistant", "content": chatter(rng, rng.randint(60, 240))})
        size += sum(tokens.count(m["content"]) + 3 for m in turns[-2:])
    at = {"first turn": 0, "early": len(turns) // 5, "middle": len(turns) // 2,
          "late": len(turns) - 6}[depth] & ~1  # a user turn
    turns[at]["content"] += f" By the way, the {fact} is {value}."
    question = {"role": "user", "content": f"Remind me: what is the {fact}?"}
    return messages + turns + [question], value


def survives(messages: list[dict], budget: int, keep: int, mode: str, value: str) -> tuple[bool, int, int]:
    """(the fact reaches the provider or the summary model, tokens before, tokens after)."""
    req = wire.codec("chat.completions").decode_request({"model": "m", "messages": messages})
    plan = compress.split(req, budget, keep, mode == "summary")
    if plan is None:
        before = compress.prompt_tokens(req)
        return True, before, before
    seen = plan.system + plan.head + plan.kept + (plan.dropped if mode == "summary" else [])
    found = any(value in (p.text or "") for m in seen for p in m.content)
    dropped = sum(compress.message_tokens(m) for m in plan.dropped)
    after = plan.tokens_before - dropped + compress.NOTE_TOKENS
    if mode == "summary":
        after += min(1024, dropped // 4)  # the summary's cap (its real length is the model's)
    return found, plan.tokens_before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compression_quality")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--conversations", type=int, default=10, help="per budget, size and depth")
    parser.add_argument("--keep", type=int, default=4, help="keep_last_turns")
    args = parser.parse_args(argv)
    print("| mode | budget | size | fact at | facts kept | tokens saved |")
    print("|---|---|---|---|---|---|")
    totals: dict[str, list[int]] = {}
    for mode in ("trim", "summary"):
        for budget in BUDGETS:
            for over in OVER:
                for depth in DEPTHS:
                    rng = random.Random(f"{args.seed}-{budget}-{over}-{depth}")
                    kept = before = after = 0
                    for _ in range(args.conversations):
                        messages, value = conversation(rng, int(budget * over), depth)
                        ok, b, a = survives(messages, budget, args.keep, mode, value)
                        kept, before, after = kept + ok, before + b, after + a
                    total = totals.setdefault(mode, [0, 0, 0, 0])
                    total[0] += kept
                    total[1] += args.conversations
                    total[2] += before
                    total[3] += after
                    print(f"| {mode} | {budget} | {over}x | {depth} | {kept}/{args.conversations} "
                          f"| {1 - after / before:.0%} |")
    for mode, (kept, n, before, after) in totals.items():
        print(f"\n{mode}: {kept}/{n} asked-for facts reach the model ({kept / n:.0%}); "
              f"{1 - after / before:.0%} of prompt tokens saved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
