"""Fake OpenRouter upstream: FakeOpenAI's chat and embeddings under OpenRouter's paths and quirks.

``FakeOpenRouter`` delegates to a ``FakeOpenAI`` (same behaviours by model name, see
openai_upstream.py) and adds what OpenRouter does differently, as its API reference shows:
  - base URL ``http://127.0.0.1:<port>/api/v1``: ``POST /api/v1/chat/completions``,
    ``POST /api/v1/embeddings``;
  - generation ids ``gen-<...>`` (chat completion ``id``) and a ``provider`` field;
  - streams open with the keep-alive comment ``: OPENROUTER PROCESSING``;
  - errors as ``{"error": {"code": <HTTP status, a number>, "message", "metadata"}}``
    (``error-402``: out of credits);
  - ``GET /api/v1/generation?id=<gen id>`` -> ``{"data": {id, total_cost, tokens_prompt,
    tokens_completion, native_tokens_*, model, streamed, finish_reason, ...}}`` for a generation
    this fake served, else 404. total_cost = (prompt * PROMPT_USD_PER_MTOK + completion *
    COMPLETION_USD_PER_MTOK) / 1e6.
Recorded requests (``requests``, with lowercased headers such as ``http-referer`` and ``x-title``)
are the inner FakeOpenAI's, plus generation lookups.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs

import orjson
from gevent.pywsgi import WSGIServer

from tests.fakes.openai_upstream import FakeOpenAI

PROMPT_USD_PER_MTOK = 1000
COMPLETION_USD_PER_MTOK = 2000
PROCESSING = b": OPENROUTER PROCESSING\n\n"
_ID = re.compile(rb'"id":"chatcmpl-([0-9a-f]+)"')


def gen_id(openai_id: str) -> str:
    return "gen-" + openai_id.removeprefix("chatcmpl-")


class FakeOpenRouter:
    def __init__(self, api_key: str = "sk-or-upstream-test"):
        self.inner = FakeOpenAI(api_key=api_key)
        self.api_key = api_key
        self.generations: dict[str, dict] = {}

    @property
    def requests(self) -> list[dict]:
        return self.inner.requests

    def reset(self) -> None:
        self.inner.reset()
        self.generations.clear()

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/api/v1/generation":
            return self._generation(environ, start_response)
        if not path.startswith("/api/v1/"):
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [orjson.dumps({"error": {"code": 404, "message": "Not Found"}})]
        environ = {**environ, "PATH_INFO": "/v1/" + path.removeprefix("/api/v1/")}
        status: list[str] = []
        headers: list[tuple[str, str]] = []

        def capture(s, h, exc_info=None):
            status.append(s)
            headers.extend(h)

        body = self.inner.wsgi(environ, capture)
        code = int(status[0].split()[0])
        content_type = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if code >= 400:
            return self._error(code, b"".join(body), status[0], start_response)
        if content_type.startswith("text/event-stream"):
            start_response(status[0], headers)
            return self._stream(body)
        payload = b"".join(body)
        if path == "/api/v1/chat/completions":
            payload = self._completion(orjson.loads(payload))
        start_response(status[0], [(k, v) for k, v in headers if k.lower() != "content-length"]
                       + [("Content-Length", str(len(payload)))])
        return [payload]

    def _completion(self, obj: dict) -> bytes:
        obj["id"] = gen_id(obj["id"])
        obj["provider"] = "FakeProvider"
        self._record(obj["id"], obj["model"], obj["usage"], streamed=False,
                     finish=obj["choices"][0]["finish_reason"])
        return orjson.dumps(obj)

    def _stream(self, events):
        yield PROCESSING
        finish, usage, gid, model = None, None, None, ""
        for event in events:
            event = _ID.sub(rb'"id":"gen-\1","provider":"FakeProvider"', event)
            if event.startswith(b"data: {"):
                obj = orjson.loads(event[6:])
                gid, model = obj["id"], obj["model"]
                usage = obj.get("usage") or usage
                finish = next((c["finish_reason"] for c in obj["choices"] if c.get("finish_reason")), finish)
            yield event
        if gid and usage:
            self._record(gid, model, usage, streamed=True, finish=finish)

    def _record(self, gid: str, model: str, usage: dict, streamed: bool, finish: str | None) -> None:
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        self.generations[gid] = {
            "id": gid, "upstream_id": "chatcmpl-" + gid.removeprefix("gen-"),
            "total_cost": (prompt * PROMPT_USD_PER_MTOK + completion * COMPLETION_USD_PER_MTOK) / 1e6,
            "cache_discount": None, "created_at": "2025-01-01T00:00:00.000000+00:00", "model": model,
            "app_id": None, "streamed": streamed, "cancelled": False, "provider_name": "FakeProvider",
            "latency": 120, "moderation_latency": None, "generation_time": 100, "finish_reason": finish,
            "native_finish_reason": finish, "tokens_prompt": prompt, "tokens_completion": completion,
            "native_tokens_prompt": prompt, "native_tokens_completion": completion,
            "native_tokens_reasoning": 0, "num_media_prompt": None, "num_media_completion": None,
            "num_search_results": None, "origin": "", "usage": 0, "is_byok": False,
        }

    def _generation(self, environ, start_response):
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        query = parse_qs(environ.get("QUERY_STRING", ""))
        self.inner.requests.append({"method": environ["REQUEST_METHOD"], "path": "/api/v1/generation",
                                    "headers": headers, "body": None, "query": query})
        if headers.get("authorization") != f"Bearer {self.api_key}":
            status, body = "401 Unauthorized", {"error": {"code": 401,
                                                          "message": "No auth credentials found"}}
        elif (gen := self.generations.get((query.get("id") or [""])[0])) is None:
            status, body = "404 Not Found", {"error": {"code": 404, "message": "Generation not found"}}
        else:
            status, body = "200 OK", {"data": gen}
        start_response(status, [("Content-Type", "application/json")])
        return [orjson.dumps(body)]

    @staticmethod
    def _error(code: int, payload: bytes, status: str, start_response):
        """OpenAI's error body in OpenRouter's shape: the HTTP status as a numeric `code`."""
        message = (orjson.loads(payload).get("error") or {}).get("message", "")
        if code == 402:
            message = "Insufficient credits. Add more using https://openrouter.ai/credits"
        metadata = {"provider_name": "FakeProvider"}
        body = orjson.dumps({"error": {"code": code, "message": message, "metadata": metadata}})
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def serve(fake: FakeOpenRouter) -> tuple[WSGIServer, str]:
    """Start ``fake`` on an ephemeral port; returns (server, "http://127.0.0.1:PORT/api/v1")."""
    server = WSGIServer(("127.0.0.1", 0), fake.wsgi, log=None)
    server.start()
    return server, f"http://127.0.0.1:{server.server_port}/api/v1"
