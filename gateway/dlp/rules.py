"""The rule catalogue: built-in rule ids, the placeholder kind each produces, and the actions.

A rule is enabled per scope (org or app) with one action:
- `redact`: the value becomes a placeholder such as `[EMAIL_1]`; the answer gets the value back.
- `mask`: the value becomes a placeholder; the answer keeps the placeholder.
- `block`: the request is refused (400 `dlp_blocked` naming the rule); nothing is sent.
- `log`: detected and counted only; the value is sent as it is.

Custom rules are named `custom:<name>` and carry their own kind (see custom.py). NER rules
(person names, street addresses) need an optional model that is not installed: they are listed
as unavailable and cannot be enabled.
"""

from __future__ import annotations

from dataclasses import dataclass

ACTIONS = ("redact", "mask", "block", "log")
DEFAULT_ACTION = "redact"


@dataclass(frozen=True, slots=True)
class RuleInfo:
    id: str
    kind: str  # the placeholder's stem: [EMAIL_1]
    label: str


BUILTIN: dict[str, RuleInfo] = {r.id: r for r in (
    RuleInfo("email", "EMAIL", "Email addresses"),
    RuleInfo("phone", "PHONE", "Phone numbers (validated by region)"),
    RuleInfo("card", "CARD", "Payment card numbers (Luhn and issuer prefix)"),
    RuleInfo("iban", "IBAN", "IBANs (checksum)"),
    RuleInfo("us_ssn", "SSN", "US social security numbers"),
    RuleInfo("uk_nino", "NINO", "UK National Insurance numbers"),
    RuleInfo("national_id", "NATIONAL_ID", "Checksummed national ids (ES DNI/NIE, IT codice fiscale, "
                                            "BR CPF, IN Aadhaar, CA SIN)"),
    RuleInfo("ip_address", "IP_ADDRESS", "IPv4 and IPv6 addresses"),
    RuleInfo("api_key", "API_KEY", "Provider API keys (OpenAI, Anthropic, AWS, GitHub, Slack, Google, "
                                    "Stripe, GitLab, Hugging Face)"),
    RuleInfo("jwt", "JWT", "JSON Web Tokens"),
    RuleInfo("private_key", "PRIVATE_KEY", "PEM private key blocks"),
    RuleInfo("secret", "SECRET", "High-entropy values next to key/secret/token/password"),
    RuleInfo("url_credentials", "CREDENTIALS", "user:password in URLs"),
)}

# Detected by an NER model only; not shipped (see README, "Data protection").
UNAVAILABLE: dict[str, str] = {
    "person": "Person names (needs an NER model, not installed)",
    "address": "Street addresses (needs an NER model, not installed)",
}


def parse_rule_spec(spec: str) -> tuple[str, str]:
    """`RULE[:ACTION]` -> (rule, action); the action defaults to redact. Raises ValueError."""
    rule, _, action = spec.strip().partition(":")
    if rule == "custom":  # custom:<name>[:action]
        name, _, action = action.partition(":")
        rule = f"custom:{name}"
    action = action or DEFAULT_ACTION
    if action not in ACTIONS:
        raise ValueError(f"Unknown action '{action}' for rule '{rule}': use one of {', '.join(ACTIONS)}.")
    if rule in UNAVAILABLE:
        raise ValueError(f"Rule '{rule}' needs an NER model, which is not installed.")
    if rule not in BUILTIN and not (rule.startswith("custom:") and len(rule) > 7):
        raise ValueError(f"Unknown rule '{rule}': use one of {', '.join(BUILTIN)} or custom:<name>.")
    return rule, action
