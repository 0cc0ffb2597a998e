"""Sinks: where batches of JSON lines go (stdout or an HTTP(S) URL), and how a sink URL is checked and shown."""

from __future__ import annotations

import fcntl
import http.client
import re
import ssl
import sys
import urllib.parse
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # config.py imports this module (check_sink) at runtime
    from .config import RequestLogConfig

STDOUT = "stdout"
TOKEN_ENV = "MODELPILOT_REQUEST_LOG_TOKEN"
DEFAULT_TIMEOUT = 5.0
_URL_USERINFO = re.compile(r"^[a-zA-Z][-+.a-zA-Z0-9]*://[^/?#]*@")
_SINK_RESPONSE_LIMIT = 64 * 1024  # bytes of a sink's answer read (and thrown away) to reuse the connection


def check_sink(sink: str) -> str:
    """`sink` if it is ``stdout`` or an http(s) URL without credentials; the error never echoes the URL."""
    if sink == STDOUT:
        return sink
    if _URL_USERINFO.match(sink):
        raise ValueError(
            f"the request log sink URL must not carry credentials (user:password@host): put a token in {TOKEN_ENV}"
        )
    try:
        parts = urllib.parse.urlsplit(sink)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("the request log sink must be stdout or an http(s):// URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the request log sink must be stdout or an http(s):// URL")
    return sink


def shown_sink(sink: str) -> str:
    """The sink as log lines may show it: scheme, host, port and path; no query (it may hold a key)."""
    if sink == STDOUT:
        return sink
    parts = urllib.parse.urlsplit(sink)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


class Sink(Protocol):
    def write(self, lines: list[bytes]) -> None:
        """Deliver one batch of JSON lines; raise if it was not delivered."""

    def close(self) -> None: ...


class StdoutSink:
    """JSON lines on the process's standard output, one write per batch. With `lock`, a file that the
    server's worker processes share, each batch is written under an flock of it: the workers share one
    standard output, and a pipe keeps a write whole only up to 4 KiB."""

    def __init__(self, lock: str | None = None) -> None:
        self._lock = open(lock, "a") if lock is not None else None  # held open as long as the sink

    def write(self, lines: list[bytes]) -> None:
        if self._lock is None:
            self._write(lines)
            return
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._write(lines)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def _write(self, lines: list[bytes]) -> None:
        stream = sys.stdout
        data = b"".join(lines)
        buffer = getattr(stream, "buffer", None)
        if buffer is not None:
            stream.flush()  # whatever was written as text before goes first
            buffer.write(data)
            buffer.flush()
        else:
            stream.write(data.decode())
            stream.flush()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()


class SinkError(Exception):
    """The sink answered, but not with success."""


class HttpSink:
    """POSTs each batch as ``application/x-ndjson`` to an http(s) URL over one kept-alive connection.

    No redirects are followed and no proxy is used: a token must reach the sink and nothing else.
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        check_sink(url)
        parts = urllib.parse.urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        self._timeout = timeout
        self._headers = {"Content-Type": "application/x-ndjson", "User-Agent": "modelpilot-request-log"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """The open connection (and True), or a new one (and False)."""
        if self._conn is not None:
            return self._conn, True
        if self._https:
            self._conn = http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
            )
        else:
            self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        return self._conn, False

    def write(self, lines: list[bytes]) -> None:
        data = b"".join(lines)
        headers = {**self._headers, "Content-Length": str(len(data))}
        conn, reused = self._connection()
        try:
            conn.request("POST", self._target, body=data, headers=headers)
            response = conn.getresponse()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if not reused:
                raise
            # The sink closed the idle kept-alive connection: once more on a new one.
            conn, _ = self._connection()
            try:
                conn.request("POST", self._target, body=data, headers=headers)
                response = conn.getresponse()
            except BaseException:
                self.close()
                raise
        except BaseException:
            self.close()
            raise
        try:
            response.read(_SINK_RESPONSE_LIMIT)
            if not response.isclosed():  # an answer too long to drain: start afresh next time
                self.close()
        except (OSError, http.client.HTTPException):
            self.close()
        if response.will_close:
            self.close()
        if not 200 <= response.status < 300:
            raise SinkError(f"the sink answered HTTP {response.status}")

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass


def make_sink(config: RequestLogConfig, token: str | None, stdout_lock: str | None = None) -> Sink:
    if config.sink == STDOUT:
        return StdoutSink(stdout_lock)
    return HttpSink(config.sink, token=token, timeout=config.timeout)
