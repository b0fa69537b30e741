"""Local HTTP(S) servers for the fetch tests: a file server honouring Range, and one that drops
the connection halfway through the body (as a flaky proxy or a restarted server does)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from optiserve_testing.pki import make_ca, make_certificate


@dataclass
class Behaviour:
    """What the server does; tests change it between requests."""

    body: bytes = b""
    files: dict[str, bytes] = field(default_factory=dict)  # path -> body (else ``body``)
    drop_first: int = 0  # this many GETs send half the body and close the socket
    status: int = 200  # an error status for every request instead of the body
    json_body: dict[str, str] | None = None
    requests: list[dict[str, str]] = field(default_factory=list)


def _handler(behaviour: Behaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def do_GET(self) -> None:
            behaviour.requests.append({"path": self.path, **dict(self.headers.items())})
            if behaviour.json_body is not None:
                payload = json.dumps(behaviour.json_body).encode()
                self._send(200, payload, {"Content-Type": "application/json"})
                return
            if behaviour.status != 200:
                self._send(behaviour.status, b"no", {})
                return
            whole = behaviour.files.get(self.path.partition("?")[0], behaviour.body)
            body, status, extra = whole, 200, {}
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
                body, status = body[start:], 206
                extra["Content-Range"] = (
                    f"bytes {start}-{len(behaviour.body) - 1}/{len(behaviour.body)}"
                )
            if behaviour.drop_first > 0:
                behaviour.drop_first -= 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self._send(status, body, extra)

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@dataclass(frozen=True)
class RunningServer:
    url: str  # scheme://127.0.0.1:PORT
    behaviour: Behaviour
    ca_file: Path | None


@contextmanager
def serve(behaviour: Behaviour, tls_dir: Path | None = None) -> Iterator[RunningServer]:
    """A threaded server on a free loopback port; HTTPS with a fresh CA when ``tls_dir``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(behaviour))
    ca_file = None
    scheme = "http"
    if tls_dir is not None:
        ca = make_ca(tls_dir)
        pair = make_certificate(
            ca, tls_dir, "server", "127.0.0.1", ip_sans=("127.0.0.1",), server=True
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pair.cert, pair.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        ca_file, scheme = ca.cert, "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RunningServer(f"{scheme}://127.0.0.1:{server.server_address[1]}", behaviour, ca_file)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def recorder() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append
