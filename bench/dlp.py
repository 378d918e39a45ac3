"""`python -m bench dlp`: data-protection quality and cost, pattern rules only.

Quality: precision and recall per rule and overall on the labelled corpus
(tests/data/dlp_corpus.jsonl, exact spans). Cost: the time to scan and rewrite a prompt with
every built-in rule on, for 1, 4 and 16 KB of ordinary prose with a few numbers, and for 4 KB
dense with personal data; p50 and p95 over many runs, and p50 per KB. In-process, no network:
what the DLP stage adds to a request.
"""

from __future__ import annotations

import random
import statistics
import sys
import time

from gateway.dlp.engine import Policy, Redactor
from gateway.dlp.rules import BUILTIN
from tests.data import dlp_corpus

PROSE = ("The migration finished at 14:05 after {n} retries. Version 3.{n}.1 of the service now reads the "
         "config from the new bucket, and the dashboard shows {n}00 requests per minute. Please review the "
         "pull request and check the error budget for Q{q} before the release on 2025-0{q}-1{n}. ")


def _prose(size: int, r: random.Random) -> str:
    out = ""
    while len(out) < size:
        out += PROSE.format(n=r.randint(1, 9), q=r.randint(1, 4))
    return out[:size]


def _dense(size: int, r: random.Random) -> str:
    rows = [row["text"] for row in dlp_corpus.load() if row["spans"]]
    out = ""
    while len(out) < size:
        out += r.choice(rows) + "\n"
    return out[:size]


def timing(text: str, policy: Policy, runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        Redactor(policy).redact(text)
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95)]


def main(argv: list[str] | None = None) -> int:
    runs = 300 if "--quick" in (argv or []) else 2000
    report = dlp_corpus.evaluate()
    print("## Data protection: quality (tests/data/dlp_corpus.jsonl, exact spans)\n")
    print("| rule | tp | fp | fn | precision | recall |\n|---|---:|---:|---:|---:|---:|")
    for rule, m in report.items():
        print(f"| {rule} | {m['tp']} | {m['fp']} | {m['fn']} | {m['precision']:.3f} | {m['recall']:.3f} |")
    policy = Policy(enabled=True, actions=dict.fromkeys(BUILTIN, "redact"))
    r = random.Random(7)
    print(f"\n## Data protection: added latency, every built-in pattern rule on ({runs} runs)\n")
    print("| prompt | p50 ms | p95 ms | p50 ms per KB |\n|---|---:|---:|---:|")
    for label, text in (("1 KB prose", _prose(1024, r)), ("4 KB prose", _prose(4096, r)),
                        ("16 KB prose", _prose(16384, r)), ("4 KB dense with personal data", _dense(4096, r))):
        p50, p95 = timing(text, policy, runs)
        print(f"| {label} | {p50:.3f} | {p95:.3f} | {p50 / (len(text) / 1024):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
