"""Gateway benchmark: the gateway vs a bare gevent + requests pass-through, over a fast fake upstream.

`python -m bench` (or `make bench`) runs it; see bench/__main__.py for the options and
bench/suite.py for what runs where. Results: a Markdown table on stdout and
bench/results/latest.json. Nothing here asserts on timings: it measures and reports.
"""
