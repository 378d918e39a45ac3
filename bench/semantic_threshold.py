"""`python -m bench.semantic_threshold [--margin 0.03] [--rounds 200]`

Measures the semantic cache on its development set (tests/data/semantic_dev.py): the decision
(semantic_match.refusal) and the candidate threshold are chosen on the `tune` half; every quality
number printed is the `holdout` half's. Then the added latency of a miss, in-process with the
local model: a context with few entries (compared without embedding) and one with many (the
question embedded and searched). Deterministic quality numbers: same model, same pairs, same table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def quality(pairs) -> dict[str, tuple[int, int]]:
    """kind -> (served, total), paraphrase and near-miss kinds alike."""
    from gateway.pipeline.savings.semantic_match import refusal

    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p in pairs:
        out[(p.same, p.kind)][0] += refusal(p.a, p.b) is None
        out[(p.same, p.kind)][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def candidate_threshold(model, tune, margin: float) -> tuple[float, float]:
    """(lowest cosine of a tune paraphrase the decision accepts, that minus margin rounded down)."""
    from gateway.pipeline.savings.semantic_match import refusal, split_context

    cosines = [float(model.vector(split_context(p.a)[1]) @ model.vector(split_context(p.b)[1]))
               for p in tune if p.same and refusal(p.a, p.b) is None]
    lowest = min(cosines)
    return lowest, math.floor((lowest - margin) * 20) / 20


def miss_latency(model, rounds: int) -> tuple[float, float, float]:
    """p50 ms of (the decision alone, a miss with few entries, a miss that embeds and searches)."""
    import numpy as np

    from gateway.pipeline.savings.semantic_match import refusal
    from gateway.stores.semantic_index import SemanticIndex
    from gateway.wire.canonical import ChatResponse, Part, Usage

    index = SemanticIndex()
    from gateway.ledger.writer import WRITER

    WRITER.enqueue_record = lambda *a, **k: None  # in-process: nothing to persist
    resp = ChatResponse(id="r", model="m", content=[Part("text", text="hi")], usage=Usage(3, 1))
    rng = np.random.default_rng(7)
    for i in range(2000):
        v = rng.standard_normal(384).astype(np.float32)
        index.put("s", "m", "many", f"How do I do task {i} quickly?", v / np.linalg.norm(v), resp,
                  org_id=1, ttl=3600, max_entries=10_000)
    question = "How do I configure retries for the upstream client?"
    decide, few, many = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        refusal("How do I configure timeouts for the upstream client?", question)
        decide.append(time.perf_counter() - t)
        t = time.perf_counter()
        for entry in index.few("s", "m", "empty", 16) or []:
            refusal(entry.text, question)
        few.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert index.few("s", "m", "many", 16) is None
        for _, entry in index.search("s", "m", "many", model.vector(question), 0.5, 5):
            refusal(entry.text, question)
        many.append(time.perf_counter() - t)
    return tuple(statistics.median(x) * 1000 for x in (decide, few, many))  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.semantic_threshold")
    parser.add_argument("--margin", type=float, default=0.03)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args(argv)
    from gateway.pipeline.savings import DEFAULTS, embeddings
    from tests.data.semantic_dev import HOLDOUT, PAIRS, TUNE

    model = embeddings.local()
    if model is None:
        raise SystemExit("the local embedding model could not be loaded (see the log)")
    lowest, threshold = candidate_threshold(model, TUNE, args.margin)
    print(f"{len(PAIRS)} labelled pairs: {len(TUNE)} tune, {len(HOLDOUT)} holdout (tests/data/semantic_dev.py)")
    print(f"candidate threshold (tune): lowest accepted paraphrase cosine {lowest:.4f}, minus {args.margin} "
          f"-> {threshold:.2f} (configured default {DEFAULTS['semantic_cache']['threshold']})\n")
    rows = quality(HOLDOUT)
    print("holdout | kind | served |")
    print("|---|---|---|")
    for (same, kind), (served, total) in sorted(rows.items(), key=lambda kv: (not kv[0][0], kv[0][1])):
        print(f"| {'paraphrase' if same else 'near miss'} | {kind} | {served}/{total} |")
    para = [v for (same, _), v in rows.items() if same]
    near = [v for (same, _), v in rows.items() if not same]
    print(f"\nholdout: paraphrases served {sum(s for s, _ in para)}/{sum(t for _, t in para)} "
          f"({sum(s for s, _ in para) / sum(t for _, t in para):.0%}); near-misses served (false hits) "
          f"{sum(s for s, _ in near)}/{sum(t for _, t in near)}")
    decide, few, many = miss_latency(model, args.rounds)
    print(f"added p50 per miss: decision {decide:.3f} ms; context with few entries {few:.3f} ms (no embedding); "
          f"context with 2,000 entries {many:.2f} ms (embed the question + search)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
