"""Ollama settings: one provider named `ollama` (kind ollama) and its pulled models, served as
`ollama/<name>` at zero cost (a name's `:latest` is dropped, as Ollama itself does: `llama3.2`).

    test(base_url) -> list[Tag]           GET /api/tags now (3 s per wait); OllamaError says why not
    save(session, actor, base_url, tags)  the provider (private addresses allowed: the operator typed
                                          the address) and one model per tag; ollama/* models whose
                                          tag is gone lose their route (and go, if it was their only one)
    detect(settings) -> Detected | None   at `gateway serve` start: a local Ollama answering at
                                          GATEWAY_OLLAMA_PROBE_URL within ~300 ms, not yet a provider
    offer() -> Detected | None            what the Ollama and Providers pages offer to add

An address is checked before any connection (services/providers.check_base_url, then the egress
rules with private addresses allowed: link-local and cloud metadata are refused), and the probe
itself connects through the egress guard. Nothing is added without an admin pressing the button.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import db, seed
from gateway.errors import InvalidUpstreamResponse, UpstreamError, UpstreamTimeout
from gateway.memo import announce
from gateway.models import Model, Provider, Route
from gateway.providers import egress
from gateway.providers import ollama as adapter
from gateway.providers.http import ProbeRefused
from gateway.services.errors import Actor, AdminError, require_superadmin
from gateway.services.providers import _drop_unrouted, check_base_url, shown_url
from gateway.services.tenancy import audit

PROVIDER = "ollama"
PREFIX = "ollama/"
TEST_TIMEOUT = 3.0
DETECT_TIMEOUT = 0.3
MAX_MODELS = 500
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+:-]{0,150}$")

log = logging.getLogger(__name__)


class OllamaError(AdminError):
    """The instance could not be read; the message is for the operator."""


@dataclass(frozen=True)
class Tag:
    name: str  # as Ollama names it: llama3.2:latest
    slug: str  # as clients ask for it: ollama/llama3.2
    size: int | None
    family: str
    parameters: str
    quantization: str


@dataclass(frozen=True)
class Detected:
    url: str
    models: tuple[str, ...]


_detected: Detected | None = None


def slug_for(name: str) -> str:
    return PREFIX + name.removesuffix(":latest")


def check_url(raw: Any) -> str:
    if not isinstance(raw, str):
        raise AdminError("Enter the Ollama base URL, e.g. http://127.0.0.1:11434.")
    url = check_base_url(raw)
    if reason := egress.check_url(url, True):
        raise AdminError(f"Base URL refused: {reason}.")
    return url


def _tag(m: dict[str, Any]) -> Tag | None:
    name = m["name"]
    if not TAG.match(name):
        return None  # not a name a client could send as a model; left out
    details = m.get("details") if isinstance(m.get("details"), dict) else {}
    size = m.get("size") if isinstance(m.get("size"), int) and not isinstance(m.get("size"), bool) else None
    return Tag(name, slug_for(name), size, str(details.get("family") or "")[:40],
               str(details.get("parameter_size") or "")[:20], str(details.get("quantization_level") or "")[:20])


def test(base_url: Any, timeout: float | None = None) -> list[Tag]:
    """The models the instance at `base_url` has pulled, read now from `GET /api/tags`."""
    url = check_url(base_url)
    timeout = TEST_TIMEOUT if timeout is None else timeout
    try:
        raw = adapter.probe_tags(url, timeout)
    except ProbeRefused as e:
        raise OllamaError(f"Base URL {str(e)}.") from None
    except UpstreamTimeout:
        raise OllamaError(f"No answer from {url} within {timeout:g} seconds: is Ollama running there "
                          "(ollama serve), and reachable from the gateway?") from None
    except InvalidUpstreamResponse:
        raise OllamaError(f"{url}/api/tags did not answer with Ollama's model list (malformed JSON or another "
                          "shape): is this an Ollama server?") from None
    except UpstreamError as e:
        raise OllamaError(f"Could not read {url}/api/tags: {e}") from None
    tags = [t for t in (_tag(m) for m in raw[:MAX_MODELS]) if t is not None]
    return sorted({t.slug: t for t in tags}.values(), key=lambda t: t.slug)


def save(session: Session, actor: Actor, base_url: Any, tags: list[Tag]) -> dict[str, list[str]]:
    """Create or update the `ollama` provider at `base_url` and route one zero-cost model per tag.
    Returns {"added": [...], "kept": [...], "removed": [...]} slugs."""
    require_superadmin(actor, "the Ollama settings")
    url = check_url(base_url)
    p = session.scalar(select(Provider).where(Provider.name == PROVIDER))
    if p is not None and p.kind != "ollama":
        raise AdminError(f"A provider named '{PROVIDER}' of kind {p.kind} exists: rename or delete it first.")
    created = p is None
    before = None if p is None else shown_url(p.base_url)
    p = p or Provider(name=PROVIDER, kind="ollama")
    p.base_url, p.enabled, p.allow_private = url, True, True
    session.add(p)
    session.flush()
    current = {slug: upstream for slug, upstream in session.execute(
        select(Model.slug, Route.upstream_model).join(Route, Route.model_id == Model.id)
        .where(Route.provider_id == p.id)).tuples().all()}
    wanted = {t.slug: t.name for t in tags}
    gone = [r for r in session.scalars(select(Route).where(Route.provider_id == p.id)).all()
            if r.upstream_model not in set(wanted.values())]
    for r in gone:
        session.delete(r)
    session.flush()
    removed = _drop_unrouted(session, {r.model_id for r in gone})
    models = [{"slug": slug, "routes": [{"provider": PROVIDER, "upstream_model": name, "input_per_mtok": 0,
                                         "output_per_mtok": 0}]} for slug, name in wanted.items()]
    if models:
        seed.apply(session, {"models": models}, secret_key="")  # the config's own upsert; no key involved
    added = sorted(s for s in wanted if s not in current)
    kept = sorted(s for s in wanted if s in current)
    detail = (f"{'created' if created else 'updated'} provider {PROVIDER} at {shown_url(url)}"
              + (f" (was {before})" if before and before != shown_url(url) else "")
              + f"; models at $0: {', '.join(sorted(wanted)) or 'none'}"
              + (f"; removed: {', '.join(removed)}" if removed else ""))
    audit(session, actor.email, "ollama.save", PROVIDER, detail[:2000])
    announce(session, "catalog")
    return {"added": added, "kept": kept, "removed": removed}


def models(session: Session) -> list[dict[str, Any]]:
    """The catalog's models routed to the `ollama` provider: {slug, upstream, input, output}."""
    q = (select(Model.slug, Route.upstream_model, Route.input_micros_per_mtok, Route.output_micros_per_mtok)
         .join(Route, Route.model_id == Model.id).join(Provider, Provider.id == Route.provider_id)
         .where(Provider.name == PROVIDER).order_by(Model.slug))
    return [{"slug": s, "upstream": u, "input": i, "output": o} for s, u, i, o in session.execute(q).all()]


