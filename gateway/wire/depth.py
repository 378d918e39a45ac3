"""How deep a decoded JSON body nests, checked once at decode: orjson re-encodes at most 254 levels.

A body nested deeper than MAX_DEPTH anywhere is refused with a 400 that names the field (the
top-level key, with the path to where the limit was crossed), so no later re-encode (pass-through
with the model rewritten, translation, cache keys) can fail with orjson's recursion limit. The
walk is iterative and runs only when the raw bytes hold enough brackets to nest that deep.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import InvalidRequest

# Well below orjson's 254, so what a translation or a stage wraps around a client's value still encodes.
MAX_DEPTH = 128


def check(raw: bytes, body: Any) -> None:
    """InvalidRequest naming the field when `body` nests deeper than MAX_DEPTH."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:  # the common case: cannot nest that deep
        return
    stack: list[tuple[Any, int, tuple]] = [(body, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"Invalid '{_name(path)}': JSON nested deeper than {MAX_DEPTH} levels.",
                                 param=_name(path) if path else None)
        if isinstance(value, dict):
            stack.extend((v, depth + 1, path + (k,) if len(path) < 4 else path) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, path + (i,) if len(path) < 4 else path) for i, v in enumerate(value))


def _name(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
