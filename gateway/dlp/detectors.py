"""Pattern detectors: one function per built-in rule, `text -> [(start, end), ...]`.

Every pattern is compiled at import; a cheap substring test skips a detector that cannot match
(no '@', no digit...). Candidates are then validated: checksums by python-stdnum (IBAN, Luhn,
SSN, national ids), phones by `phonenumbers` for the configured regions, IPs by `ipaddress`,
secrets by shape and entropy. A detector never returns the matched value itself, only spans, so
nothing downstream needs the raw text beyond the request.

Failure mode: a detector raises on a bug; the caller (the DLP stage) refuses the request.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Sequence

from stdnum import iban as std_iban
from stdnum import luhn
from stdnum.br import cpf
from stdnum.ca import sin
from stdnum.es import dni, nie
from stdnum.in_ import aadhaar
from stdnum.it import codicefiscale
from stdnum.us import ssn

Span = tuple[int, int]
DEFAULT_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "AU")

EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-]|\.[A-Za-z0-9])")
EMAIL_LOCAL = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")


def email(text: str, _ctx=None) -> list[Span]:
    """From each '@': a domain after it, then a local part before it (never a scan of the text)."""
    out: list[Span] = []
    at = text.find("@")
    while at != -1:
        domain = EMAIL_DOMAIN.match(text, at + 1)
        local = EMAIL_LOCAL.search(text, max(0, at - 64, out[-1][1] if out else 0), at) if domain else None
        if domain is not None and local is not None:
            start = local.start()
            while start < at and not text[start].isalnum():  # a local part starts with a letter or digit
                start += 1
            if start < at and text[at - 1] != "." and _free(text, start, ".%+-"):
                out.append((start, domain.end()))
            at = text.find("@", domain.end())
        else:
            at = text.find("@", at + 1)
    return out


def _free(text: str, i: int, extra: str = "") -> bool:
    """No word character (or one of `extra`) right before position i. Patterns start with a plain
    character class instead of a lookbehind: the regex engine then skips ahead fast."""
    if i == 0:
        return True
    c = text[i - 1]
    return not (c.isalnum() or c == "_" or c in extra)


NUM_RUN = re.compile(r"\d[\d \t().\-/]{5,}\d")
_windows_of: list = [None, []]  # the text being scanned and its windows; scan() clears it when done


def forget() -> None:
    """Drop the reference to the last text scanned: request text is not kept past its scan."""
    _windows_of[0], _windows_of[1] = None, []


def _windows(text: str) -> list[tuple[int, int]]:
    """Stretches holding at least 7 digits (with phone/card punctuation between them), widened by
    a few characters each side for prefixes and boundary checks. The digit detectors search only
    these: one pass over the text instead of one per pattern."""
    if _windows_of[0] is text:
        return _windows_of[1]
    found = []
    for m in NUM_RUN.finditer(text):
        s, e = m.span()
        if e - s >= 7 and sum(c.isdigit() for c in m.group()) >= 7:
            found.append((max(0, s - 2), min(len(text), e + 3)))
    _windows_of[0], _windows_of[1] = text, found
    return found


def _finditer(pattern: re.Pattern[str], text: str):
    for s, e in _windows(text):
        yield from pattern.finditer(text, s, e)
# A run of digits with phone punctuation: +E.164, or groups split by space . - ( ).
PHONE = re.compile(r"[+(\d](?:(?<=\+)\d{7,15}|[\d \t().\-]{5,22}\d)(?![\w@]|[.:/-]\d)")
DATE_LIKE = re.compile(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}|\d{1,2}:\d{2}")
DOTTED_PHONE = re.compile(r"\(?\d{2,4}\)?(?:\.\d{2,4}){2,4}")


def phone(text: str, regions: Sequence[str] = DEFAULT_REGIONS) -> list[Span]:
    out = []
    seen: dict[str, bool] = {}  # this text's verdicts: a number repeated (resent history) is parsed once
    for m in _finditer(PHONE, text):
        if not _free(text, m.start(), "+.@/:-") and text[max(0, m.start() - 4):m.start()].lower() != "tel:":
            continue
        start, cand = m.start(), m.group().rstrip(" \t-.(")
        while cand.startswith("(") and cand.count("(") > cand.count(")"):  # prose's own parenthesis
            start, cand = start + 1, cand[1:]
        digits = sum(c.isdigit() for c in cand)
        if not 7 <= digits <= 15 or DATE_LIKE.search(cand):
            continue
        international = cand.startswith(("+", "00"))
        if not international and not any(c in cand for c in " ()-."):
            continue  # a bare digit run is an id far more often than a phone number
        if not international and "." in cand and not DOTTED_PHONE.fullmatch(cand):
            continue  # dotted runs are versions and amounts unless they are grouped like phones
        valid = seen.get(cand)
        if valid is None:
            valid = seen[cand] = _valid_phone(cand, international, regions)
        if valid:
            out.append((start, start + len(cand)))
    return out


GROUPS = re.compile(r"\d+")


def _valid_phone(cand: str, international: bool, regions: Sequence[str]) -> bool:
    """Valid in its numbering plan; a national-format candidate must also be grouped the way the
    region writes its numbers (or as area + number), which rules out serials like 291-7781-841."""
    import phonenumbers  # imported at the first phone candidate: most processes never scan for phones

    number = "+" + cand[2:] if cand.startswith("00") else cand
    groups = [len(g) for g in GROUPS.findall(cand)]
    for region in ((None,) if international else regions):
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if not phonenumbers.is_valid_number(parsed):
            continue
        if international or len(groups) <= 2:
            return True
        written = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        if [len(g) for g in GROUPS.findall(written)] == groups:
            return True
    return False


CARD = re.compile(r"\d{4}(?:[ -]?\d{4}[ -]?\d{4}[ -]?\d{1,4}(?:[ -]?\d{1,3})?|[ -]?\d{6}[ -]?\d{4,5})(?![\w]|[.-]\d)")
CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|6(?:011|5|4[4-9]|22)|35|3(?:0[0-5]|[689])|62")


def card(text: str, _ctx=None) -> list[Span]:
    out = []
    for m in _finditer(CARD, text):
        raw = m.group()
        if not _free(text, m.start(), ".-") or len({c for c in raw if not c.isdigit()}) > 1:
            continue
        digits = raw.replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and CARD_PREFIX.match(digits) and luhn.is_valid(digits):
            out.append(m.span())
    return out


IBAN = re.compile(r"[A-Z][A-Z]\d\d(?: ?[A-Z0-9]){11,30}(?![\w])")


def iban(text: str, _ctx=None) -> list[Span]:
    out = []
    for m in IBAN.finditer(text):
        if not _free(text, m.start()):
            continue
        raw = m.group()
        while len(raw.replace(" ", "")) >= 15:
            if _mod97(raw) and std_iban.is_valid(raw):
                out.append((m.start(), m.start() + len(raw)))
                break
            if " " not in raw:
                break
            raw = raw.rsplit(" ", 1)[0]  # a following capitalised word may have been swallowed
    return out


def _mod97(raw: str) -> bool:
    """The IBAN checksum alone: cheap, and false for almost every non-IBAN."""
    compact = raw.replace(" ", "")
    try:
        return int("".join(str(int(c, 36)) for c in compact[4:] + compact[:4])) % 97 == 1
    except ValueError:
        return False


SSN = re.compile(r"\d{3}([- ])\d{2}\1\d{4}(?![\w]|-\d)")
SSN_BARE = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b\W{0,5}(\d{9})\b")


def us_ssn(text: str, _ctx=None) -> list[Span]:
    out = [m.span() for m in _finditer(SSN, text)
           if _free(text, m.start(), "-") and ssn.is_valid(m.group().replace(" ", "-"))]
    lower = text.lower()
    if "ssn" in lower or "social security" in lower:
        out += [m.span(1) for m in SSN_BARE.finditer(text) if ssn.is_valid(m.group(1))]
    return out


NINO = re.compile(r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])")
NINO_BAD_PREFIX = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def uk_nino(text: str, _ctx=None) -> list[Span]:
    return [m.span() for m in NINO.finditer(text) if _free(text, m.start()) and m.group()[:2] not in NINO_BAD_PREFIX]


NATIONAL_TEXT: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (  # start with a letter
    (re.compile(r"[XYZ]-?\d{7}-?[A-Z](?![\w])"), nie.is_valid),
    (re.compile(r"[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z](?![\w])"), codicefiscale.is_valid),
)
NATIONAL: tuple[tuple[re.Pattern[str], Callable[[str], bool]], ...] = (  # start with a digit
    (re.compile(r"\d{8}-?[A-Z](?![\w])"), dni.is_valid),
    (re.compile(r"\d{3}\.\d{3}\.\d{3}-\d{2}(?![\w]|[.-]\d)"), cpf.is_valid),
    (re.compile(r"[2-9]\d{3} \d{4} \d{4}(?![\w]| \d)"), aadhaar.is_valid),
    (re.compile(r"\d{3}([ -])\d{3}\1\d{3}(?![\w]|[ -]\d)"), sin.is_valid),
)


def national_id(text: str, _ctx=None) -> list[Span]:
    found = [m for pattern, valid in NATIONAL for m in _finditer(pattern, text) if valid(m.group())]
    found += [m for pattern, valid in NATIONAL_TEXT for m in pattern.finditer(text) if valid(m.group())]
    return [m.span() for m in found if _free(text, m.start(), ".-")]


IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)")
IPV6 = re.compile(r"[0-9A-Fa-f:](?:[0-9A-Fa-f]{0,4}:){1,7}[0-9A-Fa-f]{0,4}(?![\w:])")
BROADCAST = ipaddress.IPv4Address("255.255.255.255")  # with loopback and 0.0.0.0: says nothing about anyone
VERSION_BEFORE = re.compile(r"(?i)(?:\bv|version\s*|release\s*|build\s*)$")


def ip_address(text: str, _ctx=None) -> list[Span]:
    out = []
    for m in IPV4.finditer(text):
        if not _free(text, m.start(), ".") or VERSION_BEFORE.search(text, max(0, m.start() - 10), m.start()):
            continue
        try:
            address = ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified or address == BROADCAST):
            out.append(m.span())
    if "::" in text or text.count(":") >= 7:
        for m in IPV6.finditer(text):
            cand = m.group()
            if (not _free(text, m.start(), ":.") or len(cand) < 3 or cand.count(":") < 2
                    or not any(c.isdigit() for c in cand)):
                continue
            try:
                address6 = ipaddress.IPv6Address(cand)
            except ValueError:
                continue
            if not (address6.is_loopback or address6.is_unspecified):
                out.append(m.span())
    return out


KEY_MARKS = ("sk-", "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
             "xox", "AIza", "sk_", "rk_", "glpat-", "hf_")
API_KEY = re.compile(
    r"(?:"
    r"sk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_-]{20,}"
    r"|sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}"
    r"|(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|glpat-[A-Za-z0-9_-]{20,}"
    r"|hf_[A-Za-z0-9]{30,}"
    r")(?![\w-])")


def api_key(text: str, _ctx=None) -> list[Span]:
    if not any(mark in text for mark in KEY_MARKS):
        return []
    out = []
    for m in API_KEY.finditer(text):
        body = m.group()
        if not _free(text, m.start(), "-"):
            continue
        if body.startswith("sk-") and not (any(c.isdigit() for c in body[3:]) and any(c.isalpha() for c in body[3:])):
            continue  # sk-some-long-slug-of-words is prose, not a key
        out.append(m.span())
    return out


JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}(?![\w-])")


def jwt(text: str, _ctx=None) -> list[Span]:
    return [m.span() for m in JWT.finditer(text)] if "eyJ" in text else []




PEM_BEGIN = re.compile(r"-----BEGIN ((?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?)-----")
PEM_MAX = 16384


def private_key(text: str, _ctx=None) -> list[Span]:
    """A BEGIN line, then the first matching END line within 16 KB (found with str.find, bounded)."""
    if "-----BEGIN " not in text or "-----END " not in text:
        return []
    out: list[Span] = []
    for m in PEM_BEGIN.finditer(text):
        if out and m.start() < out[-1][1]:
            continue
        footer = f"-----END {m.group(1)}-----"
        end = text.find(footer, m.end(), m.end() + PEM_MAX + len(footer))
        if end != -1:
            out.append((m.start(), end + len(footer)))
    return out


SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "passphrase", "credential")
SECRET = re.compile(
    r"(?i)(?:api[_-]?key|apikey|secret|token|passw(?:or)?d|pwd|passphrase|access[_-]?key|credentials?)"
    r"[\w-]{0,20}[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([^\s\"'`,;<>(){}\[\]]{6,200})")
PASSWORD_WORD = re.compile(r"(?i)passw(?:or)?d|pwd|passphrase")
NOT_SECRET = re.compile(r"(?i)^(?:null|none|true|false|undefined|required|optional|string|changeme|"
                        r"redacted|example|your[_-].*|\*+|x+|\.+|\$.*|%.*|process\.env.*|os\.environ.*|env\..*)$")


def _classes(value: str) -> int:
    return sum((any(c.islower() for c in value), any(c.isupper() for c in value), any(c.isdigit() for c in value),
                any(not c.isalnum() for c in value)))


def entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for c in value:
        counts[c] = counts.get(c, 0) + 1
    n = len(value)
    return -sum(k / n * math.log2(k / n) for k in counts.values())


def secret(text: str, _ctx=None) -> list[Span]:
    lower = text.lower()
    starts = sorted(i for word in SECRET_WORDS for i in _all(lower, word))
    out: list[Span] = []
    for i in starts:  # only near a keyword: the pattern runs from a little before each one
        if out and i < out[-1][1]:
            continue
        m = SECRET.search(text, max(0, i - 12), i + 300)
        if m is None or m.start() > i:
            continue
        value = m.group(1).rstrip(".:")
        if len(value) < 6 or NOT_SECRET.match(value) or PLACEHOLDER.fullmatch(value):
            continue
        keyword = m.group()[:m.start(1) - m.start()]
        if PASSWORD_WORD.search(keyword):
            ok = _classes(value) >= 2 and not value.isalpha()
        else:
            ok = len(value) >= 12 and _classes(value) >= 2 and entropy(value) >= 3.0
        if ok:
            out.append((m.start(1), m.start(1) + len(value)))
    return out


def _all(text: str, word: str) -> list[int]:
    found, i = [], text.find(word)
    while i != -1 and len(found) < 200:
        found.append(i)
        i = text.find(word, i + 1)
    return found


URL_CREDENTIALS = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,15}://([^\s/?#@:\"'<>]{1,128}:[^\s/?#@\"'<>]{1,128})@[\w.-]+")


def url_credentials(text: str, _ctx=None) -> list[Span]:
    return [m.span(1) for m in URL_CREDENTIALS.finditer(text)] if "://" in text else []


PLACEHOLDER = re.compile(r"\[([A-Z][A-Z0-9_]{0,30})_(\d{1,6})\]")

DETECTORS: dict[str, Callable[..., list[Span]]] = {
    "email": email, "phone": phone, "card": card, "iban": iban, "us_ssn": us_ssn, "uk_nino": uk_nino,
    "national_id": national_id, "ip_address": ip_address, "api_key": api_key, "jwt": jwt,
    "private_key": private_key, "secret": secret, "url_credentials": url_credentials,
}
# When two rules claim overlapping text, the earlier one here wins (then the longer match).
PRIORITY = ("private_key", "jwt", "api_key", "url_credentials", "secret", "email", "iban", "card", "us_ssn",
            "uk_nino", "national_id", "ip_address", "phone")
