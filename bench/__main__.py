"""`python -m bench [--quick] [--only GROUP ...] [--seconds S] [--rounds R] [--memory N] [--no-pin] [--keep]`
or `python -m bench --workload [workload options]`, or `python -m bench dlp [--quick]`, or
`python -m bench console [--rows N]` (the console's pages over a big ledger, bench/console.py).

Runs the hot-path benchmark, prints a Markdown report and writes bench/results/latest.json.
Scenarios (bench/scenarios.py) come in groups: core (4 scenarios x 3 targets: the goals),
dialects (Anthropic pass-through and OpenAI -> Anthropic translation, vs direct) and savings
(a miss with the savings layers on vs off, an exact-cache hit vs direct). Default: every group,
8 s per target (4 interleaved rounds of 2 s) after a 1 s warm-up, about 4 minutes in all;
`--only core` is the original ~2 minutes; `--only scale` measures 1, 2 and 4 gunicorn workers on
PostgreSQL + Redis beside SQLite in one process (bench/scale.py). --quick: a ~40 s smoke run. Then 256 connections at
once (a mix of dialects, streams and not), with the gateway's peak RSS. --memory N: then N more
gateway requests (e.g. 100000), sampling its RSS every 10k. --workload: run bench/workload.py
instead (the replayable savings workload; the remaining arguments go to it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from bench import report, scenarios
from bench.suite import Bench

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["console"]:  # the console's pages over a million ledger rows (bench/console.py)
        from bench import console

        return console.main(argv[1:])
    if argv[:1] == ["dlp"]:  # data protection: corpus quality and added latency (bench/dlp.py)
        from bench import dlp

        return dlp.main(argv[1:])
    if "--workload" in argv:
        from bench import workload

        return workload.main([a for a in argv if a != "--workload"])
    parser = argparse.ArgumentParser(prog="python -m bench", description="Gateway benchmark (bench/suite.py)")
    add = parser.add_argument
    add("--quick", action="store_true", help="short smoke run (~40 s)")
    add("--only", nargs="+", choices=(*scenarios.GROUPS, "scale"),
        help="run only these scenario groups; `scale` alone: 1, 2 and 4 workers on PostgreSQL + Redis vs SQLite")
    add("--workload", action="store_true", help="run the savings workload instead (python -m bench.workload)")
    add("--seconds", type=float, help="measured seconds per scenario and target (default 8, quick 1)")
    add("--warmup", type=float, help="warm-up seconds before each run (default 1, quick 0.3)")
    add("--rounds", type=int, help="interleaved rounds the seconds are split into (default 4, quick 1)")
    add("--memory", type=int, metavar="N", help="then send N requests to the gateway, sampling its RSS")
    add("--no-pin", dest="pin", action="store_false", help="do not pin processes to CPUs")
    add("--keep", action="store_true", help="keep the temp dir (logs, gateway instance)")
    add("--json", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    seconds = args.seconds or (1.0 if args.quick else 8.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.only and "scale" in args.only:  # its own processes and report (bench/scale.py)
        from bench import scale

        results = scale.run(args.seconds or (2.0 if args.quick else 6.0), warmup, args.keep, log=log)
        print(scale.markdown(results))
        out = args.json.with_name("scale.json") if args.json == RESULTS else args.json
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        log(f"results: {out}")
        return 0
    rounds = args.rounds or (1 if args.quick else 4)
    bench = Bench(seconds, warmup, rounds, args.pin, log=log)
    failed = True
    started = time.perf_counter()
    try:
        log(f"starting the fake upstream, the pass-through and the gateway (logs in {bench.tmp})")
        bench.start()
        gateway = bench.targets["gateway"]
        rss_before = gateway.server.rss_mb()
        runs = bench.run_scenarios(scenarios.selected(args.only))
        rss = {"before_mb": rss_before, "after_mb": gateway.server.rss_mb(), "requests": gateway.served}
        rss["connections"] = bench.memory_peak(256, 1_000 if args.quick else 5_000)
        memory = bench.memory_soak(args.memory) if args.memory else None
        failed = False
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.stop()
        if failed:
            for child in bench.children:
                log(child.log_tail())
        bench.cleanup(keep=args.keep or failed)
    report.add_deltas(runs)
    results = {"environment": bench.environment(), "runs": runs, "gateway_rss": rss, "memory": memory,
               "elapsed_seconds": round(time.perf_counter() - started, 1)}
    results["goals"] = report.goals(runs, memory, rss)
    results["comparisons"] = report.comparisons(runs)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print(report.markdown(results))
    log(f"results: {args.json} ({results['elapsed_seconds']:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