def provider(session: Session) -> Provider | None:
    return session.scalar(select(Provider).where(Provider.name == PROVIDER))


# ---- the start-up look for a local Ollama --------------------------------------------------------

def detect(settings: Any) -> Detected | None:
    """A local Ollama at GATEWAY_OLLAMA_PROBE_URL that no provider uses yet, remembered for offer().
    Bounded to ~300 ms: nothing listening refuses the connection at once; anything else is cut."""
    global _detected
    url = (settings.ollama_probe_url or "").strip().rstrip("/")
    _detected = None
    if not url or check_url_quietly(url) is None or _known(url):
        return None
    try:
        names = [m["name"] for m in adapter.probe_tags(url, DETECT_TIMEOUT, max_bytes=1 << 20)]
    except (UpstreamError, ValueError):
        return None
    _detected = Detected(url, tuple(n for n in names if TAG.match(n))[:50])
    return _detected


def check_url_quietly(url: str) -> str | None:
    try:
        return check_url(url)
    except AdminError as e:
        log.warning("GATEWAY_OLLAMA_PROBE_URL not used: %s", e)
        return None


def _known(url: str) -> bool:
    with db.session_scope() as session:
        return any(u.rstrip("/") == url for u in session.scalars(select(Provider.base_url)).all())


def offer() -> Detected | None:
    """The Ollama found at start, unless a provider has taken its address since."""
    if _detected is None or _known(_detected.url):
        return None
    return _detected


def forget_offer() -> None:
    global _detected
    _detected = None
