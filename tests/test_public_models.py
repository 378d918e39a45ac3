"""Public catalog pages /models and /models/<slug>: plain HTML, no sign-in, no admin nav, no secrets."""

import requests

from gateway import db, seed
from gateway.web.catalog import price
from tests.conftest import UPSTREAM_KEY
from tests.test_console import login

EXTRA = """
providers:
  - {name: second, kind: openai, base_url: "http://127.0.0.1:9/v1", api_key: sk-second-secret, allow_private: true}
models:
  - slug: vendor/multi
    context_window: 128000
    max_output_tokens: 4096
    routes:
      - {provider: second, upstream_model: multi-b, input_per_mtok: 0.4, output_per_mtok: 1.6,
         cached_input_per_mtok: 0.1, capabilities: [tools, vision, streaming]}
      - {provider: second, upstream_model: multi-a, input_per_mtok: 0.5, output_per_mtok: 2,
         capabilities: [tools], reference: true}
"""


def add_extra(gateway) -> None:
    with db.write_lock, db.session_scope() as s:
        seed.apply(s, seed.parse(EXTRA), "test-secret")
    gateway.flush()


def test_models_page_lists_the_catalog_without_sign_in(gateway):
    add_extra(gateway)
    r = requests.get(gateway.url + "/models", allow_redirects=False)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    html = r.text
    assert "<h1>Models</h1>" in html
    row = _row(html, 'data-slug="vendor/multi"')
    # the reference route's prices, the context window, the capabilities any route declares, the route count
    assert "128,000" in row and "$0.50" in row and "$2.00" in row and '<td class="num">—</td>' in row
    assert "tools" in row and "vision" in row and "streaming" in row
    assert '<td class="num routes">2</td>' in row
    fake = _row(html, 'data-slug="test/fake-gpt"')
    assert "8,192" in fake and "$1000.00" in fake and "$250.00" in fake and "not declared" in fake
    assert 'href="/models/test/fake-gpt"' in fake
    # anonymous: no console nav, and never a key
    assert "Gateway logs" not in html and "Model Router" not in html and "Sign out" not in html
    assert UPSTREAM_KEY not in html and "sk-second-secret" not in html


def test_model_page_shows_routes_providers_capabilities_and_prices(gateway):
    add_extra(gateway)
    r = requests.get(gateway.url + "/models/vendor/multi")
    assert r.status_code == 200
    html = r.text
    assert "<h1><code>vendor/multi</code></h1>" in html and "4,096 tokens" in html
    assert "input $0.50 · output $2.00 · cached input — per million tokens" in html
    assert '<dd class="providers">second</dd>' in html
    ref = _row(html, 'data-provider="second"')  # the reference route comes first
    assert "multi-a" in ref and "reference" in ref and "$0.50" in ref
    assert html.index("multi-a") < html.index("multi-b")
    other = html[html.index("multi-b"):]
    assert "$0.40" in other and "$1.60" in other and "$0.10" in other and "vision" in other
    assert "Sign out" not in html and "sk-second-secret" not in html


def test_unknown_model_is_a_404_page(gateway):
    r = requests.get(gateway.url + "/models/nope/none")
    assert r.status_code == 404 and "No model <code>nope/none</code> is available." in r.text


def test_a_signed_in_admin_keeps_the_console_nav(gateway):
    s, _ = login(gateway, gateway.admin_email, gateway.admin_password)
    html = s.get(gateway.url + "/models").text
    assert "Model router" in html and "Sign out" in html


def test_price_formatting():
    assert price(400_000) == "$0.40"
    assert price(2_500) == "$0.0025"
    assert price(1_000_000_000) == "$1000.00"
    assert price(0) == "$0.00"
    assert price(None) == "—"


def _row(html: str, marker: str) -> str:
    start = html.index(marker)
    return html[start:html.index("</tr>", start)]
