"""Placeholders back to values in answers: whole bodies, and SSE streams of the three dialects.

`restore_tree` rewrites every string of a decoded body; strings under `arguments` and
`partial_json` are JSON text, so values go in JSON-escaped. Thinking blocks, signatures and
encrypted reasoning are left alone (they are signed: an edit would be rejected when resent).

`SseRestorer` re-frames a stream into events and rewrites each event's JSON. Delta fields
(text, refusal, tool-call arguments) go through a `Holdback` per (choice/block/item, field): a
tail that is the beginning of a known placeholder (`[EMA`) waits for the next delta of the same
field, so a placeholder split across chunks is restored whole and other text is never delayed by
more than one placeholder's length. The held text is released when its field ends (finish
chunk, content_block_stop, *.done event) or the stream ends. Events without JSON pass through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from gateway.dlp.detectors import PLACEHOLDER

ESCAPED_KEYS = frozenset({"arguments", "partial_json"})
SIGNED_KEYS = frozenset({"thinking", "signature", "encrypted_content", "reasoning_content", "data"})


def restore_text(text: str, table: dict[str, str], escaped: bool = False) -> str:
    if "[" not in text:
        return text

    def value(m) -> str:
        raw = table.get(m.group())
        if raw is None:
            return m.group()
        return orjson.dumps(raw).decode()[1:-1] if escaped else raw

    return PLACEHOLDER.sub(value, text)


def restore_tree(value: Any, table: dict[str, str], escaped: bool = False) -> Any:
    if isinstance(value, str):
        return restore_text(value, table, escaped)
    if isinstance(value, dict):
        return {k: (v if k in SIGNED_KEYS else restore_tree(v, table, escaped or k in ESCAPED_KEYS))
                for k, v in value.items()}
    if isinstance(value, list):
        return [restore_tree(v, table, escaped) for v in value]
    return value


def restore_body(body: bytes, table: dict[str, str]) -> bytes:
    if b"[" not in body:
        return body
    try:
        tree = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    return orjson.dumps(restore_tree(tree, table))


class Holdback:
    """One delta field's stream: restore what is complete, hold a possible placeholder start."""

    __slots__ = ("table", "escaped", "pending", "longest")

    def __init__(self, table: dict[str, str], escaped: bool) -> None:
        self.table, self.escaped, self.pending = table, escaped, ""
        self.longest = max((len(p) for p in table), default=0)

    def feed(self, text: str) -> str:
        s = self.pending + text
        cut = len(s)
        i = s.rfind("[")
        if i != -1 and "]" not in s[i:] and len(s) - i < self.longest:
            tail = s[i:]
            if any(p.startswith(tail) for p in self.table):
                cut = i
        self.pending = s[cut:]
        return restore_text(s[:cut], self.table, self.escaped)

    def flush(self) -> str:
        s, self.pending = self.pending, ""
        return restore_text(s, self.table, self.escaped)


