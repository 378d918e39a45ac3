"""Apps' delivery settings (default deferral, webhook URL and secret) and the webhook of deferred results.

Settings, for the console and the CLI (each write audited; the deferral announces `keys`, so every
server picks it up from memory within a sync interval):
- `set_deferral(app, value)`: seconds (1 to MAX_DEFERRAL_SECONDS) that the app's chat requests
  without `x-gateway-deadline` are deferred as if they sent it; None/''/'never' turns it off.
- `set_webhook(app, url)`: an http(s) URL; loopback, private, link-local and metadata addresses are
  refused unless GATEWAY_WEBHOOK_ALLOW_PRIVATE allows private ones (link-local and metadata never).
  The first URL creates the app's signing secret, returned once and stored AES-GCM encrypted under
  GATEWAY_SECRET_KEY (bound to the app by the associated data); `rotate_secret` makes a new one.

Delivery (`deliver_due`, the scheduler's `deliver_webhooks`, one worker per tick through the job_run
claim): every deferred request of an app whose result is in (its batch settled, or the request
failed) is POSTed to the app's webhook URL as JSON (id, status, status_code, result, cost), with
`X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the body under the app's secret>` and
`X-Gateway-Webhook-Id: <request id>`, and the Standard Webhooks headers (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC of id.timestamp.body>`, whose signed
timestamp lets a receiver refuse a replay). A 2xx answer delivers it; anything else (an error
status, a refused or unreachable address, a timeout) is retried from GATEWAY_WEBHOOK_RETRY_SECONDS, doubling,
up to GATEWAY_WEBHOOK_MAX_ATTEMPTS, then given up (`failed`). State lives on the deferred row, so
retries survive restarts; each row is claimed (a lease) before its POST, so no two workers send it
at once. Receivers should still dedupe on the webhook id: a worker that dies between the receiver's
2xx and recording it sends the request again. The result stays fetchable at
`GET /v1/requests/{id}/result` whatever the webhook does. Nothing here runs on the request path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import orjson
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection

from gateway import crypto, db
from gateway.memo import announce
from gateway.models import App, Batch, DeferredRequest, utcnow
from gateway.providers import egress
from gateway.services import arbitrage
from gateway.services.errors import Actor, AdminError, require_org_admin
from gateway.services.tenancy import audit

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Gateway-Signature"
ID_HEADER = "X-Gateway-Webhook-Id"
MAX_DEFERRAL_SECONDS = 30 * 86400
MAX_URL = 500
LEASE_SECONDS = 120  # a claimed delivery is retried after this if its worker died mid-POST
MAX_BACKOFF_SECONDS = 6 * 3600
PER_TICK = 200


@dataclass
class Config:
    secret_key: str = ""
    allow_private: bool = False
    retry_seconds: float = 30.0
    max_attempts: int = 8


CONFIG = Config()


def configure(settings) -> None:
    CONFIG.secret_key = settings.secret_key
    CONFIG.allow_private = settings.webhook_allow_private
    CONFIG.retry_seconds = settings.webhook_retry_seconds
    CONFIG.max_attempts = max(1, settings.webhook_max_attempts)


# ---- settings ---------------------------------------------------------------------------------

def _cipher(secret_key: str) -> bytes:
    return crypto.derive_key(secret_key, b"gateway app webhooks v1")


def _aad(app_id: int) -> bytes:
    return b"app-webhook:%d" % app_id


def secret_of(app: App, secret_key: str) -> str | None:
    if not app.webhook_secret_enc:
        return None
    try:
        return crypto.decrypt(_cipher(secret_key), app.webhook_secret_enc, aad=_aad(app.id))
    except Exception:  # another GATEWAY_SECRET_KEY: deliveries fail until the secret is rotated
        log.error("app %s: webhook secret cannot be decrypted with this secret key", app.id)
        return None


def parse_deferral(value: object) -> int | None:
    """Seconds as typed (a whole number, 1 to 30 days), or None for never."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "never", "none", "off")):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise AdminError("The default deferral must be a whole number of seconds, or 'never'.")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise AdminError("The default deferral must be a whole number of seconds, or 'never'.")
    seconds = int(text)
    if not 1 <= seconds <= MAX_DEFERRAL_SECONDS:
        raise AdminError(f"The default deferral must be between 1 and {MAX_DEFERRAL_SECONDS} seconds (30 days).")
    return seconds


