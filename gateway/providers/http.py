"""One pooled keep-alive connection pool per upstream; connect vs idle-read timeouts.

Upstream calls go straight to urllib3's connection pools: requests' per-call work (preparing,
merging settings, hooks, cookies) cost more CPU than the rest of the gateway's hot path. The small
session/response surface here keeps the shape adapters use (`post`/`get`, `status_code`,
`headers`, `content`, `iter_content`, `close`) and raises requests' exception types, so adapter
code and its error mapping read as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import requests
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from gateway.errors import StreamTruncated
from gateway.providers import egress
from gateway.settings import Settings
from gateway.wire.canonical import EventStream, StreamEvent

_pools: dict[str, Session] = {}
_timeouts: tuple[float, float] = (5.0, 120.0)
USER_AGENT = "gateway/0.1"


def configure(settings: Settings) -> None:
    global _timeouts
    _timeouts = (settings.upstream_connect_timeout, settings.upstream_idle_timeout)


def timeouts() -> tuple[float, float]:
    """(connect, read); read is the longest silence allowed, also between stream chunks."""
    return _timeouts


class Response:
    """The parts of a requests.Response the adapters use, over a urllib3 response."""

    __slots__ = ("_raw", "status_code", "headers", "_content")

    def __init__(self, raw: urllib3.HTTPResponse) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._raw.read()
            except (ProtocolError, ReadTimeoutError) as e:
                raise requests.exceptions.ConnectionError(str(e)) from None
            finally:
                self._raw.release_conn()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Bytes as they arrive (each chunk of a chunked response as soon as it is read)."""
        try:
            for chunk in self._raw.stream(chunk_size, decode_content=True):
                if chunk:
                    yield chunk
        except ProtocolError as e:
            raise requests.exceptions.ChunkedEncodingError(str(e)) from None
        except (ReadTimeoutError, HTTPError) as e:
            raise requests.exceptions.ConnectionError(str(e)) from None

    def close(self) -> None:
        """Done with the response: a fully read body returns its connection to the pool."""
        if self._content is not None:
            return
        if self._raw.isclosed() or self._raw.length_remaining == 0:
            self._raw.release_conn()
        else:
            self._raw.close()  # a stream abandoned midway: the connection cannot be reused
            self._raw.release_conn()


class Session:
    """A keep-alive pool to one upstream host."""

    def __init__(self, base_url: str) -> None:
        self.pool = urllib3.connectionpool.connection_from_url(base_url, maxsize=512, block=False,
                                                               retries=False)
        self.pool.ConnectionCls = egress.guarded_connection(self.pool.ConnectionCls, base_url)

    def request(self, method: str, url: str, data: bytes | None = None,
                headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
                stream: bool = False,
                timeout: tuple[float, float] | None = None) -> Response:
        parts = urlsplit(url)
        path = parts.path or "/"
        query = "&".join(q for q in (parts.query, urlencode(params) if params else "") if q)
        if query:
            path += "?" + query
        all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        connect, read = timeout or _timeouts
        try:
            raw = self.pool.urlopen(method, path, body=data, headers=all_headers, retries=False,
                                    redirect=False, preload_content=False,
                                    timeout=urllib3.Timeout(connect=connect, read=read))
        except ConnectTimeoutError as e:
            raise requests.exceptions.ConnectTimeout(str(e)) from None
        except ReadTimeoutError as e:
            raise requests.exceptions.ReadTimeout(str(e)) from None
        except (NewConnectionError, ProtocolError, HTTPError, OSError) as e:
            raise requests.exceptions.ConnectionError(str(e)) from None
        resp = Response(raw)
        if not stream:
            resp.content  # noqa: B018  (read now, as requests does, and free the connection)
        return resp

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)


def events(resp: Response, decode: Callable[[Iterator[bytes]], EventStream]) -> EventStream:
    """A provider's stream decoded as bytes arrive; a broken connection ends in an error event,
    and the response is closed however the stream ends (the client may leave first)."""
    chunks = resp.iter_content(chunk_size=None)
    try:
        for ev in decode(chunks):
            if ev.kind == "end":
                # Past the terminal event comes only the end of the chunked body: reading it now
                # (consumers may stop at this event) returns the connection to the pool.
                for _ in chunks:
                    pass
            yield ev
    except requests.exceptions.RequestException:
        yield StreamEvent("error", error=StreamTruncated())
    finally:
        resp.close()


def session_for(base_url: str) -> Session:
    session = _pools.get(base_url)
    if session is None:
        session = _pools[base_url] = Session(base_url)
    return session


def forget(base_url: str) -> None:
    """Close and drop the pool of one upstream (its next request connects, and is checked, afresh)."""
    session = _pools.pop(base_url, None)
    if session is not None:
        session.pool.close()


egress.on_withdrawn(forget)  # a kept-alive connection must not outlive its allow_private


def close_all() -> None:
    for session in _pools.values():
        session.pool.close()
    _pools.clear()
