"""Gateway settings in a real browser (Debian's Chromium through Playwright, conftest's `page`): a
super-admin opens features, tests and adds an Ollama (the Test button lists the fake Ollama's
models), sets and resets a provider key and reads its source, gives an agent an id and a role; then
the public / and /docs pages. Screenshots at 1280x800 go to docs/screenshots/."""

from types import SimpleNamespace

import pytest
from playwright import sync_api

from gateway.services import ollama as ollama_service
from tests.conftest import UPSTREAM_KEY, screenshot, served
from tests.fakes.ollama_upstream import FakeOllama
from tests.fakes.ollama_upstream import serve as serve_ollama


@pytest.fixture
def ollama():
    with served(FakeOllama(), serve_ollama) as fake:
        yield fake
    ollama_service.forget_offer()



def test_settings_pages_in_chromium(gateway, page, ollama):
    expect = sync_api.expect
    page.set_viewport_size({"width": 1280, "height": 800})
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm
    ollama_service.detect(SimpleNamespace(ollama_probe_url=ollama.url))  # as `gateway serve` does at start

    page.goto(gateway.url + "/admin/login")
    page.fill("input[name=email]", gateway.admin_email)
    page.fill("input[name=password]", gateway.admin_password)
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/**")

    # Features: the Settings group links it; tick two layers and save
    page.click("nav >> text=Features")
    page.wait_for_url("**/admin/features")
    expect(page.locator("h1")).to_have_text("Features")
    page.check('label[data-layer="exact_cache"] input')
    page.check('label[data-layer="compression"] input')
    page.click("#features-form button[type=submit]")
    expect(page.locator("#features p.notice")).to_contain_text("Exact cache, Compression")
    expect(page.locator('label[data-layer="compression"] input')).to_be_checked()
    screenshot(page, "settings-features")

    # Ollama: offered (found at start), Test lists the models, Save serves them
    page.click("nav >> text=Ollama")
    page.wait_for_url("**/admin/ollama")
    expect(page.locator("#ollama-offer")).to_contain_text(f"Ollama detected at {ollama.url}")
    page.fill("#ollama-form input[name=base_url]", ollama.url)
    page.click("#ollama-test")
    expect(page.locator("#ollama-tags")).to_contain_text("Ollama answered: 3 models")
    expect(page.locator('#ollama-tags tr[data-tag="llama3.2:latest"]')).to_contain_text("ollama/llama3.2")
    expect(page.locator('#ollama-tags tr[data-tag="qwen3:8b"]')).to_contain_text("Q4_K_M")
    screenshot(page, "settings-ollama")
    page.click("#ollama-form button[type=submit]")
    expect(page.locator("#ollama p.notice")).to_contain_text("Saved Ollama at")
    expect(page.locator('#ollama-models tr[data-model="ollama/qwen3:8b"]')).to_contain_text("0.00")
    expect(page.locator("#ollama-offer")).to_have_count(0)  # taken

    # Providers: each key's source; a key set in the console, then reset
    page.click("nav >> text=Providers and credentials")
    page.wait_for_url("**/admin/providers")
    fake = page.locator('tr[data-provider="fake"] td.key')
    expect(fake).to_have_attribute("data-source", "from config")
    expect(page.locator('tr[data-provider="ollama"] td.key')).to_have_attribute("data-source", "none")
    fake.locator("input[name=api_key]").fill(UPSTREAM_KEY)
    fake.locator("button", has_text="Set key").click()
    expect(page.locator("p.notice")).to_contain_text("Saved a key for fake in the console")
    fake = page.locator('tr[data-provider="fake"] td.key')
    expect(fake).to_have_attribute("data-source", "set in console")
    expect(fake).to_contain_text("…" + UPSTREAM_KEY[-4:])
    assert UPSTREAM_KEY not in page.content()
    page.locator("#providers").scroll_into_view_if_needed()
    screenshot(page, "settings-providers")
    fake.locator("button", has_text="Reset").click()
    expect(page.locator('tr[data-provider="fake"] td.key')).to_have_attribute("data-source", "from config")

    # Agents: an id and a role beside the models
    page.click("nav >> text=Agents")
    page.wait_for_url("**/admin/agents")
    page.fill("#agent-form input[name=name]", "coder")
    page.fill("#agent-form input[name=normal]", "test/cheap")
    page.fill("#agent-form input[name=heavy]", "ollama/llama3.2")
    page.fill("#agent-form input[name=agent_id]", "agt-coder-01")
    page.fill("#agent-form input[name=role]", "code reviewer")
    page.click("#agent-form button[type=submit]")
    row = page.locator('tr[data-agent="coder"]')
    expect(row.locator("td.agent-id")).to_have_text("agt-coder-01")
    expect(row.locator("td.role")).to_have_text("code reviewer")
    page.locator("#agents").scroll_into_view_if_needed()
    screenshot(page, "agents")

    # Public pages, signed in or not
    page.goto(gateway.url + "/")
    expect(page.locator("h1")).to_have_text("Gateway")
    expect(page.locator("#quickstart")).to_contain_text(f'OpenAI(base_url="{gateway.url}/v1"')
    screenshot(page, "public-home")
    page.click("text=Read the API guide")
    page.wait_for_url("**/docs")
    expect(page.locator("#node")).to_contain_text('import OpenAI from "openai"')
    expect(page.locator("#headers")).to_be_visible()
    screenshot(page, "public-docs")
