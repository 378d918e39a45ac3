"""The public pages: / (what Gateway is, the two-line quickstart) and /docs (the API guide). Open to
anyone, no database query, and true to the code: the quickstart runs as written against this
gateway, every header, error code and route the guide names is one the gateway really has."""

import html
import re

import openai
import requests

from gateway.errors import GatewayError
from tests.conftest import database_statements


def code_blocks(page: str) -> dict[str, str]:
    return {m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r'<pre id="([\w-]+)"><code>(.*?)</code></pre>', page, re.S)}


def all_error_codes() -> set[str]:
    seen, todo = set(), [GatewayError]
    while todo:
        cls = todo.pop()
        seen.add(getattr(cls, "code", None))
        todo += cls.__subclasses__()
    return {c for c in seen if c}


def test_the_landing_page_quickstart_runs_as_written(gateway):
    r = requests.get(gateway.url + "/")
    assert r.status_code == 200 and "text/html" in r.headers["Content-Type"]
    assert "self-hosted LLM inference gateway" in r.text and 'href="/docs"' in r.text
    code = code_blocks(r.text)["quickstart"]
    assert f'OpenAI(base_url="{gateway.url}/v1", api_key="gw-...")' in code
    model = re.search(r'model="([^"]+)"', code).group(1)
    assert model in {m.id for m in gateway.sdk().models.list().data}  # a model this gateway serves
    # run it: the key the admin gave, a model that answers plainly
    code = code.replace("gw-...", gateway.api_key).replace(model, "test/fake-gpt")
    scope: dict = {}
    exec("result = " + code.split("\n", 2)[2], {"client": openai.OpenAI(base_url=f"{gateway.url}/v1",
                                                                        api_key=gateway.api_key)}, scope)
    assert scope["result"].choices[0].message.content == "Hello from fake fake-gpt."


def test_the_guide_covers_each_topic_and_its_python_example_runs(gateway):
    r = requests.get(gateway.url + "/docs")
    assert r.status_code == 200
    for anchor in ("quickstart", "auth", "models", "quote", "headers", "errors", "rate-limits", "idempotency"):
        assert f'id="{anchor}"' in r.text, anchor
    blocks = code_blocks(r.text)
    assert "import OpenAI from \"openai\"" in blocks["node"] and f'baseURL: "{gateway.url}/v1"' in blocks["node"]
    python = blocks["python"].replace("gw-...", gateway.api_key)
    model = re.search(r'model="([^"]+)"', python).group(1)
    exec(python.replace(model, "test/fake-gpt"), {"print": lambda *a, **k: None})


def test_every_header_code_and_route_the_guide_names_is_real(gateway):
    page = requests.get(gateway.url + "/docs").text
    raw = gateway.sdk().chat.completions.with_raw_response.create(
        model="test/fake-gpt", messages=[{"role": "user", "content": "docs check"}])
    named = set(re.findall(r"<code>(x-gateway-[a-z-]+|x-request-id)</code>", page))
    always = {"x-request-id", "x-gateway-benchmark-cost", "x-gateway-charge", "x-gateway-saved", "x-gateway-cache",
              "x-gateway-cost-status", "x-gateway-route"}
    assert always <= named and all(raw.headers.get(h) for h in always)
    codes = set(re.findall(r"<code>([a-z_]+)</code>", page.split('id="errors"')[1].split('id="rate-limits"')[0]))
    documented = codes - {"param", "code"}
    assert documented and documented <= all_error_codes(), documented - all_error_codes()
    rules = {rule.rule for rule in gateway.app.url_map.iter_rules()}
    for route in ("/v1/models", "/v1/account", "/v1/account/pricing", "/v1/account/quote", "/v1/api-keys",
                  "/v1/requests/<request_id>"):
        assert route in rules or route.rsplit("/", 1)[0] + "/<" in " ".join(rules), route
    quote = gateway.post("/v1/account/quote", {"model": "test/fake-gpt", "max_tokens": 20,
                                               "messages": [{"role": "user", "content": "Hello"}]}).json()
    for field in ("model", "estimated_input_tokens", "estimated_output_tokens", "benchmark_cost_usd",
                  "estimated_charge_usd", "estimated_saved_usd", "routes"):
        assert field in quote and f"<code>{field}</code>" in page, field


def test_public_pages_are_open_and_query_no_database(gateway):
    for path in ("/", "/docs"):
        requests.get(gateway.url + path)  # warm
        with database_statements() as statements:
            r = requests.get(gateway.url + path)
        assert r.status_code == 200 and statements == [], (path, statements)
        assert "Sign out" not in r.text


def test_the_base_url_follows_the_host_asked_and_is_escaped(gateway):
    r = requests.get(gateway.url + "/", headers={"Host": 'evil"><script>alert(1)</script>'})
    assert r.status_code < 500 and "<script>alert(1)</script>" not in r.text
    r = requests.get(gateway.url + "/docs", headers={"Host": "gateway.example:8443"})
    assert 'base_url="http://gateway.example:8443/v1"' in html.unescape(r.text)
    r = requests.get(gateway.url + "/docs?x=" + "a" * 3000)
    assert r.status_code == 200
