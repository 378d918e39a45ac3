"""Custom rules: an admin's regular expression, validated before it is saved, bounded when it runs.

Validation (`compile_rule`) rejects patterns that do not compile, are longer than 500 characters,
nest quantifiers (`(a+)+`, `(\\w*)*`: the classic catastrophic shapes), match the empty string, or
take longer than a small budget on adversarial probes. At run time a pattern runs through the
`regex` module with a timeout per text: a pattern that still runs away raises CustomRuleTimeout,
and the stage refuses the request (fail closed) rather than send text it could not check.
"""

from __future__ import annotations

import re as std_re
from dataclasses import dataclass

import regex

MAX_PATTERN = 500
RUN_TIMEOUT = 0.05  # seconds per text
PROBE_TIMEOUT = 0.02
KIND = std_re.compile(r"^[A-Z][A-Z0-9_]{0,23}$")
NAME = std_re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
NESTED = std_re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,)")
PROBES = ("a" * 3000 + "!", "0" * 3000 + "x", " " * 3000 + "\x00", "a@" * 1500, "-." * 1500)


class CustomRuleError(ValueError):
    """The pattern cannot be used; the message says why."""


class CustomRuleTimeout(RuntimeError):
    """A custom pattern ran past its time budget on a request's text."""


@dataclass(frozen=True)
class CustomRule:
    id: str  # custom:<name>
    kind: str
    pattern: regex.Pattern

    def find(self, text: str) -> list[tuple[int, int]]:
        try:
            return [m.span() for m in self.pattern.finditer(text, timeout=RUN_TIMEOUT) if m.end() > m.start()]
        except TimeoutError:
            raise CustomRuleTimeout(self.id) from None


def compile_rule(name: str, kind: str, pattern: str) -> CustomRule:
    if not NAME.match(name or ""):
        raise CustomRuleError("A rule name is 1-40 lowercase letters, digits, '-' or '_'.")
    if not KIND.match(kind or ""):
        raise CustomRuleError("A kind is 1-24 capital letters, digits or '_', starting with a letter (e.g. ORDER_REF).")
    if not pattern or len(pattern) > MAX_PATTERN:
        raise CustomRuleError(f"A pattern is 1-{MAX_PATTERN} characters.")
    if NESTED.search(pattern):
        raise CustomRuleError("Nested quantifiers such as (a+)+ can take exponential time; rewrite the pattern.")
    try:
        compiled = regex.compile(pattern, regex.V0)
    except regex.error as e:
        raise CustomRuleError(f"The pattern does not compile: {e}.") from None
    if compiled.search("") is not None:
        raise CustomRuleError("The pattern matches the empty string.")
    for probe in PROBES:
        try:
            compiled.search(probe, timeout=PROBE_TIMEOUT)
        except TimeoutError:
            raise CustomRuleError("The pattern is too slow on long inputs (catastrophic backtracking).") from None
    return CustomRule(f"custom:{name}", kind, compiled)


def sample_matches(rule: CustomRule, sample: str) -> list[tuple[int, int, str]]:
    """What a sample matches, for the console's test box (the sample is the admin's own text)."""
    return [(s, e, sample[s:e]) for s, e in rule.find(sample[:20_000])]
