"""One pooled keep-alive connection pool per upstream; connect vs idle-read timeouts, under a deadline.

Upstream calls go straight to urllib3's connection pools: requests' per-call work (preparing,
merging settings, hooks, cookies) cost more CPU than the rest of the gateway's hot path. The small
session/response surface here (`post`/`get`/`request`, `status_code`, `headers`, `content`,
`iter_content`, `close`) raises the gateway's own upstream errors, so adapters map nothing:

    UpstreamError
     +-- UpstreamTimeout       connect or read timed out, or the request's deadline passed (504)
     +-- StreamTruncated       the connection broke or closed in the middle of a body (502)
     +-- InvalidUpstreamResponse  a body that does not parse as the provider's wire format (502)
     +-- MalformedStream       a stream event that does not (an error event, in events())
    (any other transport failure: UpstreamError "Could not reach the upstream provider", 502)

Every wait is bounded twice: by the configured timeouts (connect; read = the longest silence
allowed, also between stream chunks) and by what is left of the request's deadline, which an
adapter passes as a `time.perf_counter()` value. A stream that stalls is cut at the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from gateway.errors import (
    InvalidUpstreamResponse,
    MalformedStream,
    StreamTruncated,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.providers import egress
from gateway.settings import Settings
from gateway.wire.canonical import EventStream, StreamEvent

T = TypeVar("T")

_pools: dict[str, Session] = {}
_timeouts: tuple[float, float] = (5.0, 120.0)
REBOUND_SECONDS = 0.1
USER_AGENT = "gateway/0.1"
# Parsing a provider's body can fail in any of these ways when the body is not what the wire promises.
MALFORMED = (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, IndexError)


def configure(settings: Settings) -> None:
    global _timeouts
    _timeouts = (settings.upstream_connect_timeout, settings.upstream_idle_timeout)


def _whole_chunk(head: bytes) -> bool:
    """Whether `head` starts with a whole chunk of a chunked body (size line, data, CRLF), or with
    the last-chunk and its empty trailer."""
    line_end = head.find(b"\r\n")
    if line_end <= 0:
        return False
    try:
        size = int(head[:line_end].split(b";", 1)[0], 16)
    except ValueError:
        return False
    if size == 0:
        return head[line_end + 2:line_end + 4] == b"\r\n"
    return len(head) >= line_end + 2 + size + 2


def timeouts(deadline: float | None = None) -> tuple[float, float]:
    """(connect, read), each cut to what is left before `deadline`; UpstreamTimeout when none is."""
    connect, read = _timeouts
    if deadline is None:
        return connect, read
    left = deadline - time.perf_counter()
    if left <= 0:
        raise UpstreamTimeout()
    return min(connect, left), min(read, left)


def parse(content: bytes, decode: Callable[[Any], T]) -> T:
    """`decode(json of content)`; a body that is not what the provider's wire promises is a 502."""
    try:
        return decode(orjson.loads(content))
    except MALFORMED:
        raise InvalidUpstreamResponse() from None


class Response:
    """The parts of a requests.Response the adapters use, over a urllib3 response."""

    __slots__ = ("_raw", "status_code", "headers", "_content", "_deadline")

    def __init__(self, raw: urllib3.HTTPResponse, deadline: float | None = None) -> None:
        self._raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive
        self._content: bytes | None = None
        self._deadline = deadline

    @property
    def content(self) -> bytes:
        if self._content is None:
            try:
                self._content = self._raw.read()
            except ReadTimeoutError:
                raise UpstreamTimeout() from None
            except (ProtocolError, HTTPError, OSError):
                raise StreamTruncated() from None
            finally:
                self._raw.release_conn()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return parse(self.content, lambda obj: obj)

    def iter_content(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """Bytes as they arrive. A chunked body is read chunk by chunk, and the chunks that have
        already arrived whole are passed on together (an upstream that writes ten events at once
        costs one pass through the relay, not ten); nothing waits for bytes still on their way.

        Once less of the deadline is left than the read timeout, the socket's timeout is cut to
        what is left (again at most every REBOUND_SECONDS), so a stream that goes silent ends at
        the deadline (UpstreamTimeout), not an idle timeout later.
        """
        raw = self._raw
        coalesce = raw.chunked and not raw.headers.get("content-encoding")
        pending: list[bytes] = []
        try:
            deadline, read, bound_at = self._deadline, _timeouts[1], 0.0
            for chunk in raw.stream(chunk_size, decode_content=True):
                if chunk:
                    pending.append(chunk)
                    if coalesce and chunk_size is None and self._next_chunk_here():
                        continue
                    yield pending[0] if len(pending) == 1 else b"".join(pending)
                    pending.clear()
                if deadline is not None:
                    now = time.perf_counter()
                    # A socket timeout set less than REBOUND_SECONDS ago overshoots the deadline by
                    # at most that: fast streams skip the syscall on most chunks.
                    if deadline - now < read and now - bound_at >= REBOUND_SECONDS:
                        self._bound_next_read()
                        bound_at = now
            if pending:
                yield b"".join(pending)
        except ReadTimeoutError:
            if pending:
                yield b"".join(pending)
            raise UpstreamTimeout() from None
        except (ProtocolError, HTTPError, OSError):
            if pending:
                yield b"".join(pending)
            raise StreamTruncated() from None

    def _next_chunk_here(self) -> bool:
        """True when the next chunk (or the body's end) is already in the read buffer whole, so
        reading it cannot wait on the network. Looks without blocking: the socket is made
        non-blocking for one peek at what is buffered or already received."""
        fp = getattr(self._raw._fp, "fp", None)
        sock = getattr(self._raw.connection, "sock", None)
        if fp is None or sock is None:
            return False
        timeout = sock.gettimeout()
        try:
            sock.settimeout(0.0)
            head = fp.peek(1)
        except (OSError, ValueError):
            return False
        finally:
            try:
                sock.settimeout(timeout)
            except OSError:
                pass
        return _whole_chunk(head)

    def _bound_next_read(self) -> None:
        # Past the deadline only what has already arrived (the stream's end, say) is still read.
        left = max(self._deadline - time.perf_counter(), 0.001)
        sock = getattr(self._raw.connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(_timeouts[1], left))

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
                stream: bool = False, deadline: float | None = None) -> Response:
        """One request; raises UpstreamTimeout / UpstreamError, never a transport exception."""
        parts = urlsplit(url)
        path = parts.path or "/"
        query = "&".join(q for q in (parts.query, urlencode(params) if params else "") if q)
        if query:
            path += "?" + query
        all_headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
        connect, read = timeouts(deadline)
        try:
            raw = self.pool.urlopen(method, path, body=data, headers=all_headers, retries=False,
                                    redirect=False, preload_content=False,
                                    timeout=urllib3.Timeout(connect=connect, read=read))
        except NewConnectionError:  # refused, unreachable: a subclass of ConnectTimeoutError, but no timeout
            raise UpstreamError("Could not reach the upstream provider (connection refused or unreachable).") from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise UpstreamTimeout() from None
        except (ProtocolError, HTTPError, OSError) as e:
            raise UpstreamError(f"Could not reach the upstream provider ({type(e).__name__}).") from None
        resp = Response(raw, deadline)
        if not stream:
            resp.content  # noqa: B018  (read now, as requests does, and free the connection)
        return resp

    def post(self, url: str, **kw: Any) -> Response:
        return self.request("POST", url, **kw)

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)


