"""Gateway benchmark: the gateway vs a bare gevent + requests pass-through, over a fast fake upstream.

`python -m bench` (or `make bench`) runs the hot-path benchmark; see bench/__main__.py for the
options, bench/scenarios.py for the scenarios (core, dialects, savings) and bench/suite.py for what
runs where. Results: a Markdown table on stdout and bench/results/latest.json.
`python -m bench.workload` (or `python -m bench --workload`) plays the replayable savings workload
(bench/workload_parts.py) direct and through the gateway: bench/results/workload.json.
Nothing here asserts on timings: it measures and reports.
"""
