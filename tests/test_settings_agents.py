"""Agents carry an Agent ID and a Role beside their normal/heavy/max models: edited in the console,
shown in the table, exported and imported with the YAML, loaded from the config; bad values are
explained and write nothing; an org's agents stay its own."""

import pytest
import yaml
from sqlalchemy import select

from gateway import db, seed
from gateway.models import AgentConfig, AuditLog
from tests.test_routing_console import add_config, admin, org_console, served_model


def agent(name: str, org_id=None) -> AgentConfig | None:
    with db.session_scope() as s:
        owner = AgentConfig.org_id.is_(None) if org_id is None else AgentConfig.org_id == org_id
        return s.scalar(select(AgentConfig).where(AgentConfig.name == name, owner))


def test_agent_id_and_role_are_edited_shown_exported_and_imported(gateway):
    console = admin(gateway)
    form = {"scope": "global", "name": "coder", "normal": "test/cheap", "heavy": "test/fake-gpt",
            "agent_id": "agt-coder-01", "role": "code reviewer"}
    r = console.post("/admin/agents", form, htmx=True)
    assert r.status_code == 200 and "Saved agent coder" in r.text
    a = agent("coder")
    assert (a.agent_id, a.role, a.normal, a.heavy) == ("agt-coder-01", "code reviewer", "test/cheap", "test/fake-gpt")
    row = console.get("/admin/agents").text.split('data-agent="coder"')[1].split("</tr>")[0]
    assert '<td class="agent-id">agt-coder-01</td>' in row and '<td class="role">code reviewer</td>' in row
    edit = console.get(f"/admin/agents/{a.id}/edit", htmx=True).text
    assert 'name="agent_id" value="agt-coder-01"' in edit and 'name="role" value="code reviewer"' in edit
    gateway.flush()
    assert served_model(gateway, gateway.api_key, "agent:coder:heavy") == "test/fake-gpt"  # routing unchanged

    exported = console.get("/admin/agents/export", params={"scope": "global"}).text
    assert yaml.safe_load(exported) == {"agents": [{"name": "coder", "normal": "test/cheap", "heavy": "test/fake-gpt",
                                                    "agent_id": "agt-coder-01", "role": "code reviewer"}]}
    assert seed.parse(exported)["agents"][0]["role"] == "code reviewer"  # still valid config

    alpha = gateway.new_org("alpha")
    text = exported.replace("agt-coder-01", "agt-alpha-07").replace("code reviewer", "test writer")
    r = console.post("/admin/agents/import", {"scope": str(alpha.id), "yaml": text}, htmx=True)
    assert "Imported 1 agent: coder." in r.text
    mine = agent("coder", alpha.id)
    assert (mine.agent_id, mine.role) == ("agt-alpha-07", "test writer")
    assert agent("coder").agent_id == "agt-coder-01"  # the global one untouched

    # clearing them: blank fields store nothing
    console.post("/admin/agents", {**form, "agent_id": " ", "role": ""})
    assert (agent("coder").agent_id, agent("coder").role) == (None, None)
    with db.session_scope() as s:
        details = [a.detail for a in s.scalars(select(AuditLog).where(AuditLog.action == "agent.create"))]
    assert "agent_id=agt-coder-01, role=code reviewer" in details[0]


@pytest.mark.parametrize("field, value, message", [
    ("agent_id", "has space", "Agent ID: up to 120 letters"),
    ("agent_id", "a" * 121, "Agent ID: up to 120 letters"),
    ("agent_id", "-leading", "Agent ID: up to 120 letters"),
    ("agent_id", "agt\x00", "Agent ID: up to 120 letters"),
    ("role", "r" * 121, "Role: up to 120 printable characters"),
    ("role", "line\nbreak", "Role: up to 120 printable characters"),
])
def test_bad_agent_ids_and_roles_are_explained(gateway, field, value, message):
    console = admin(gateway)
    r = console.post("/admin/agents", {"scope": "global", "name": "coder", "normal": "test/cheap", field: value})
    assert r.status_code == 422 and message in r.text
    assert agent("coder") is None


@pytest.mark.parametrize("text, message", [
    ("agents:\n- {name: a, normal: test/cheap, agent_id: [1, 2]}\n", "must be a single value"),
    ("agents:\n- {name: a, normal: test/cheap, role: 7}\n", "must be a non-empty string"),
    ("agents:\n- {name: a, normal: test/cheap, agent_id: 'x y'}\n", "agents[0] (a): Agent ID: up to 120"),
])
def test_bad_imports_write_nothing(gateway, text, message):
    r = admin(gateway).post("/admin/agents/import", {"scope": "global", "yaml": text})
    assert r.status_code == 422 and message in r.text and agent("a") is None


def test_the_config_sets_them_and_orgs_see_only_their_own(gateway):
    add_config(gateway, "agents:\n  - {name: ops, normal: test/cheap, agent_id: agt-ops, role: on-call}\n")
    assert (agent("ops").agent_id, agent("ops").role) == ("agt-ops", "on-call")
    beta = gateway.new_org("beta")
    gamma = gateway.new_org("gamma")
    admin(gateway).post("/admin/agents", {"scope": str(beta.id), "name": "secret", "normal": "test/cheap",
                                          "agent_id": "agt-beta-private", "role": "beta only"})
    page = org_console(gateway, "gamma").get("/admin/agents").text
    assert "agt-beta-private" not in page and "agt-ops" in page  # global agents are shown to every org
    assert org_console(gateway, "beta").get("/admin/agents").text.count("agt-beta-private") == 1
    assert gamma.id != beta.id
