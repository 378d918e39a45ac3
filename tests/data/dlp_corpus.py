"""Labelled corpus for data protection: prompts with expected spans, and hard negatives.

`python -m tests.data.dlp_corpus` regenerates tests/data/dlp_corpus.jsonl (seeded: the same file
every time). Each line: {"text": ..., "spans": [[start, end, rule], ...], "group": ...}. Values are
made up but well-formed: emails of many shapes; phones in the national and international formats
of ten countries (numbers valid in their numbering plan); cards that pass Luhn with real issuer
prefixes; IBANs with correct check digits; SSNs in issued ranges; provider key shapes, JWTs,
private keys, secrets next to keywords, URL credentials, IPs, UK NI numbers and national ids.
Hard negatives carry no span: version numbers, order ids, timestamps, hashes, UUIDs, code, amounts,
ISBNs, tracking numbers, Luhn-failing digit runs, placeholders such as `password: <your password>`.

`evaluate()` scans every snippet with every built-in rule on and counts exact span matches (same
start, end and rule): a boundary off by one character counts as a miss and a false alarm.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

import orjson
import phonenumbers
from stdnum import iban as std_iban

PATH = Path(__file__).with_suffix(".jsonl")
FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar",
         "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe", "li", "jose", "anna-maria", "o.brien"]
LAST = ["smith", "jones", "garcia", "muller", "rossi", "dubois", "tanaka", "kowalski", "nguyen", "patel", "silva"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.de", "uni-example.edu", "example.io",
           "sub.dept.example.net", "example.fr"]
PHONE_REGIONS = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "BR", "AU"]
LEAD = ["Please contact {} about the invoice.", "My details: {}.", "Can you draft a reply to {}?",
        "Forward the report to {} before Friday.", "The customer wrote from {} yesterday.",
        "Update the record ({}) and confirm.", "Note: {} is the new value.", "{} — is this right?",
        "In the CRM export I see \"{}\" for this account.", "Summarise the thread with {} in two lines."]


def _email(r: random.Random) -> str:
    local = r.choice(FIRST) + r.choice([".", "_", "", "+work."]) + r.choice(LAST)
    if r.random() < 0.2:
        local = local.capitalize()
    if r.random() < 0.2:
        local += str(r.randint(1, 99))
    return f"{local}@{r.choice(DOMAINS)}"


def _phone(r: random.Random) -> str:
    while True:
        region = r.choice(PHONE_REGIONS)
        kind = r.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
        example = phonenumbers.example_number_for_type(region, kind)
        if example is None:
            continue
        national = str(example.national_number)
        for _ in range(20):  # vary the subscriber part until the number is valid again
            digits = national[:3] + "".join(r.choice(string.digits) for _ in national[3:])
            number = phonenumbers.parse("+" + str(example.country_code) + digits)
            if phonenumbers.is_valid_number(number):
                style = r.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL,
                                  phonenumbers.PhoneNumberFormat.E164])
                return phonenumbers.format_number(number, style)


def _luhn_complete(prefix: str, length: int, r: random.Random) -> str:
    body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return body + str((10 - total % 10) % 10)


def _card(r: random.Random) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15),
                               ("6011", 16), ("4", 13)])
    number = _luhn_complete(prefix, length, r)
    sep = r.choice([" ", "-", ""])
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    if length == 13:
        return number
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


IBAN_FORMATS = {"DE": "8n10n", "GB": "4a6n8n", "FR": "5n5n11c2n", "ES": "4n4n1n1n10n", "NL": "4a10n", "IT": "1a5n5n12c",
                "BE": "3n7n2n", "CH": "5n12c"}


def _iban(r: random.Random) -> str:
    country = r.choice(list(IBAN_FORMATS))
    bban = ""
    for part in IBAN_FORMATS[country].replace("n", "n ").replace("a", "a ").replace("c", "c ").split():
        n, t = int(part[:-1]), part[-1]
        alphabet = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}[t]
        bban += "".join(r.choice(alphabet) for _ in range(n))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    iban = f"{country}{check:02d}{bban}"
    if not std_iban.is_valid(iban):  # a national check digit (BE, ES, FR...) failed: draw again
        return _iban(r)
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if r.random() < 0.6 else iban


def _ssn(r: random.Random) -> str:
    area = r.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{r.randint(1, 99):02d}-{r.randint(1, 9999):04d}"


def _rand(r: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    while True:
        s = "".join(r.choice(alphabet) for _ in range(n))
        if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
            return s


def _api_key(r: random.Random) -> str:
    return r.choice([
        lambda: "sk-proj-" + _rand(r, 40, string.ascii_letters + string.digits + "_-"),
        lambda: "sk-" + _rand(r, 48),
        lambda: "sk-ant-api03-" + _rand(r, 80, string.ascii_letters + string.digits + "_-"),
        lambda: "AKIA" + _rand(r, 16, string.ascii_uppercase + string.digits),
        lambda: "ghp_" + _rand(r, 36),
        lambda: "github_pat_" + _rand(r, 60, string.ascii_letters + string.digits + "_"),
        lambda: "xoxb-" + "-".join(str(r.randint(10**10, 10**11)) for _ in range(2)) + "-" + _rand(r, 24),
        lambda: "AIza" + _rand(r, 35, string.ascii_letters + string.digits + "_-"),
        lambda: "sk_live_" + _rand(r, 24),
        lambda: "glpat-" + _rand(r, 20),
        lambda: "hf_" + _rand(r, 34),
    ])()


def _b64url(r: random.Random, n: int) -> str:
    return _rand(r, n, string.ascii_letters + string.digits + "_-")


def _jwt(r: random.Random) -> str:
    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{_b64url(r, 40)}.{_b64url(r, 43)}"


def _pem(r: random.Random) -> str:
    kind = r.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY"])
    body = "\n".join(_rand(r, 64, string.ascii_letters + string.digits + "+/") for _ in range(r.randint(2, 5)))
    return f"-----BEGIN {kind}-----\n{body}\n-----END {kind}-----"


def _nino(r: random.Random) -> str:
    first = r.choice("ABCEGHJKLMNOPRSTWXYZ")
    second = r.choice("ABCEGHJKLMNPRSTWXYZ")
    if first + second in {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"}:
        first = "A"
    digits = "".join(r.choice(string.digits) for _ in range(6))
    tail = r.choice("ABCD")
    return (f"{first}{second} {digits[:2]} {digits[2:4]} {digits[4:]} {tail}" if r.random() < 0.5
            else f"{first}{second}{digits}{tail}")


def _dni(r: random.Random) -> str:
    n = r.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


def _cpf(r: random.Random) -> str:
    d = [r.randint(0, 9) for _ in range(9)]
    for size in (9, 10):
        s = sum(v * (size + 1 - i) for i, v in enumerate(d))
        d.append((s * 10 % 11) % 10)
    s = "".join(map(str, d))
    return f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"


def _ipv4(r: random.Random) -> str:
    return ".".join(str(r.randint(1, 254)) for _ in range(4))


def _ipv6(r: random.Random) -> str:
    groups = [f"{r.randint(0, 0xffff):x}" for _ in range(8)]
    return "2001:db8:" + ":".join(groups[2:]) if r.random() < 0.5 else f"fe80::{groups[0]}:{groups[1]}"


def _secret(r: random.Random) -> tuple[str, str]:
    """(text before the value, the value)."""
    key, value = r.choice([("password: ", _rand(r, 10, string.ascii_letters + string.digits + "!#%")),
                           ("api_key = \"", _rand(r, 32)),
                           ("SECRET_KEY=", _rand(r, 40, string.ascii_letters + string.digits + "_-")),
                           ("client_secret: ", _rand(r, 24)),
                           ("the db password is ", _rand(r, 12, string.ascii_letters + string.digits + "$@!"))])
    return key, value


def _url_creds(r: random.Random) -> tuple[str, str, str]:
    user, pw = r.choice(FIRST).replace(".", ""), _rand(r, 12)
    scheme = r.choice(["https", "postgres", "mysql", "redis", "ftp"])
    return f"{scheme}://", f"{user}:{pw}", f"@{r.choice(['db', 'cache', 'files'])}.{r.choice(DOMAINS)}/main"


GENERATORS = {"email": _email, "phone": _phone, "card": _card, "iban": _iban, "us_ssn": _ssn, "api_key": _api_key,
              "jwt": _jwt, "private_key": _pem, "uk_nino": _nino, "ip_address": _ipv4}
COUNTS = {"email": 80, "phone": 80, "card": 60, "iban": 50, "us_ssn": 50, "api_key": 60, "jwt": 15, "private_key": 10,
          "uk_nino": 15, "ip_address": 20}


def _uuid(r: random.Random) -> str:
    h = "".join(r.choice("0123456789abcdef") for _ in range(32))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _hex(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789abcdef") for _ in range(n))


def _not_luhn(r: random.Random) -> str:
    while True:
        s = "".join(r.choice(string.digits) for _ in range(16))
        total = sum((int(d) * 2 - 9 if int(d) * 2 > 9 else int(d) * 2) if i % 2 else int(d)
                    for i, d in enumerate(reversed(s)))
        if total % 10:
            return s


NEGATIVES = [
    lambda r: f"Upgrade to version {r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 30)} before the release.",
    lambda r: f"We pinned numpy=={r.randint(1, 2)}.{r.randint(0, 26)}.{r.randint(0, 9)} and Python 3.{r.randint(8, 13)}.",
    lambda r: f"Firmware version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}.{r.randint(0, 99)} is out.",
    lambda r: f"Order ORD-{r.randint(2019, 2026)}-{r.randint(0, 999999):06d} shipped on {r.randint(2019, 2026)}-"
              f"{r.randint(1, 12):02d}-{r.randint(1, 28):02d}.",
    lambda r: f"Invoice #{r.randint(10**7, 10**8)} total ${r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(10, 99)}.",
    lambda r: f"The job ran at {r.randint(2019, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T"
              f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}Z and took {r.randint(1, 999)} ms.",
    lambda r: f"Unix time {r.randint(1_500_000_000, 1_800_000_000)} is when the cache expired.",
    lambda r: f"commit {_hex(r, 40)} fixed it; see also {_hex(r, 7)}.",
    lambda r: f"sha256: {_hex(r, 64)}",
    lambda r: f"md5 checksum {_hex(r, 32)} matches.",
    lambda r: f"The request id is {_uuid(r)}.",
    lambda r: f"for i in range({r.randint(1, 100)}):\n    total += values[i] * {r.randint(2, 9)}",
    lambda r: f"const port = {r.randint(1000, 9999)}; app.listen(port, '127.0.0.1');",
    lambda r: f"SELECT * FROM orders WHERE id = {r.randint(10**5, 10**9)} AND status = 'open';",
    lambda r: f"ISBN 978-{r.randint(0, 9)}-{r.randint(10, 99)}-{r.randint(100000, 999999)}-{r.randint(0, 9)}",
    lambda r: f"Tracking number 1Z{_rand(r, 6, string.ascii_uppercase + string.digits)}{r.randint(10**9, 10**10)}.",
    lambda r: f"Reference number {_not_luhn(r)} on the statement.",
    lambda r: "password: <your password here>",
    lambda r: "Set the token = process.env.API_TOKEN in config.",
    lambda r: "The password is required for every login.",
    lambda r: f"Use the key sk-learn-{r.choice(['tutorial', 'classifier', 'pipeline'])}-notes for the docs.",
    lambda r: f"Coordinates {r.randint(-90, 90)}.{r.randint(1000, 9999)}, {r.randint(-180, 180)}.{r.randint(1000, 9999)}.",
    lambda r: f"See https://docs.example.com/v{r.randint(1, 4)}/guide#section-{r.randint(1, 20)}.",
    lambda r: f"Install with `npm install left-pad@{r.randint(1, 5)}.{r.randint(0, 9)}.{r.randint(0, 9)}`.",
    lambda r: f"The ratio was {r.randint(1, 99)}.{r.randint(10, 99)}% over {r.randint(2, 12)} weeks.",
    lambda r: f"Colour #{_hex(r, 6)} on line {r.randint(1, 999)} of main.css.",
    lambda r: f"Run `docker pull registry.example.com/app@sha256:{_hex(r, 64)}`.",
    lambda r: f"Build {r.randint(1000, 9999)}.{r.randint(100, 999)} passed {r.randint(100, 999)} tests in "
              f"{r.randint(10, 99)}.{r.randint(1, 9)}s.",
    lambda r: f"The meeting is at {r.randint(1, 12)}:{r.randint(10, 59)} on {r.randint(1, 28)}/{r.randint(1, 12)}/"
              f"{r.randint(2020, 2026)}.",
    lambda r: f"Serial {r.randint(100, 999)}-{r.randint(1000, 9999)}-{r.randint(100, 999)} is on the label.",
]


# Written by hand, in the shapes people actually type (not the generators' formats).
HANDWRITTEN: list[tuple[str, list[tuple[str, str]]]] = [
    ("ping me at JOHN.DOE@EXAMPLE.COM or j.doe+alerts@mail.example.co.uk", [("JOHN.DOE@EXAMPLE.COM", "email"),
                                                                             ("j.doe+alerts@mail.example.co.uk", "email")]),
    ("<a href=\"mailto:support@example.com\">mail us</a>", [("support@example.com", "email")]),
    ("email:first_last-1@sub.example-domain.io;", [("first_last-1@sub.example-domain.io", "email")]),
    ("Call 415.555.2671 after 5pm", [("415.555.2671", "phone")]),
    ("US office: 1 (212) 555-0199 ext. 4", [("1 (212) 555-0199", "phone")]),
    ("mobile +49 151 23456789, office +49 (0)30 1234567", [("+49 151 23456789", "phone"),
                                                                  ("+49 (0)30 1234567", "phone")]),
    ("Ring 07700 900123 or 0161 496 0000", [("07700 900123", "phone"), ("0161 496 0000", "phone")]),
    ("tel:+33612345678", [("+33612345678", "phone")]),
    ("card no. 4242-4242-4242-4242 exp 12/29 cvc 123", [("4242-4242-4242-4242", "card")]),
    ("amex 378282246310005 on file", [("378282246310005", "card")]),
    ("Pay to GB29 NWBK 6016 1331 9268 19 by Monday.", [("GB29 NWBK 6016 1331 9268 19", "iban")]),
    ("IBAN: FR1420041010050500013M02606", [("FR1420041010050500013M02606", "iban")]),
    ("SSN: 078-05-1121 (not the famous one)", [("078-05-1121", "us_ssn")]),
    ("OPENAI_API_KEY=sk-proj-4f9Qx2LmN8pR1tV6yB3cH7kJ0wZ5sD9gA2eF4iU8", [
        ("sk-proj-4f9Qx2LmN8pR1tV6yB3cH7kJ0wZ5sD9gA2eF4iU8", "api_key")]),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", [("AKIAIOSFODNN7EXAMPLE", "api_key")]),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyIsImV4cCI6MTcwMDAwMDB9.c2lnbmF0dXJlLXNpZ25hdHVyZQ",
     [("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEyMyIsImV4cCI6MTcwMDAwMDB9.c2lnbmF0dXJlLXNpZ25hdHVyZQ", "jwt")]),
    ("DATABASE_URL=postgres://app:Xk29fLq77Pz@db.internal.example.com:5432/prod", [("app:Xk29fLq77Pz", "url_credentials")]),
    ("server 10.20.30.40 and gateway 172.16.0.1", [("10.20.30.40", "ip_address"), ("172.16.0.1", "ip_address")]),
    ("Upgraded from 2.4.1 to 2.5.0, see CHANGELOG line 1024.", []),
    ("Ticket JIRA-48213 blocks release 2024.11.3", []),
    ("The hash is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", []),
    ("ORDER#: 4000123456789010 (internal, not a card)", []),
    ("Temperature rose from 36.6 to 38.2 between 09:00 and 14:30", []),
    ("use `git checkout 3f2a9c1` then `make test`", []),
    ("Matrix: [[1, 2, 3], [4, 5, 6]] and tuple (7, 8, 9)", []),
    ("Phone field format is +XX XXX XXX XXXX", []),
    ("The secret is that nobody reads the manual.", []),
    ("token: abc", []),
    ("Price list: 1,299.00 / 2,499.00 / 12,999.00 EUR", []),
    ("UUID 550e8400-e29b-41d4-a716-446655440000 identifies the job", []),
]


def _handwritten() -> list[dict]:
    rows = []
    for text, values in HANDWRITTEN:
        spans, at = [], 0
        for value, rule in values:
            start = text.index(value, at)
            spans.append([start, start + len(value), rule])
            at = start + len(value)
        rows.append({"text": text, "spans": spans, "group": "handwritten"})
    return rows


def _snippet(r: random.Random, pieces: list[tuple[str, str | None]], group: str) -> dict:
    text, spans = "", []
    for piece, rule in pieces:
        if rule is not None:
            spans.append([len(text), len(text) + len(piece), rule])
        text += piece
    return {"text": text, "spans": spans, "group": group}


def generate(seed: int = 13) -> list[dict]:
    r = random.Random(seed)
    rows = []
    for rule, count in COUNTS.items():
        for _ in range(count):
            value = GENERATORS[rule](r)
            before, after = r.choice(LEAD).split("{}")
            rows.append(_snippet(r, [(before, None), (value, rule), (after, None)], rule))
    for _ in range(20):  # IPv6, national ids
        rows.append(_snippet(r, [("Blocked traffic from ", None), (_ipv6(r), "ip_address"), (" at the edge.", None)],
                             "ip_address"))
    for make in (_dni, _cpf):
        for _ in range(8):
            rows.append(_snippet(r, [("ID on file: ", None), (make(r), "national_id"), (", verified.", None)],
                                 "national_id"))
    for _ in range(25):
        key, value = _secret(r)
        rows.append(_snippet(r, [("config: ", None), (key, None), (value, "secret"), ("\n# keep safe", None)], "secret"))
    for _ in range(15):
        scheme, creds, rest = _url_creds(r)
        rows.append(_snippet(r, [("Connect with ", None), (scheme, None), (creds, "url_credentials"), (rest, None)],
                             "url_credentials"))
    for _ in range(40):  # several values in one prompt
        a, b, c = _email(r), _phone(r), _card(r)
        rows.append(_snippet(r, [("Customer ", None), (a, "email"), (" (tel ", None), (b, "phone"),
                                 (") paid with ", None), (c, "card"), (" on order ORD-2291-0042.", None)], "mixed"))
    for _ in range(130):
        rows.append({"text": r.choice(NEGATIVES)(r), "spans": [], "group": "negative"})
    return rows + _handwritten()


def load() -> list[dict]:
    return [orjson.loads(line) for line in PATH.read_bytes().splitlines() if line.strip()]


def evaluate(rows: list[dict] | None = None) -> dict[str, dict[str, float]]:
    """Per rule and overall: tp, fp, fn, precision, recall (every built-in rule on, exact spans)."""
    from gateway.dlp.engine import Policy, scan
    from gateway.dlp.rules import BUILTIN

    policy = Policy(enabled=True, actions=dict.fromkeys(BUILTIN, "redact"))
    counts: dict[str, list[int]] = {}
    for row in rows if rows is not None else load():
        expected = {(s, e, rule) for s, e, rule in row["spans"]}
        found = {(s, e, rule) for s, e, rule, _ in scan(policy, row["text"])}
        for s, e, rule in expected | found:
            c = counts.setdefault(rule, [0, 0, 0])
            c[0 if (s, e, rule) in expected and (s, e, rule) in found else 1 if (s, e, rule) in found else 2] += 1
    report = {}
    total = [0, 0, 0]
    for rule, (tp, fp, fn) in sorted(counts.items()):
        total = [total[0] + tp, total[1] + fp, total[2] + fn]
        report[rule] = _rates(tp, fp, fn)
    report["overall"] = _rates(*total)
    return report


def _rates(tp: int, fp: int, fn: int) -> dict[str, float]:
    return {"tp": tp, "fp": fp, "fn": fn, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0}


if __name__ == "__main__":
    PATH.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in generate()))
    print(f"wrote {PATH}")