def _frames(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Whole SSE events (ending in a blank line) from arbitrarily split chunks."""
    buf = b""
    for chunk in chunks:
        buf += chunk.replace(b"\r\n", b"\n")
        while (i := buf.find(b"\n\n")) != -1:
            yield buf[:i + 2]
            buf = buf[i + 2:]
    if buf:
        yield buf


def _parse(frame: bytes) -> tuple[str, Any] | None:
    event, data = "", []
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
    if not data:
        return None
    try:
        return event, orjson.loads(b"\n".join(data))
    except orjson.JSONDecodeError:
        return None


def _frame(event: str, obj: Any) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(obj) + b"\n\n"


class SseRestorer:
    """Restores one stream. `dialect`: "chat" | "messages" | "responses"."""

    def __init__(self, dialect: str, table: dict[str, str]) -> None:
        self.dialect, self.table = dialect, table
        self.fields: dict[tuple, Holdback] = {}
        self.last: dict[str, Any] = {}  # the latest chat chunk's envelope, for a closing chunk

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        try:
            for frame in _frames(chunks):
                parsed = _parse(frame)
                if parsed is None:
                    if frame.startswith(b"data: [DONE]"):
                        yield from self._release_all()
                    yield frame
                    continue
                yield from getattr(self, "_" + self.dialect)(*parsed)
            yield from self._release_all()
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    def _field(self, key: tuple, escaped: bool) -> Holdback:
        hb = self.fields.get(key)
        if hb is None:
            hb = self.fields[key] = Holdback(self.table, escaped)
        return hb

    def _release(self, key: tuple) -> str:
        hb = self.fields.pop(key, None)
        return hb.flush() if hb is not None else ""

    # ---- OpenAI chat completions ------------------------------------------------------------
    def _chat(self, event: str, obj: Any) -> Iterator[bytes]:
        if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
            yield _frame(event, restore_tree(obj, self.table))
            return
        held: list[tuple[dict, str, Any]] = []
        for choice in obj["choices"]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                continue
            held += self._pop_chat_deltas(choice.get("index", 0), delta)
        out = restore_tree(obj, self.table)
        for (container, key, value) in held:
            _put(out, container, key, value)
        for choice in out["choices"]:
            if isinstance(choice, dict) and choice.get("finish_reason") and isinstance(choice.get("delta"), dict):
                self._close_chat_choice(choice.get("index", 0), choice["delta"])
        self.last = {k: v for k, v in out.items() if k not in ("choices", "usage")}
        yield _frame(event, out)

    def _pop_chat_deltas(self, ci: int, delta: dict) -> list[tuple[tuple, str, Any]]:
        found = []
        for key in ("content", "refusal"):
            if isinstance(delta.get(key), str):
                found.append((("choice", ci, "delta"), key, self._field((ci, key), False).feed(delta[key])))
        for j, call in enumerate(delta.get("tool_calls") or ()):
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                ti = call.get("index", j)
                found.append((("tool", ci, j), "arguments", self._field((ci, "tool", ti), True).feed(fn["arguments"])))
        return found

    def _close_chat_choice(self, ci: int, delta: dict) -> None:
        for key in ("content", "refusal"):
            rest = self._release((ci, key))
            if rest:
                delta[key] = (delta.get(key) or "") + rest
        for key in [k for k in self.fields if k[0] == ci and k[1] == "tool"]:
            rest = self._release(key)
            if rest:
                delta.setdefault("tool_calls", []).append({"index": key[2], "function": {"arguments": rest}})

    # ---- Anthropic messages -----------------------------------------------------------------
    def _messages(self, event: str, obj: Any) -> Iterator[bytes]:
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "content_block_delta" and isinstance(obj.get("delta"), dict):
            delta, index = obj["delta"], obj.get("index", 0)
            for key, escaped in (("text", False), ("partial_json", True)):
                if isinstance(delta.get(key), str):
                    delta[key] = self._field((index, key), escaped).feed(delta[key])
            yield _frame(event, obj)
            return
        if kind == "content_block_stop":
            yield from self._release_messages(obj.get("index", 0))
        elif kind == "message_stop":
            yield from self._release_all()
        yield _frame(event, restore_tree(obj, self.table))

    def _release_messages(self, index: int) -> Iterator[bytes]:
        for key, delta_type in (("text", "text_delta"), ("partial_json", "input_json_delta")):
            rest = self._release((index, key))
            if rest:
                yield _frame("content_block_delta", {"type": "content_block_delta", "index": index,
                                                     "delta": {"type": delta_type, key: rest}})

    # ---- OpenAI responses -------------------------------------------------------------------
    RESPONSES_DELTAS = {"response.output_text.delta": False, "response.refusal.delta": False,
                        "response.function_call_arguments.delta": True}

    def _responses(self, event: str, obj: Any) -> Iterator[bytes]:
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind in self.RESPONSES_DELTAS and isinstance(obj.get("delta"), str):
            obj["delta"] = self._field(_item_key(kind, obj), self.RESPONSES_DELTAS[kind]).feed(obj["delta"])
            yield _frame(event, obj)
            return
        if isinstance(kind, str) and kind.endswith(".done") and kind[:-5] + ".delta" in self.RESPONSES_DELTAS:
            delta_kind = kind[:-5] + ".delta"
            rest = self._release(_item_key(delta_kind, obj))
            if rest:
                extra = {k: obj[k] for k in ("item_id", "output_index", "content_index") if k in obj}
                yield _frame(delta_kind if event else "", {"type": delta_kind, **extra, "delta": rest,
                                                           "sequence_number": obj.get("sequence_number", 0)})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            yield from self._release_all()
        yield _frame(event, restore_tree(obj, self.table))

    # ---- end of stream ----------------------------------------------------------------------
    def _release_all(self) -> Iterator[bytes]:
        for key in list(self.fields):
            if key not in self.fields:
                continue
            if self.dialect == "chat":
                delta: dict[str, Any] = {}
                self._close_chat_choice(key[0], delta)
                if delta:
                    yield _frame("", {**self.last, "choices": [{"index": key[0], "delta": delta,
                                                                "finish_reason": None}]})
            elif self.dialect == "messages":
                yield from self._release_messages(key[0])
            else:
                rest = self._release(key)
                if rest:
                    kind = key[0]
                    yield _frame("", {"type": kind, **dict(key[1]), "delta": rest})


def _item_key(kind: str, obj: dict) -> tuple:
    return (kind, tuple((k, obj[k]) for k in ("item_id", "output_index", "content_index") if k in obj))


def _put(out: dict, where: tuple, key: str, value: Any) -> None:
    """Put a held-back delta value back into the restored chunk at the same place."""
    choices = out["choices"]
    if where[0] == "choice":
        for choice in choices:
            if choice.get("index", 0) == where[1]:
                choice["delta"][key] = value
    else:
        for choice in choices:
            if choice.get("index", 0) == where[1]:
                choice["delta"]["tool_calls"][where[2]]["function"][key] = value
