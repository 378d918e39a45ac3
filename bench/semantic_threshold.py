"""`python -m bench.semantic_threshold [--from 0.70] [--to 0.99] [--step 0.01] [--margin 0.02]`

Measures the semantic cache on the labelled pairs (tests/data/semantic_pairs.py) with the local
embedder: per threshold, the paraphrase hit rate and the near-miss false-hit rate, without and
with the near-miss guard. Recommends a default: the lowest threshold with no false hit (guard
on), plus a margin, rounded up to 0.01. Deterministic: same model, same pairs, same table.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass(frozen=True)
class Pair:
    domain: str
    kind: str
    a: str
    b: str
    cosine: float
    guard: bool  # the near-miss guard lets the pair through


@dataclass(frozen=True)
class Row:
    threshold: float
    hit_raw: float  # paraphrases served, embeddings alone
    false_raw: float  # near-misses served, embeddings alone
    hit_guarded: float
    false_guarded: float


def measure() -> tuple[list[Pair], list[Pair]]:
    """Cosine and guard verdict of every labelled pair (paraphrases, near-misses)."""
    from gateway.pipeline.savings import embeddings
    from gateway.pipeline.savings.semantic_cache import agree
    from tests.data.semantic_pairs import NEAR_MISSES, PARAPHRASES

    model = embeddings.local()
    if model is None:
        raise SystemExit("the local embedding model could not be loaded (see the log)")

    def pairs(rows):
        return [Pair(d, k, a, b, float(model.vector(a) @ model.vector(b)), agree(b, a))
                for d, k, a, b in rows]

    return pairs(PARAPHRASES), pairs(NEAR_MISSES)


def table(paraphrases: list[Pair], near: list[Pair], thresholds: list[float]) -> list[Row]:
    def rate(pairs: list[Pair], t: float, guarded: bool) -> float:
        return sum(p.cosine >= t and (p.guard or not guarded) for p in pairs) / len(pairs)

    return [Row(t, rate(paraphrases, t, False), rate(near, t, False), rate(paraphrases, t, True),
                rate(near, t, True)) for t in thresholds]


def choose(rows: list[Row], margin: float) -> tuple[float, float]:
    """(the lowest threshold with zero guarded false hits, the default: that plus margin, rounded up)."""
    lowest = next(r.threshold for r in rows if r.false_guarded == 0)
    return lowest, math.ceil(round((lowest + margin) * 100, 6)) / 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.semantic_threshold",
                                     description=__doc__.split("\n")[2])
    parser.add_argument("--from", dest="lo", type=float, default=0.70)
    parser.add_argument("--to", dest="hi", type=float, default=0.99)
    parser.add_argument("--step", type=float, default=0.01)
    parser.add_argument("--margin", type=float, default=0.01)
    args = parser.parse_args(argv)
    from gateway.pipeline.savings import DEFAULTS

    paraphrases, near = measure()
    count = int(round((args.hi - args.lo) / args.step)) + 1
    rows = table(paraphrases, near, [round(args.lo + i * args.step, 4) for i in range(count)])
    print(f"{len(paraphrases)} paraphrase pairs, {len(near)} near-miss pairs "
          "(tests/data/semantic_pairs.py)\n")
    print("| threshold | paraphrase hits | near-miss false hits | paraphrase hits, guard "
          "| false hits, guard |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.threshold:.2f} | {r.hit_raw:.0%} | {r.false_raw:.0%} | {r.hit_guarded:.0%} "
              f"| {r.false_guarded:.0%} |")
    worst = max(p.cosine for p in near)
    print(f"\nwithout the guard: the closest near-miss has cosine {worst:.4f}; "
          "no threshold below it is safe")
    lowest, default = choose(rows, args.margin)
    at = table(paraphrases, near, [default])[0]
    print(f"with the guard: zero false hits from {lowest:.2f}; recommended default {default:.2f} "
          f"(margin {args.margin}), configured default {DEFAULTS['semantic_cache']['threshold']}")
    print(f"at {default:.2f}: paraphrase hits {at.hit_guarded:.0%} with the guard "
          f"({at.hit_raw:.0%} without), near-miss false hits {at.false_guarded:.0%} with the guard "
          f"({at.false_raw:.0%} without)")
    print("\nnear-misses the guard lets through (the threshold must stop these):")
    for p in sorted(near, key=lambda p: -p.cosine):
        if p.guard:
            print(f"  {p.cosine:.4f}  [{p.kind}] {p.a!r} / {p.b!r}")
    print("\nparaphrases the guard blocks (a miss, never a wrong answer):")
    for p in sorted(paraphrases, key=lambda p: -p.cosine):
        if not p.guard:
            print(f"  {p.cosine:.4f}  {p.a!r} / {p.b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
