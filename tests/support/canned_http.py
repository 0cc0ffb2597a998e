"""A loopback HTTP server that answers every request with whatever the test set last: a status, a content
type and a body, or a body cut short (the connection closes before Content-Length is reached). The answer
may also be a function of the request body, to answer each query its own way."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    # Bytes the answer claims beyond the body: the connection closes before they come.
    missing: int = 0


class CannedServer(ThreadingHTTPServer):
    daemon_threads = True
    answer: Answer | Callable[[bytes], Answer] = Answer()
    paths: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, each answer waits on a delayed ACK.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = self.rfile.read(length)
        self.server.paths.append(self.path)
        answer = self.server.answer
        answer = answer(request) if callable(answer) else answer
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body) + answer.missing))
        if answer.missing:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@contextmanager
def canned_server() -> Iterator[CannedServer]:
    server = CannedServer(("127.0.0.1", 0), _Handler)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
