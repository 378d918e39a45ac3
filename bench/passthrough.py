"""REFERENCE ONLY, not the product: the bare pass-through the gateway is compared against.

The least a Python proxy on the same stack (gevent + requests) can do: read the body, POST it
to the upstream over one pooled keep-alive `requests.Session`, and return the bytes; streams
are relayed with `iter_content(chunk_size=None)`. No auth, routing, metering or ledger.
Run: `python -m bench.passthrough --port P --upstream http://127.0.0.1:U/v1` (127.0.0.1 only).
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import socket  # noqa: E402

import requests  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402
from requests.adapters import HTTPAdapter  # noqa: E402


def make_app(upstream: str):
    url = upstream.rstrip("/") + "/chat/completions"
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=512, max_retries=0))
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"}

    def app(environ, start_response):
        body = environ["wsgi.input"].read()
        resp = session.post(url, data=body, headers=headers, stream=True, timeout=(5, 120))
        content_type = resp.headers.get("Content-Type", "application/json")
        status = f"{resp.status_code} {resp.reason}"
        if content_type.startswith("text/event-stream"):
            start_response(status, [("Content-Type", content_type)])
            return _relay(resp)
        content = resp.content
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(content)))])
        return [content]

    return app


def _relay(resp):
    try:
        yield from resp.iter_content(chunk_size=None)
    finally:
        resp.close()


class NoDelayHandler(WSGIHandler):
    def __init__(self, sock, address, server, rfile=None):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, address, server, rfile)


def main() -> None:
    parser = argparse.ArgumentParser(description="bare gevent + requests pass-through (benchmark reference)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000/v1")
    args = parser.parse_args()
    WSGIServer(("127.0.0.1", args.port), make_app(args.upstream), handler_class=NoDelayHandler, log=None,
               backlog=1024).serve_forever()


if __name__ == "__main__":
    main()