def post(base_url: str, url: str, payload: bytes, headers: Mapping[str, str], *, stream: bool = False,
         deadline: float | None = None) -> Response:
    """POST on `base_url`'s pool."""
    return session_for(base_url).post(url, data=payload, headers=headers, stream=stream, deadline=deadline)


def events(resp: Response, decode: Callable[[Iterator[bytes]], EventStream]) -> EventStream:
    """A provider's stream decoded as bytes arrive; a broken or stalled connection ends in an error
    event, and the response is closed however the stream ends (the client may leave first)."""
    chunks = resp.iter_content(chunk_size=None)
    try:
        for ev in decode(chunks):
            if ev.kind == "end":
                # Past the terminal event comes only the end of the chunked body: reading it now
                # (consumers may stop at this event) returns the connection to the pool.
                for _ in chunks:
                    pass
            yield ev
    except UpstreamError as e:
        yield StreamEvent("error", error=e)
    except MALFORMED:  # the decoder met a shape the provider's wire format does not allow
        yield StreamEvent("error", error=MalformedStream())
    finally:
        resp.close()


class ProbeRefused(UpstreamError):
    """The egress rules refuse the address (link-local, cloud metadata); the message says which."""


def probe(url: str, timeout: float, max_bytes: int, headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    """One GET on its own short-lived connection (no pool is kept): an address an operator typed,
    before any provider has it (the console's Test, the start-up look for a local server). Private
    addresses are allowed, since the operator named them; link-local and metadata stay refused.
    Connect and each read wait at most `timeout`, the whole body at most twice that, and a body
    above `max_bytes` is cut. Returns (status, body); raises UpstreamTimeout, ProbeRefused or
    UpstreamError ("Could not reach ...")."""
    if reason := egress.check_url(url, True):
        raise ProbeRefused(f"refused: {reason}")
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.perf_counter() + 2 * timeout
    pool = None
    try:
        pool = urllib3.connectionpool.connection_from_url(url, maxsize=1, block=False, retries=False)
        pool.ConnectionCls = egress.guarded_connection(pool.ConnectionCls, url, allow_private=True)
        raw = pool.urlopen("GET", path, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                                                 **(headers or {})},
                           retries=False, redirect=False, preload_content=False,
                           timeout=urllib3.Timeout(connect=timeout, read=timeout))
        body = bytearray()
        while chunk := raw.read(65536):
            body += chunk
            if len(body) > max_bytes or time.perf_counter() > deadline:
                raise UpstreamError("The answer was too large or too slow.")
        return raw.status, bytes(body)
    except ValueError:  # a host name no resolver takes (an empty or over-long label)
        raise UpstreamError("Could not connect (the host name is not valid).") from None
    except NewConnectionError as e:
        refused = _refusal_in(e)
        if refused:
            raise ProbeRefused(f"refused: {refused}") from None
        raise UpstreamError("Could not connect (connection refused or unreachable).") from None
    except (ConnectTimeoutError, ReadTimeoutError):
        raise UpstreamTimeout(f"No answer within {timeout:g} s.") from None
    except (ProtocolError, HTTPError, OSError) as e:
        refused = _refusal_in(e)
        if refused:
            raise ProbeRefused(f"refused: {refused}") from None
        raise UpstreamError(f"Could not connect ({type(e).__name__}).") from None
    finally:
        if pool is not None:
            pool.close()


def _refusal_in(e: BaseException) -> str | None:
    """The egress refusal behind a transport error, wherever urllib3 wrapped it."""
    seen: set[int] = set()
    todo: list[Any] = [e]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, egress.EgressRefused):
            return str(item).removeprefix("egress refused: ")
        todo += [item.__cause__, item.__context__, *item.args]
    return None


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
