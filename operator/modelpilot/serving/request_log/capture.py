"""The ASGI capture: the receive and send of one sampled exchange, keeping body chunks as they pass."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from .records import Exchange, too_large

# Triton's binary tensor data extension of the Open Inference Protocol: a body is a JSON part of this many
# bytes followed by raw tensor data.
BINARY_HEADER = b"inference-header-content-length"
CLIENT_CLOSED_REQUEST = 499  # as the server counts a client that left before its answer

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


class Capture:
    """The receive and send of one sampled ASGI exchange, keeping body chunks by reference as they pass."""

    __slots__ = (
        "_receive", "_send", "_limit", "_started", "_timestamp", "request", "request_size", "response",
        "response_size", "response_type", "response_json_length", "status", "complete", "client_left",
    )  # fmt: skip

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self._limit = limit
        self._started = time.perf_counter()
        self._timestamp = time.time()
        self.request: list[bytes] | None = []
        self.request_size = 0
        self.response: list[bytes] | None = []
        self.response_size = 0
        self.response_type = ""
        self.response_json_length: int | None = None
        self.status = 500  # what the server answers if the handler never starts a response
        self.complete = False
        self.client_left = False

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk and self.request is not None:
                self.request_size += len(chunk)
                if self.request_size > self._limit:
                    self.request = None
                else:
                    self.request.append(chunk)
        elif kind == "http.disconnect" and not self.complete:
            self.client_left = True
        return message

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                name = name.lower()
                if name == b"content-type":
                    self.response_type = value.decode("latin-1")
                elif name == BINARY_HEADER:
                    self.response_json_length = _length(value)
        elif kind == "http.response.body":
            chunk = message.get("body", b"")
            if chunk and self.response is not None:
                self.response_size += len(chunk)
                if self.response_size > self._limit:
                    self.response = None
                else:
                    self.response.append(chunk)
            if not message.get("more_body", False):
                self.complete = True
        try:
            await self._send(message)
        except OSError:
            self.client_left = True
            raise

    def exchange(self, scope: Scope, protocol: str) -> Exchange:
        request_type, request_json_length = "", None
        for name, value in scope.get("headers", ()):
            if name == b"content-type":
                request_type = value.decode("latin-1")
            elif name == BINARY_HEADER:
                request_json_length = _length(value)
        limit = self._limit
        return Exchange(
            timestamp=self._timestamp,
            protocol=protocol,
            method=scope.get("method", ""),
            path=scope.get("path", ""),
            status=CLIENT_CLOSED_REQUEST if self.client_left else self.status,
            latency=time.perf_counter() - self._started,
            request_type=request_type,
            request_body=self.request,
            response_type=self.response_type,
            response_body=self.response,
            request_omitted=too_large(limit) if self.request is None else None,
            response_omitted=too_large(limit) if self.response is None else None,
            request_json_length=request_json_length,
            response_json_length=self.response_json_length,
        )


def _length(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None
