"""What each provider says we used on one UTC day: requests, tokens and USD per model.

- OpenAI (kind `openai`): the organization usage API (`GET {base}/organization/usage/completions`,
  `bucket_width=1d`, `group_by=model`) and costs API (`GET {base}/organization/costs`,
  `group_by=line_item`, the model is the line item's part before the comma), with an admin key.
- Anthropic (kind `anthropic`): the usage report (`GET {base}/v1/organizations/usage_report/messages`,
  `group_by[]=model`) and cost report (`GET {base}/v1/organizations/cost_report`,
  `group_by[]=description`, amounts in cents as decimal strings), with an admin key. The usage
  report has no request counts: requests are not compared.
- OpenRouter (kind `openrouter`): generation stats by id (`GET {base}/generation?id=`) for the ids our
  ledger holds, through the adapter's own lookup (USD only).

Pages are followed through `has_more`/`next_page`. A provider that fails raises ReportError with a
message for the report; nothing here writes. Off the request path (the daily job and the CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.ledger.pricing import usd_to_micros

log = logging.getLogger(__name__)

TIMEOUT = (5.0, 60.0)
MAX_PAGES = 100  # a provider that never stops paging is a provider that is broken
ANTHROPIC_VERSION = "2023-06-01"


class ReportError(Exception):
    pass


@dataclass
class Figures:
    requests: int | None = 0
    tokens: int | None = 0
    cost_micros: int | None = 0


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _pages(url: str, params: dict[str, Any], headers: dict[str, str]) -> Iterator[dict]:
    """Each bucket of each page."""
    import requests  # imported when used: not in every process's start-up memory
    page = None
    for _ in range(MAX_PAGES):
        query = {**params, **({"page": page} if page else {})}
        try:
            resp = requests.get(url, params=query, headers=headers, timeout=TIMEOUT)
        except requests.exceptions.RequestException as e:
            raise ReportError(f"{url}: {type(e).__name__}") from None
        if resp.status_code != 200:
            raise ReportError(f"{url}: HTTP {resp.status_code}")
        try:
            body = resp.json()
            yield from body["data"]
        except (ValueError, KeyError, TypeError):
            raise ReportError(f"{url}: not a report page") from None
        if not body.get("has_more"):
            return
        page = body.get("next_page")
        if not page:
            return
    raise ReportError(f"{url}: more than {MAX_PAGES} pages")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai(base_url: str, admin_key: str, day: date) -> dict[str, Figures]:
    start, end = _day_bounds(day)
    headers = {"Authorization": f"Bearer {admin_key}"}
    window = {"start_time": int(start.timestamp()), "end_time": int(end.timestamp()), "bucket_width": "1d"}
    out: dict[str, Figures] = {}
    for bucket in _pages(base_url + "/organization/usage/completions",
                         {**window, "group_by": "model", "limit": 31}, headers):
        for r in bucket.get("results") or ():
            f = out.setdefault(str(r.get("model") or ""), Figures())
            f.requests += _int(r.get("num_model_requests"))
            f.tokens += _int(r.get("input_tokens")) + _int(r.get("output_tokens"))
    for bucket in _pages(base_url + "/organization/costs", {**window, "group_by": "line_item", "limit": 31},
                         headers):
        for r in bucket.get("results") or ():
            model = str(r.get("line_item") or "").split(",")[0].strip()
            amount = (r.get("amount") or {}).get("value")
            f = out.setdefault(model, Figures())
            f.cost_micros += _micros(amount)
    return out


def anthropic(base_url: str, admin_key: str, day: date) -> dict[str, Figures]:
    start, end = _day_bounds(day)
    headers = {"x-api-key": admin_key, "anthropic-version": ANTHROPIC_VERSION}
    window = {"starting_at": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "ending_at": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
              "bucket_width": "1d"}
    out: dict[str, Figures] = {}
    for bucket in _pages(base_url + "/v1/organizations/usage_report/messages", {**window, "group_by[]": "model"},
                         headers):
        for r in bucket.get("results") or ():
            f = out.setdefault(str(r.get("model") or ""), Figures(requests=None))
            creation = r.get("cache_creation") or {}
            f.tokens += (_int(r.get("uncached_input_tokens")) + _int(r.get("cache_read_input_tokens"))
                         + _int(creation.get("ephemeral_5m_input_tokens"))
                         + _int(creation.get("ephemeral_1h_input_tokens")) + _int(r.get("output_tokens")))
    for bucket in _pages(base_url + "/v1/organizations/cost_report", {**window, "group_by[]": "description"},
                         headers):
        for r in bucket.get("results") or ():
            f = out.setdefault(str(r.get("model") or ""), Figures(requests=None))
            f.cost_micros += _micros(r.get("amount"), cents=True)
    return out


def _micros(amount: Any, cents: bool = False) -> int:
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError):
        return 0
    if not value.is_finite():
        return 0
    return usd_to_micros(value / 100 if cents else value)


def openrouter(route, generation_ids: dict[str, list[str]]) -> dict[str, Figures]:
    """`generation_ids`: our upstream model -> the generation ids our ledger holds for it. A generation
    OpenRouter does not know (yet) is not counted on their side."""
    from gateway.providers import openrouter as adapter  # the adapter's own lookup, not a copy of it

    out: dict[str, Figures] = {}
    for model, ids in generation_ids.items():
        f = out.setdefault(model, Figures(tokens=None))
        for gid in ids:
            cost = adapter.generation_cost(route, gid)
            if cost is not None:
                f.requests += 1
                f.cost_micros += cost
    return out
