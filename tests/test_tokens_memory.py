"""The tokenizer's footprint: one compact copy of the ranks, loaded at start, and counts only where
a decision needs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import tokens

ROOT = Path(__file__).resolve().parent.parent

# A fresh interpreter: RSS before and after the o200k encoder is built (and what it counts).
FOOTPRINT_PROBE = r"""
import json
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
from gateway import tokens
before = rss_mb()
enc = tokens._encoding("o200k_base")
print(json.dumps({"grew_mb": rss_mb() - before, "module": type(enc).__module__,
                  "ids": enc.encode("hello world"), "count": tokens.count("hello world"),
                  "tiktoken": "tiktoken" in __import__("sys").modules}))
"""

# A fresh interpreter: a server's start-up, then whether a request would still have to load the encoder.
START_PROBE = r"""
import json, sys
from gateway import boot, create_app, tokens
app = create_app({"instance": sys.argv[1], "secret_key": "t", "start_jobs": False})
boot.prepare(app)
boot.start_background(app)
loaded = tokens._encoding.cache_info().currsize
boot.stop_background(app)
print(json.dumps({"loaded": loaded}))
"""


def _probe(code: str, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_ranks_are_held_once():
    """The ranks are held once, as flat arrays: o200k grows the process by a few MB (tiktoken's Rust
    core took about 44 MB, 78 MB with the Python dict beside it), and no rank dict is left behind."""
    result = _probe(FOOTPRINT_PROBE)
    assert result["module"] == "gateway.bpe" and result["ids"] == [24912, 2375] and result["count"] == 2
    assert result["grew_mb"] < 15, result
    assert not result["tiktoken"], result


def test_the_encoder_is_loaded_at_start_not_by_a_request(tmp_path):
    assert _probe(START_PROBE, str(tmp_path / "inst"))["loaded"] == 1


TEXTS = ["hello world " * 300, "x" * 5000, "🙂" * 700, "a b" * 2000, "0123456789" * 400,
         "The quick brown fox. " * 40, "   " * 2000]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
@pytest.mark.parametrize("n", [1, 50, 1024, 1500, 3000])
def test_at_least_agrees_with_the_exact_count(text, n):
    assert tokens.at_least(text, n) == (tokens.count(text) >= n)


def test_the_bounds_decide_without_counting(monkeypatch):
    def no_count(*a, **kw):
        raise AssertionError("counted")

    monkeypatch.setattr(tokens, "count", no_count)
    assert tokens.bounds("héllo") == (1, 6)
    assert not tokens.at_least("short text", 1024)  # fewer bytes than tokens asked for
    assert tokens.at_least("x" * (128 * 1024), 1024)  # every token is at most 128 bytes
    assert not tokens.at_least("", 1) and tokens.at_least("", 0)


def test_a_long_text_is_decided_on_a_prefix(monkeypatch):
    counted = []
    real = tokens.count
    monkeypatch.setattr(tokens, "count", lambda text, *a: counted.append(len(text)) or real(text, *a))
    text = "The quick brown fox jumps over the lazy dog. " * 2500  # too short for the bounds to decide
    assert tokens.bounds(text)[0] < 1024 <= tokens.bounds(text)[1]
    assert tokens.at_least(text, 1024)
    assert counted and max(counted) <= 8 * (1024 + 8)  # not the whole 112,500 characters
