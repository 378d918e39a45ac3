"""Scanning and placeholders: a scope's compiled policy, and the per-request mapping.

`Policy` is what one scope (an org, or an app) turned on: rule id -> action, its custom rules, the
phone regions. `Redactor` holds one request's mapping, in memory only: each distinct value gets a
stable placeholder per kind (`[EMAIL_1]`, `[EMAIL_2]`, `[PHONE_1]`), numbered in order of first
appearance, so a conversation resent with its history keeps its numbers; numbers already used by
placeholder-shaped text in the request are skipped, so a literal `[EMAIL_1]` a client typed can
never be swapped for a value. Findings keep rule, kind, action and positions, never the value.

Failure mode: a rule with action `block` raises Blocked; a detector bug or a runaway custom
pattern raises, and the stage refuses the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.dlp import detectors
from gateway.dlp.custom import CustomRule
from gateway.dlp.detectors import PLACEHOLDER
from gateway.dlp.rules import BUILTIN


class Blocked(Exception):
    """A rule with the `block` action matched."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


@dataclass(frozen=True)
class Policy:
    enabled: bool = False
    actions: dict[str, str] = field(default_factory=dict)  # rule id -> action
    custom: tuple[CustomRule, ...] = ()
    regions: tuple[str, ...] = detectors.DEFAULT_REGIONS
    scope: str = ""  # "org:3" or "app:7": where the setting came from
    error: str = ""  # set when the scope cannot be enforced as configured (requests are refused)

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.actions)


@dataclass(slots=True)
class Finding:
    rule: str
    kind: str
    action: str
    slot: int  # which text of the request (in walking order)
    start: int
    end: int


def scan(policy: Policy, text: str) -> list[tuple[int, int, str, str]]:
    """Non-overlapping matches (start, end, rule, kind), in text order. Of overlapping matches the
    leftmost wins, then the longest, then the rule earlier in detectors.PRIORITY (custom rules
    come after the built-ins)."""
    found: list[tuple[int, int, int, str, str]] = []
    try:
        for rank, rule in enumerate(detectors.PRIORITY):
            if rule in policy.actions:
                detect = detectors.DETECTORS[rule]
                spans = detect(text, policy.regions) if rule == "phone" else detect(text)
                found += [(rank, s, e, rule, BUILTIN[rule].kind) for s, e in spans]
    finally:
        detectors.forget()
    base = len(detectors.PRIORITY)
    for i, custom in enumerate(policy.custom):
        if custom.id in policy.actions:
            found += [(base + i, s, e, custom.id, custom.kind) for s, e in custom.find(text)]
    if not found:
        return []
    found.sort(key=lambda f: (f[1], f[1] - f[2], f[0]))  # leftmost, then longest, then by rank
    taken: list[tuple[int, int, str, str]] = []
    reach = 0  # taken spans start in order and never overlap: only the furthest end matters
    for _, s, e, rule, kind in found:
        if s >= reach:
            taken.append((s, e, rule, kind))
            reach = e
    return taken


class Redactor:
    """One request's mapping and findings. Never stored, logged or cached."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.placeholders: dict[tuple[str, str], str] = {}  # (kind, value) -> placeholder
        self.restorable: dict[str, str] = {}  # placeholder -> value, for `redact` only
        self.counters: dict[str, int] = {}
        self.reserved: dict[str, set[int]] = {}
        self.findings: list[Finding] = []
        self.slot = 0

    def reserve(self, text: str) -> None:
        """Numbers already written as placeholders in the request are not handed out again."""
        if "[" in text:
            for m in PLACEHOLDER.finditer(text):
                self.reserved.setdefault(m.group(1), set()).add(int(m.group(2)))

    def redact(self, text: str) -> str:
        slot, self.slot = self.slot, self.slot + 1
        matches = scan(self.policy, text)
        if not matches:
            return text
        pieces, at = [], 0
        for s, e, rule, kind in matches:
            action = self.policy.actions[rule]
            self.findings.append(Finding(rule, kind, action, slot, s, e))
            if action == "block":
                raise Blocked(rule)
            if action == "log":
                continue
            pieces += [text[at:s], self._placeholder(kind, text[s:e], action)]
            at = e
        pieces.append(text[at:])
        return "".join(pieces)

    def _placeholder(self, kind: str, value: str, action: str) -> str:
        key = (kind, value)
        ph = self.placeholders.get(key)
        if ph is None:
            n = self.counters.get(kind, 0) + 1
            reserved = self.reserved.get(kind, ())
            while n in reserved:
                n += 1
            self.counters[kind] = n
            ph = self.placeholders[key] = f"[{kind}_{n}]"
        if action == "redact":
            self.restorable[ph] = value
        return ph
