"""providers/http.py: a chunked upstream body is relayed as it arrives; chunks that have already
arrived whole go on together, and nothing waits for bytes still on their way (a burst, then a
pause, reaches the reader before the pause ends; so does a burst followed by half a chunk)."""

import gevent
import gevent.event
import pytest
from gevent.server import StreamServer

from gateway.providers import egress, http


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


EVENTS = [b"data: {\"n\": %d}\n\n" % i for i in range(6)]


@pytest.fixture
def upstream():
    """A raw HTTP/1.1 server: three events in one write, then (on `go`) whatever `rest` holds."""
    state = {"go": gevent.event.Event(), "rest": b"", "first": b""}

    def handle(sock, _addr):
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + state["first"])
        state["go"].wait(timeout=10)
        sock.sendall(state["rest"])
        gevent.sleep(0.05)
        sock.close()

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    base = f"http://127.0.0.1:{server.server_port}"
    before = egress._private_ok
    egress.allow_private_for([*before, base])
    yield base, state
    server.stop()
    http.forget(base)
    egress.allow_private_for(before)


def first_piece(pieces) -> bytes:
    with gevent.Timeout(5, AssertionError("waited for bytes still on their way")):
        return next(pieces)


def test_a_burst_goes_on_together_and_a_pause_holds_nothing_back(upstream):
    base, state = upstream
    state["first"] = b"".join(chunk(e) for e in EVENTS[:3])
    state["rest"] = b"".join(chunk(e) for e in EVENTS[3:]) + b"0\r\n\r\n"
    resp = http.post(base, "/v1/chat/completions", b"{}", {}, stream=True)
    pieces = resp.iter_content()
    assert first_piece(pieces) == b"".join(EVENTS[:3])  # arrived together, go on as one piece
    state["go"].set()
    assert b"".join(pieces) == b"".join(EVENTS[3:])


def test_half_a_chunk_on_its_way_does_not_hold_back_the_whole_ones(upstream):
    base, state = upstream
    half = chunk(EVENTS[3])
    state["first"] = b"".join(chunk(e) for e in EVENTS[:3]) + half[:9]
    state["rest"] = half[9:] + chunk(EVENTS[4]) + b"0\r\n\r\n"
    resp = http.post(base, "/v1/chat/completions", b"{}", {}, stream=True)
    pieces = resp.iter_content()
    assert first_piece(pieces) == b"".join(EVENTS[:3])
    state["go"].set()
    assert b"".join(pieces) == EVENTS[3] + EVENTS[4]


def test_a_body_cut_mid_chunk_still_delivers_what_arrived_then_fails(upstream):
    base, state = upstream
    state["first"] = b"".join(chunk(e) for e in EVENTS[:2]) + chunk(EVENTS[2])[:7]
    state["go"].set()  # then the connection closes
    resp = http.post(base, "/v1/chat/completions", b"{}", {}, stream=True)
    got = b""
    with pytest.raises(http.StreamTruncated):
        for piece in resp.iter_content():
            got += piece
    assert got == EVENTS[0] + EVENTS[1]


@pytest.mark.parametrize("head, whole", [
    (b"", False), (b"5\r\nhel", False), (b"5\r\nhello\r", False), (b"5\r\nhello\r\n", True),
    (b"5;ext=1\r\nhello\r\n", True), (b"0\r\n", False), (b"0\r\n\r\n", True), (b"zz\r\nhello\r\n", False),
    (b"\r\n", False),
])
def test_whole_chunk(head, whole):
    assert http._whole_chunk(head) is whole
