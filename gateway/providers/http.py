"""One pooled keep-alive session per upstream; connect vs idle-read timeouts."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

from gateway.settings import Settings

_sessions: dict[str, requests.Session] = {}
_timeouts: tuple[float, float] = (5.0, 120.0)


def configure(settings: Settings) -> None:
    global _timeouts
    _timeouts = (settings.upstream_connect_timeout, settings.upstream_idle_timeout)


def timeouts() -> tuple[float, float]:
    """(connect, read); read is the longest silence allowed, also between stream chunks."""
    return _timeouts


def session_for(base_url: str) -> requests.Session:
    session = _sessions.get(base_url)
    if session is None:
        session = requests.Session()
        session.trust_env = False  # proxies and .netrc never apply to provider calls
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=512, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _sessions[base_url] = session
    return session


def close_all() -> None:
    for session in _sessions.values():
        session.close()
    _sessions.clear()