def check_url(value: object, allow_private: bool) -> str | None:
    """The webhook URL as stored (None: no webhook); AdminError saying why one is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise AdminError("The webhook URL must be text.")
    url = value.strip()
    if len(url) > MAX_URL or not url.isprintable() or any(c.isspace() for c in url):
        raise AdminError(f"The webhook URL must be at most {MAX_URL} printable characters without spaces.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError:
        raise AdminError("The webhook URL is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AdminError("The webhook URL must be an http:// or https:// URL with a host.")
    if parts.username or parts.password:
        raise AdminError("The webhook URL must not carry a user name or password.")
    reason = egress.check_url(url, allow_private)
    if reason and "allow_private" in reason:  # loopback or private: the operator's switch allows it
        raise AdminError(f"The webhook URL points at this machine or a private network ({parts.hostname[:100]}); "
                         "the operator can allow that with GATEWAY_WEBHOOK_ALLOW_PRIVATE.")
    if reason:
        raise AdminError(f"The webhook URL is refused: {reason}.")
    return url


def set_deferral(session: Session, app: App, value: object, actor: str) -> int | None:
    seconds = parse_deferral(value)
    if seconds != app.arbitrage_deadline_seconds:
        app.arbitrage_deadline_seconds = seconds
        audit(session, actor, "app.deferral", app.slug, "never" if seconds is None else f"{seconds}s",
              org_id=app.org_id)
        announce(session, "keys")
    return seconds


def _new_secret(app: App, secret_key: str) -> str:
    # Standard Webhooks' form: whsec_ and 32 random bytes in base64 (its libraries decode it so)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    app.webhook_secret_enc = crypto.encrypt(_cipher(secret_key), secret, aad=_aad(app.id))
    return secret


def set_webhook(session: Session, app: App, value: object, secret_key: str, allow_private: bool,
                actor: str) -> str | None:
    """Set or clear the app's webhook URL; returns the signing secret when one was created now
    (the first URL), to be shown once. Clearing the URL keeps nothing: a later URL gets a new secret."""
    url = check_url(value, allow_private)
    if url == app.webhook_url:
        return None
    app.webhook_url = url
    secret = None
    if url is None:
        app.webhook_secret_enc = None
    elif not app.webhook_secret_enc:
        secret = _new_secret(app, secret_key)
    audit(session, actor, "app.webhook", app.slug, url or "cleared", org_id=app.org_id)
    return secret


def rotate_secret(session: Session, app: App, secret_key: str, actor: str) -> str:
    if not app.webhook_url:
        raise AdminError("Set a webhook URL first: the secret signs its deliveries.")
    secret = _new_secret(app, secret_key)
    audit(session, actor, "app.webhook_secret", app.slug, "rotated", org_id=app.org_id)
    return secret


def console_update(session: Session, actor: Actor, app_id: int, deferral: object, url: object,
                   secret_key: str, allow_private: bool) -> tuple[App, str | None]:
    """The console's Apps row form: both settings at once, by the org's admins (or a super-admin)."""
    app = session.get(App, app_id)
    if app is None:
        raise AdminError("That app does not exist.")
    require_org_admin(actor, app.org_id, "change apps")
    set_deferral(session, app, deferral, actor.email)
    return app, set_webhook(session, app, url, secret_key, allow_private, actor.email)


def console_rotate(session: Session, actor: Actor, app_id: int, secret_key: str) -> tuple[App, str]:
    app = session.get(App, app_id)
    if app is None:
        raise AdminError("That app does not exist.")
    require_org_admin(actor, app.org_id, "change apps")
    return app, rotate_secret(session, app, secret_key, actor.email)


# ---- delivery ---------------------------------------------------------------------------------

def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`webhook-signature` as Standard Webhooks (standardwebhooks.com) defines it: v1, then the
    base64 HMAC-SHA256 of `id.timestamp.body` under the secret's bytes. The timestamp is signed,
    so a receiver can refuse an old delivery replayed at it."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")  # as the reference libraries read it
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def payload(found: arbitrage.Outcome) -> bytes:
    figures = found.figures or {}
    return orjson.dumps({
        "id": found.request_id, "object": "gateway.deferred_result", "status": found.status,
        "status_code": found.status_code, "batch_id": found.batch_id, "result": found.body,
        "cost": {"benchmark_cost": figures.get("x-gateway-benchmark-cost"), "charge": figures.get("x-gateway-charge"),
                 "saved": figures.get("x-gateway-saved")},
        "created": int(time.time()),
    })


def post(url: str, body: bytes, headers: dict[str, str], allow_private: bool) -> str | None:
    """POST once, never following a redirect, only to an address egress allows (checked at connect,
    after resolving). Returns None on a 2xx, else why not."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    cls = egress.guarded_connection(HTTPSConnection if https else HTTPConnection, url, allow_private)
    pool_cls = HTTPSConnectionPool if https else HTTPConnectionPool
    pool = pool_cls(parts.hostname, parts.port or (443 if https else 80), timeout=Timeout(connect=5, read=15),
                    retries=False, maxsize=1)
    pool.ConnectionCls = cls
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        reply = pool.urlopen("POST", path, body=body, headers=headers, redirect=False, retries=False,
                             preload_content=False)
        reply.read(65536, decode_content=False)
        reply.release_conn()
    except egress.EgressRefused as e:
        return str(e)
    except Exception as e:  # unreachable, reset, timed out: retried later
        return f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        pool.close()
    return None if 200 <= reply.status < 300 else f"the receiver answered {reply.status}"


