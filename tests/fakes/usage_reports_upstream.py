"""Fake provider admin APIs: OpenAI's organization usage and costs, Anthropic's usage and cost reports.

``FakeUsageReports`` is a WSGI app; ``serve_reports(fake)`` runs it and returns its root URL. OpenAI's
paths are under ``/openai/v1`` (a provider ``base_url`` of ``<root>/openai/v1``), Anthropic's under
``/anthropic`` (``base_url`` ``<root>/anthropic``), as the published references give them:

  GET /openai/v1/organization/usage/completions?start_time&end_time&bucket_width=1d&group_by=model
      -> {"object": "page", "data": [{"object": "bucket", "start_time", "end_time", "results": [
          {"object": "organization.usage.completions.result", "input_tokens", "output_tokens",
           "input_cached_tokens", "num_model_requests", "model", ...}]}], "has_more", "next_page"}
  GET /openai/v1/organization/costs?start_time&end_time&bucket_width=1d&group_by=line_item
      -> buckets of {"object": "organization.costs.result", "amount": {"value": <USD number>,
         "currency": "usd"}, "line_item": "<model>, input|output", "project_id": null}
      (``Authorization: Bearer <admin_key>``, else 401)
  GET /anthropic/v1/organizations/usage_report/messages?starting_at&ending_at&bucket_width=1d&group_by[]=model
      -> {"data": [{"starting_at", "ending_at", "results": [{"uncached_input_tokens",
         "cache_read_input_tokens", "cache_creation": {"ephemeral_5m_input_tokens",
         "ephemeral_1h_input_tokens"}, "output_tokens", "server_tool_use", "model", ...}]}],
         "has_more", "next_page"}
  GET /anthropic/v1/organizations/cost_report?starting_at&ending_at&group_by[]=description
      -> buckets of {"currency": "USD", "amount": "<cents as a decimal string>", "description",
         "cost_type": "tokens", "model", "token_type", ...}
      (``x-api-key: <admin_key>`` and ``anthropic-version``, else 401)

What a day holds is set per day (``openai[day]`` / ``anthropic[day]``: model -> dict of requests,
input, output, cost_usd). ``page_size`` spreads one bucket's results over several pages, each with
``has_more`` and an opaque ``next_page`` cursor. ``fail_with`` answers every call with that status;
``endless`` pages forever. ``requests`` records each call (path, query).
"""
from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs

import orjson
from gevent.pywsgi import WSGIServer


class FakeUsageReports:
    def __init__(self, admin_key: str = "sk-admin-test") -> None:
        self.admin_key = admin_key
        self.reset()

    def reset(self) -> None:
        self.openai: dict[date, dict[str, dict]] = {}
        self.anthropic: dict[date, dict[str, dict]] = {}
        self.page_size = 100
        self.fail_with: int | None = None
        self.endless = False
        self.requests: list[dict] = []

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        self.requests.append({"path": path, "query": query})

        def respond(status: str, body: dict):
            start_response(status, [("Content-Type", "application/json")])
            return [orjson.dumps(body)]

        if self.fail_with:
            return respond(f"{self.fail_with} Error", {"error": {"message": "unavailable"}})
        if path.startswith("/openai/"):
            if headers.get("authorization") != f"Bearer {self.admin_key}":
                return respond("401 Unauthorized", {"error": {"message": "Invalid admin key", "type":
                                                              "invalid_request_error", "code": "invalid_api_key"}})
            day = datetime.fromtimestamp(int(query["start_time"]), UTC).date()
            if path == "/openai/v1/organization/usage/completions":
                results = [{"object": "organization.usage.completions.result", "input_tokens": v["input"],
                            "output_tokens": v["output"], "input_cached_tokens": 0, "input_audio_tokens": 0,
                            "output_audio_tokens": 0, "num_model_requests": v["requests"], "project_id": None,
                            "user_id": None, "api_key_id": None, "model": m, "batch": None}
                           for m, v in self.openai.get(day, {}).items()]
            elif path == "/openai/v1/organization/costs":
                results = []
                for m, v in self.openai.get(day, {}).items():  # the cost split over two line items
                    half = Decimal(str(v["cost_usd"])) / 2
                    results += [{"object": "organization.costs.result", "amount": {"value": float(half),
                                 "currency": "usd"}, "line_item": f"{m}, {part}", "project_id": None}
                                for part in ("input", "output")]
            else:
                return respond("404 Not Found", {"error": {"message": f"Invalid URL (GET {path})"}})
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            bucket = {"object": "bucket", "start_time": int(start.timestamp()),
                      "end_time": int((start + timedelta(days=1)).timestamp())}
            return respond("200 OK", self._page(bucket, results, query, {"object": "page"}))
        if path.startswith("/anthropic/"):
            if headers.get("x-api-key") != self.admin_key or not headers.get("anthropic-version"):
                return respond("401 Unauthorized", {"type": "error", "error": {"type": "authentication_error",
                                                                               "message": "invalid x-api-key"}})
            day = date.fromisoformat(query["starting_at"][:10])
            if path == "/anthropic/v1/organizations/usage_report/messages":
                results = [{"uncached_input_tokens": v["input"], "cache_read_input_tokens": 0,
                            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
                            "output_tokens": v["output"], "server_tool_use": {"web_search_requests": 0},
                            "api_key_id": None, "workspace_id": None, "model": m, "service_tier": None,
                            "context_window": None} for m, v in self.anthropic.get(day, {}).items()]
            elif path == "/anthropic/v1/organizations/cost_report":
                results = [{"currency": "USD", "amount": str(Decimal(str(v["cost_usd"])) * 100),
                            "workspace_id": None, "description": f"{m} usage", "cost_type": "tokens",
                            "context_window": "0-200k", "model": m, "service_tier": "standard",
                            "token_type": "uncached_input_tokens"} for m, v in self.anthropic.get(day, {}).items()]
            else:
                return respond("404 Not Found", {"type": "error", "error": {"type": "not_found_error",
                                                                            "message": "Not found"}})
            bucket = {"starting_at": f"{day.isoformat()}T00:00:00Z",
                      "ending_at": f"{(day + timedelta(days=1)).isoformat()}T00:00:00Z"}
            return respond("200 OK", self._page(bucket, results, query, {}))
        return respond("404 Not Found", {"error": {"message": "Not found"}})

    def _page(self, bucket: dict, results: list[dict], query: dict, extra: dict) -> dict:
        at = int(base64.b64decode(query["page"]).decode()) if query.get("page") else 0
        part = results[at:at + self.page_size]
        more = self.endless or at + self.page_size < len(results)
        cursor = base64.b64encode(str(at + self.page_size).encode()).decode() if more else None
        return {**extra, "data": [{**bucket, "results": part}], "has_more": more, "next_page": cursor}


def serve_reports(fake: FakeUsageReports) -> tuple[WSGIServer, str]:
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}"
