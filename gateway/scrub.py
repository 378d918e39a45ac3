"""Provider secrets out of anything forwarded, stored or logged.

`scrub(text)` removes every configured provider key from `text`: the whole key, the key without
its `sk-` style prefix, and any run of 8 or more characters of one (an upstream that echoes a
truncated or reformatted key in its error message). Keys come from memo.py, which calls
`SCRUB.update()` whenever the catalog is (re)loaded, so a key changed in the console is known to
the scrubber before any request can use it.

The central points call it: UpstreamError (every upstream message, before it is rendered in any
dialect, stream or not), the meter (`ledger_entry.error_message`, which the console's drill-down
shows) and the log record factory installed by `install_log_filter()` (message, arguments and
traceback text of every record).

How: the set of all 8-character substrings ("grams") of every key. A text is scanned once; each
window found in the set marks its span, overlapping spans merge into runs, and each run becomes
REDACTED. A run made only of lowercase letters or only of digits (e.g. "upstream" from a key
"sk-upstream-test") is a word, not a secret: it is kept unless it touches a stronger gram.
Failure mode: a key shorter than 8 characters is removed only whole (from 6 characters up);
a real provider key is far longer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

GRAM = 8
MIN_WHOLE = 6  # shorter keys (test stubs) are not scrubbed: they would eat ordinary words
REDACTED = "[redacted]"
# Parts of a compound key (Bedrock's "ACCESS_KEY:SECRET:TOKEN") are secrets of their own.
_PART_SEPARATORS = re.compile(r"[:\s]+")


def _weak(gram: str) -> bool:
    return (gram.isalpha() and gram.islower()) or gram.isdigit()


class Scrubber:
    def __init__(self) -> None:
        self._keys: frozenset[str] = frozenset()
        self._grams: dict[str, bool] = {}  # gram -> strong (not a plain word or number)
        self._short: re.Pattern[str] | None = None

    def update(self, keys: Iterable[str | None]) -> None:
        """The current provider keys; a no-op when they have not changed."""
        found = set()
        for key in keys:
            if not key:
                continue
            found.add(key)
            found.update(p for p in _PART_SEPARATORS.split(key) if p)
        frozen = frozenset(found)
        if frozen == self._keys:
            return
        grams: dict[str, bool] = {}
        short = []
        for key in frozen:
            if len(key) < GRAM:
                if len(key) >= MIN_WHOLE:
                    short.append(key)
                continue
            for i in range(len(key) - GRAM + 1):
                g = key[i:i + GRAM]
                grams[g] = grams.get(g, False) or not _weak(g)
        # Swap whole objects: a request reading the old set mid-update still sees a consistent one.
        self._short = re.compile("|".join(map(re.escape, sorted(short, key=len, reverse=True)))) if short else None
        self._grams = grams
        self._keys = frozen

    def __call__(self, text: str) -> str:
        if not text or not isinstance(text, str):
            return text
        grams, short = self._grams, self._short
        if short is not None:
            text = short.sub(REDACTED, text)
        if not grams or len(text) < GRAM:
            return text
        runs: list[tuple[int, int]] = []
        start = end = -1
        strong = False
        get = grams.get
        for i in range(len(text) - GRAM + 1):
            kind = get(text[i:i + GRAM])
            if kind is None:
                continue
            if i <= end:  # overlaps or touches the current run
                end = i + GRAM
                strong = strong or kind
                continue
            if strong:
                runs.append((start, end))
            start, end, strong = i, i + GRAM, kind
        if strong:
            runs.append((start, end))
        if not runs:
            return text
        out, last = [], 0
        for s, e in runs:
            out.append(text[last:s])
            out.append(REDACTED)
            last = e
        out.append(text[last:])
        return "".join(out)


SCRUB = Scrubber()


def scrub(text: str) -> str:
    return SCRUB(text)


def scrub_bytes(data: bytes) -> bytes:
    """scrub() over UTF-8 bytes (invalid sequences kept as they were)."""
    text = data.decode("utf-8", "surrogateescape")
    out = SCRUB(text)
    return data if out is text else out.encode("utf-8", "surrogateescape")


_installed = False


def install_log_filter() -> None:
    """Scrub every log record as it is created, whatever handler (console, gunicorn, a file) later
    formats it: the message with its arguments, and the traceback text."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()
    formatter = logging.Formatter()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if not SCRUB._grams and SCRUB._short is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return record
        record.msg, record.args = scrub(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = scrub(formatter.formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)