def _due(session: Session, now: datetime) -> list[DeferredRequest]:
    settled = select(Batch.id).where(Batch.settled.is_(True))
    return list(session.scalars(select(DeferredRequest).where(
        DeferredRequest.webhook_state == "pending",
        or_(DeferredRequest.webhook_next_at.is_(None), DeferredRequest.webhook_next_at <= now),
        or_(DeferredRequest.status == "failed",
            (DeferredRequest.status == "submitted") & DeferredRequest.batch_id.in_(settled)))
        .order_by(DeferredRequest.id).limit(PER_TICK)))


def _claim(r: DeferredRequest, now: datetime) -> bool:
    same_time = (DeferredRequest.webhook_next_at.is_(None) if r.webhook_next_at is None
                 else DeferredRequest.webhook_next_at == r.webhook_next_at)
    with db.write_lock, db.session_scope() as session:
        return session.execute(update(DeferredRequest).where(
            DeferredRequest.id == r.id, DeferredRequest.webhook_state == "pending",
            DeferredRequest.webhook_attempts == r.webhook_attempts, same_time)
            .values(webhook_next_at=now + timedelta(seconds=LEASE_SECONDS))).rowcount == 1


def _record(row_id: int, **values) -> None:
    with db.write_lock, db.session_scope() as session:
        session.execute(update(DeferredRequest).where(DeferredRequest.id == row_id).values(**values))


def deliver_due(now: datetime | None = None) -> int:
    """POST every result that is in and due; returns how many were delivered now."""
    now = now or utcnow()
    with db.session_scope() as session:
        rows = _due(session, now)
    delivered = 0
    failing: set[int | None] = set()  # apps whose receiver failed this tick: their other rows wait
    for r in rows:
        if r.app_id in failing or not _claim(r, now):
            continue  # a receiver that is down, or another worker has it
        try:
            sent = _deliver(r, now)
        except Exception:
            log.exception("webhook of %s failed; retried after its lease", r.request_id)
            sent = None
        if sent is None:
            failing.add(r.app_id)
        delivered += sent or 0
    return delivered


def _deliver(r: DeferredRequest, now: datetime) -> int | None:
    """1 delivered, 0 nothing to deliver, None the receiver failed (retried with backoff)."""
    with db.session_scope() as session:
        app = session.get(App, r.app_id) if r.app_id is not None else None
        found = arbitrage.outcome(session, r.org_id, r.request_id)
    secret = secret_of(app, CONFIG.secret_key) if app is not None and app.webhook_url else None
    if app is None or not app.webhook_url or secret is None or found is None or found.state != "done":
        _record(r.id, webhook_state="none", webhook_next_at=None,
                webhook_error=None if app is None or not app.webhook_url else "no usable signing secret")
        return 0
    body = payload(found)
    attempt = r.webhook_attempts + 1
    sent_at = int(time.time())
    headers = {"Content-Type": "application/json", "User-Agent": "gateway-webhooks", ID_HEADER: r.request_id,
               SIGNATURE_HEADER: sign(secret, body), "X-Gateway-Webhook-Attempt": str(attempt),
               # the same delivery for Standard Webhooks verifiers (the id stays across retries)
               "webhook-id": r.request_id, "webhook-timestamp": str(sent_at),
               "webhook-signature": sign_standard(secret, r.request_id, sent_at, body)}
    error = post(app.webhook_url, body, headers, CONFIG.allow_private)
    if error is None:
        _record(r.id, webhook_state="delivered", webhook_attempts=attempt, webhook_next_at=None, webhook_error=None,
                delivered_at=utcnow())
        return 1
    log.warning("webhook of %s to app %s, attempt %d: %s", r.request_id, r.app_id, attempt, error)
    if attempt >= CONFIG.max_attempts:
        _record(r.id, webhook_state="failed", webhook_attempts=attempt, webhook_next_at=None, webhook_error=error[:1000])
    else:
        wait = min(MAX_BACKOFF_SECONDS, CONFIG.retry_seconds * 2 ** (attempt - 1))
        _record(r.id, webhook_attempts=attempt, webhook_next_at=now + timedelta(seconds=wait), webhook_error=error[:1000])
    return None
