"""Request and response logging: a sampled share of scored requests as JSON lines, to stdout or an HTTP sink.

Drift analysis and retraining need the inputs a model really receives. The model server hands each
scoring request to :meth:`RequestLog.serve` (or, for a handler that has the bodies in hand, calls
:meth:`RequestLog.sample` and then :meth:`RequestLog.offer`), and this module does the rest:

- **Sampling** is one random draw per request, before any body is looked at. Only a sampled request's
  body chunks are kept, by reference, as they pass through; nothing is copied, joined or parsed on the
  scoring path.
- **Bounded**: a sampled exchange is put on a fixed-size queue with ``put_nowait``. When the queue is full
  (the sink is slow or down) the record is dropped and counted (``modelpilot_request_log_dropped_total``),
  never waited for, so logging can neither slow nor fail a scoring request. Bodies larger than a limit
  are left out of their record, so the queue's memory is bounded too.
- **A writer thread** takes records off the queue in batches, parses the bodies, redacts the configured
  fields (:func:`redact_request`, :func:`redact_response`, pure functions over every MLflow input format
  and the Open Inference Protocol's tensors), serialises them as JSON lines and writes each batch to
  stdout or POSTs it to an HTTP(S) sink with a timeout. A batch the sink fails is dropped and counted.
- **Credentials** for the sink come from the environment (``MODELPILOT_REQUEST_LOG_TOKEN``, sent as a
  bearer token) and are never printed; a sink URL carrying ``user:password@`` is refused without echoing
  it, and log lines show the sink without its query string.

docs/serving.md ("Request logging") describes the record format.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import io
import json
import logging
import os
import queue
import random
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from .metrics import ServingMetrics

log = logging.getLogger("modelpilot.serving.request_log")

STDOUT = "stdout"
TOKEN_ENV = "MODELPILOT_REQUEST_LOG_TOKEN"
REDACTED = "[REDACTED]"
PROTOCOL_MLFLOW = "mlflow"  # MLflow's scoring protocol: POST /invocations
PROTOCOL_V2 = "v2"  # the Open Inference Protocol (KServe v2): POST /v2/models/<name>/infer

DEFAULT_QUEUE = 1000
DEFAULT_MAX_BODY = 1024 * 1024
DEFAULT_BATCH = 100
DEFAULT_TIMEOUT = 5.0
DEFAULT_LINGER = 1.0  # seconds a batch waits for more records once it has one

# Why a sampled record was not written: the values of the `reason` label of the dropped counter.
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_SINK_ERROR = "sink_error"
DROPPED_RECORD_ERROR = "record_error"
DROP_REASONS = (DROPPED_QUEUE_FULL, DROPPED_SINK_ERROR, DROPPED_RECORD_ERROR)

# Triton's binary tensor data extension of the Open Inference Protocol: a body is a JSON part of this many
# bytes followed by raw tensor data.
BINARY_HEADER = b"inference-header-content-length"
CLIENT_CLOSED_REQUEST = 499  # as the server counts a client that left before its answer
_FAILURE_LOG_SECONDS = 60.0  # a failing sink is reported at most this often
_URL_USERINFO = re.compile(r"^[a-zA-Z][-+.a-zA-Z0-9]*://[^/?#]*@")
_SINK_RESPONSE_LIMIT = 64 * 1024  # bytes of a sink's answer read (and thrown away) to reuse the connection

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestLogConfig:
    """What to log and where; `fraction` 0 turns logging off."""

    fraction: float
    sink: str = STDOUT
    redact: frozenset[str] = frozenset()
    queue_size: int = DEFAULT_QUEUE
    max_body: int = DEFAULT_MAX_BODY
    batch_size: int = DEFAULT_BATCH
    timeout: float = DEFAULT_TIMEOUT
    linger: float = DEFAULT_LINGER

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError("the request log fraction must be between 0 and 1")
        if self.queue_size < 1 or self.batch_size < 1 or self.max_body < 0:
            raise ValueError("the request log queue and batch sizes must be positive, the body limit not negative")
        if self.timeout <= 0 or self.linger < 0:
            raise ValueError("the request log sink timeout must be positive, the linger time not negative")
        check_sink(self.sink)


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


def parse_fields(text: str | Iterable[str]) -> frozenset[str]:
    """Field names from a comma-separated flag value (or a list), blanks left out."""
    items = text.split(",") if isinstance(text, str) else text
    return frozenset(name.strip() for name in items if name.strip())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's --log-requests-* flags."""
    group = parser.add_argument_group("request logging (off unless --log-requests-fraction is above 0)")
    group.add_argument(
        "--log-requests-fraction", type=float, default=0.0, metavar="F",
        help="share of scoring requests to log with their responses, 0 (default: off) to 1",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-sink", default=STDOUT, metavar="SINK",
        help=f"stdout (default) or an http(s) URL that receives POSTed JSON lines; a bearer token from {TOKEN_ENV}",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-redact", default="", metavar="FIELDS",
        help=f"comma-separated input and output field names whose values are logged as {REDACTED}",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-queue", type=int, default=DEFAULT_QUEUE, metavar="N",
        help=f"records waiting for the sink at most; beyond, records are dropped and counted (default {DEFAULT_QUEUE})",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-max-body", type=int, default=DEFAULT_MAX_BODY, metavar="BYTES",
        help=f"larger request or response bodies are logged without the body (default {DEFAULT_MAX_BODY})",
    )  # fmt: skip
    group.add_argument(
        "--log-requests-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
        help=f"bound on connecting to the HTTP sink and on each read of its answer (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error on a bad --log-requests-* value (a sink URL is never echoed)."""
    try:
        config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))


def config_from_args(args: argparse.Namespace) -> RequestLogConfig | None:
    """The configuration the flags ask for, None when logging is off; ValueError on a bad value."""
    if args.log_requests_fraction == 0:
        return None
    return RequestLogConfig(
        fraction=args.log_requests_fraction,
        sink=args.log_requests_sink,
        redact=parse_fields(args.log_requests_redact),
        queue_size=args.log_requests_queue,
        max_body=args.log_requests_max_body,
        timeout=args.log_requests_timeout,
    )


# --------------------------------------------------------------------------------------------------
# Sampling and redaction: pure functions
# --------------------------------------------------------------------------------------------------


def sampled(fraction: float, draw: Callable[[], float] = random.random) -> bool:
    """Whether to log one request: true for a `fraction` of calls. No body is needed to decide."""
    return fraction >= 1.0 or (fraction > 0.0 and draw() < fraction)


def redact_request(body: Any, fields: frozenset[str], protocol: str = PROTOCOL_MLFLOW) -> Any:
    """`body` (a parsed JSON request) with the values of `fields` replaced by REDACTED; `body` is unchanged.

    MLflow's formats: ``dataframe_split`` (by the position of the named column in each row of ``data``),
    ``dataframe_records``, ``instances`` and ``inputs`` (rows as objects, a list of them, or an object of
    columns or named tensors). The Open Inference Protocol: the ``data`` of each tensor of ``inputs`` and
    ``outputs`` whose ``name`` is a field. Top-level keys named as fields are redacted too.
    """
    if not fields:
        return body
    if protocol == PROTOCOL_V2:
        return _redact_v2(body, fields)
    if isinstance(body, list):  # not a format MLflow takes, but rows all the same
        return _redact_rows(body, fields)
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key == "dataframe_split":
            out[key] = _redact_split(value, fields)
        elif key in ("dataframe_records", "instances", "inputs"):
            out[key] = _redact_rows(value, fields)
        else:
            out[key] = REDACTED if key in fields else value
    return out


def redact_response(body: Any, fields: frozenset[str], protocol: str = PROTOCOL_MLFLOW) -> Any:
    """`body` (a parsed JSON response) with the values of `fields` replaced by REDACTED.

    MLflow: ``predictions`` as rows (objects, or a list of them) or an object of columns, or in the
    ``dataframe_split`` shape ``{"columns", "data"}``. The Open Inference Protocol: ``outputs`` tensors by name.
    """
    if not fields:
        return body
    if protocol == PROTOCOL_V2:
        return _redact_v2(body, fields)
    if isinstance(body, list):
        return _redact_rows(body, fields)
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key == "predictions":
            split = isinstance(value, dict) and "columns" in value and "data" in value
            out[key] = _redact_split(value, fields) if split else _redact_rows(value, fields)
        else:
            out[key] = REDACTED if key in fields else value
    return out


def redact_csv(text: str, fields: frozenset[str]) -> str:
    """CSV text with the cells of the columns named in `fields` (by the header row) replaced by REDACTED.

    ValueError when the text does not parse as CSV: then nobody can say which cells to hide.
    """
    if not fields:
        return text
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise ValueError(f"not CSV: {exc}") from None
    if not rows:
        return text
    hidden = {i for i, name in enumerate(rows[0]) if name.strip() in fields}
    if not hidden:
        return text
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow([REDACTED if i in hidden else cell for i, cell in enumerate(row)])
    return out.getvalue()


def _redact_keys(value: Any, fields: frozenset[str]) -> Any:
    """A row object (or an object of columns): the values of its keys named in `fields` redacted."""
    if isinstance(value, dict) and not fields.isdisjoint(value):
        return {key: (REDACTED if key in fields else item) for key, item in value.items()}
    return value


def _redact_rows(value: Any, fields: frozenset[str]) -> Any:
    """Records (a list of row objects), one row object, or an object of columns or named tensors."""
    if isinstance(value, list):
        return [_redact_keys(item, fields) for item in value]
    return _redact_keys(value, fields)


def _redact_split(value: Any, fields: frozenset[str]) -> Any:
    """pandas' split orient, ``{"columns": [...], "data": [[...], ...]}``: cells of the named columns."""
    if not isinstance(value, dict):
        return value
    columns = value.get("columns")
    if not isinstance(columns, list):
        return value
    hidden = {i for i, name in enumerate(columns) if str(name) in fields}
    data = value.get("data")
    if not hidden or not isinstance(data, list):
        return value
    # A row that is not a list (a one-column frame written flat, or a malformed one) is hidden whole.
    rows = [[REDACTED if i in hidden else cell for i, cell in enumerate(row)] if isinstance(row, list) else REDACTED for row in data]
    return {**value, "data": rows}


def _redact_v2(body: Any, fields: frozenset[str]) -> Any:
    """Open Inference Protocol request or response: the data of the tensors whose name is a field."""
    if not isinstance(body, dict):
        return body
    out = {}
    for key, value in body.items():
        if key in ("inputs", "outputs") and isinstance(value, list):
            out[key] = [_redact_tensor(tensor, fields) for tensor in value]
        else:
            out[key] = REDACTED if key in fields else value
    return out


def _redact_tensor(tensor: Any, fields: frozenset[str]) -> Any:
    if isinstance(tensor, dict) and str(tensor.get("name")) in fields and "data" in tensor:
        return {**tensor, "data": REDACTED}
    return tensor


# --------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Exchange:
    """One sampled request and its answer, as the scoring side hands it over: bodies not yet parsed.

    A body is bytes or a list of chunks (joined by the writer), or None with the reason it was left out.
    """

    timestamp: float  # seconds since the epoch when the request arrived
    protocol: str
    method: str
    path: str
    status: int
    latency: float
    request_type: str
    request_body: bytes | Sequence[bytes] | None
    response_type: str
    response_body: bytes | Sequence[bytes] | None
    request_omitted: str | None = None
    response_omitted: str | None = None
    request_json_length: int | None = None  # the binary tensor data extension's JSON part, in bytes
    response_json_length: int | None = None


def build_record(exchange: Exchange, identity: Any, fields: frozenset[str]) -> dict[str, Any]:
    """The JSON-ready record of one exchange: who answered, how, and both bodies, redacted."""
    record: dict[str, Any] = {
        "timestamp": datetime.fromtimestamp(exchange.timestamp, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "id": uuid.uuid4().hex,
        "deployment": identity.deployment,
        "model_name": identity.model_name,
        "model_version": identity.model_version,
        "track": identity.track,
        "protocol": exchange.protocol,
        "method": exchange.method,
        "path": exchange.path,
        "status": exchange.status,
        "latency_seconds": round(exchange.latency, 6),
    }
    protocol = exchange.protocol
    record.update(
        _body_fields(
            "request", exchange.request_body, exchange.request_omitted, exchange.request_type, fields,
            lambda value: redact_request(value, fields, protocol), exchange.request_json_length,
        )
    )  # fmt: skip
    record.update(
        _body_fields(
            "response", exchange.response_body, exchange.response_omitted, exchange.response_type, fields,
            lambda value: redact_response(value, fields, protocol), exchange.response_json_length,
        )
    )  # fmt: skip
    return record


def _body_fields(
    side: str,
    body: bytes | Sequence[bytes] | None,
    omitted: str | None,
    content_type: str,
    fields: frozenset[str],
    redact: Callable[[Any], Any],
    json_length: int | None = None,
) -> dict[str, Any]:
    """``{side: value, side_format: ...}``, or ``{side: None, side_omitted: why}``; ``{side: None}`` if empty.

    JSON bodies are logged parsed (``json``), CSV as text (``csv``), other text as text (``text``) when no
    field is redacted. What cannot be redacted for sure (a body that does not parse while fields are
    redacted, other content types then) and binary bodies such as parquet are left out, and the record
    says why. A body of the binary tensor data extension (`json_length` bytes of JSON, then raw tensor
    data) is logged as its JSON part; the tensor data is left out, and ``side_omitted`` says so.
    """
    if omitted is not None:
        return {side: None, f"{side}_omitted": omitted}
    data = body if isinstance(body, (bytes, bytearray)) or body is None else b"".join(body)
    if not data:
        return {side: None}
    if json_length is not None and 0 <= json_length <= len(data):
        binary = len(data) - json_length
        logged = _body_fields(side, data[:json_length], None, "application/json", fields, redact)
        if binary and logged.get(side) is not None:
            logged[f"{side}_omitted"] = f"{binary} bytes of binary tensor data are not logged"
        return logged
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):
            if fields:
                return {side: None, f"{side}_omitted": "the body is not valid JSON, so it could not be redacted"}
        else:
            return {side: redact(value), f"{side}_format": "json"}
    elif media in ("application/vnd.apache.parquet", "application/x-parquet", "application/parquet"):
        return {side: None, f"{side}_omitted": "parquet bodies are not logged"}
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return {side: None, f"{side}_omitted": f"a binary body ({media or 'no content type'}) is not logged"}
    if media == "text/csv":
        try:
            return {side: redact_csv(text, fields), f"{side}_format": "csv"}
        except ValueError:
            return {side: None, f"{side}_omitted": "the body is not valid CSV, so it could not be redacted"}
    if fields:
        return {side: None, f"{side}_omitted": f"a {media or 'body without content type'} body cannot be redacted"}
    return {side: text, f"{side}_format": "text"}


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One JSON line."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str).encode() + b"\n"


# --------------------------------------------------------------------------------------------------
# Sinks
# --------------------------------------------------------------------------------------------------


class Sink(Protocol):
    def write(self, lines: list[bytes]) -> None:
        """Deliver one batch of JSON lines; raise if it was not delivered."""

    def close(self) -> None: ...


class StdoutSink:
    """JSON lines on the process's standard output, one write per batch."""

    def write(self, lines: list[bytes]) -> None:
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
        pass


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


def make_sink(config: RequestLogConfig, token: str | None) -> Sink:
    if config.sink == STDOUT:
        return StdoutSink()
    return HttpSink(config.sink, token=token, timeout=config.timeout)


# --------------------------------------------------------------------------------------------------
# The log: a bounded queue and its writer thread
# --------------------------------------------------------------------------------------------------


class RequestLog:
    """Samples scoring exchanges and writes them, never holding up the scoring side.

    From an ASGI handler: ``await request_log.serve(handler, scope, receive, send, protocol)``. With the
    bodies in hand: ``if request_log.sample(): request_log.offer(...)``.
    """

    def __init__(
        self,
        config: RequestLogConfig,
        metrics: ServingMetrics,
        *,
        token: str | None = None,
        sink: Sink | None = None,
    ) -> None:
        self.config = config
        self.identity = metrics.identity
        self._secret = token or ""
        self._sink = sink if sink is not None else make_sink(config, token)
        self._queue: queue.Queue[Exchange] = queue.Queue(maxsize=config.queue_size)
        ids = metrics.identity.values()
        self._sampled = metrics.request_log_sampled.labels(*ids)
        self._written = metrics.request_log_written.labels(*ids)
        self._dropped = {reason: metrics.request_log_dropped.labels(*ids, reason) for reason in DROP_REASONS}
        self._stopping = threading.Event()
        self._writer: threading.Thread | None = None
        self._failing_since: float | None = None
        self._failure_logged = 0.0
        self._failed_batches = 0

    # -- the scoring side: cheap, never blocks ---------------------------------------------------------

    def sample(self) -> bool:
        """Whether to log the request about to be answered (one random draw)."""
        return sampled(self.config.fraction)

    def offer(
        self,
        *,
        request_body: bytes | Sequence[bytes] | None,
        response_body: bytes | Sequence[bytes] | None,
        status: int,
        latency: float,
        protocol: str = PROTOCOL_MLFLOW,
        path: str = "/invocations",
        method: str = "POST",
        request_type: str = "application/json",
        response_type: str = "application/json",
        timestamp: float | None = None,
        request_omitted: str | None = None,
        response_omitted: str | None = None,
        request_json_length: int | None = None,
        response_json_length: int | None = None,
    ) -> bool:
        """Queue one sampled exchange for the writer; never blocks, never raises for a full queue.

        Bodies are bytes or lists of chunks, not parsed: the writer parses and redacts them. False when the
        queue is full: the record is dropped and counted.
        """
        limit = self.config.max_body
        if request_omitted is None and request_body is not None and _size(request_body) > limit:
            request_body, request_omitted = None, _too_large(limit)
        if response_omitted is None and response_body is not None and _size(response_body) > limit:
            response_body, response_omitted = None, _too_large(limit)
        exchange = Exchange(
            timestamp=time.time() - latency if timestamp is None else timestamp,
            protocol=protocol,
            method=method,
            path=path,
            status=status,
            latency=latency,
            request_type=request_type,
            request_body=request_body,
            response_type=response_type,
            response_body=response_body,
            request_omitted=request_omitted,
            response_omitted=response_omitted,
            request_json_length=request_json_length,
            response_json_length=response_json_length,
        )
        return self._put(exchange)

    def _put(self, exchange: Exchange) -> bool:
        self._sampled.inc()
        try:
            self._queue.put_nowait(exchange)
        except queue.Full:
            self._dropped[DROPPED_QUEUE_FULL].inc()
            return False
        return True

    async def serve(
        self, handler: Handler, scope: Scope, receive: Receive, send: Send, protocol: str = PROTOCOL_MLFLOW
    ) -> None:
        """Run the ASGI `handler` for one scoring request; if sampled, log it once answered."""
        if not self.sample():
            await handler(scope, receive, send)
            return
        capture = _Capture(receive, send, self.config.max_body)
        try:
            await handler(scope, capture.receive, capture.send)
        finally:
            self._put(capture.exchange(scope, protocol))

    # -- the writer side ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
            self._writer.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most `timeout` seconds for the sink), then stop the writer."""
        self._stopping.set()
        if self._writer is not None:
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.warning("request log: %d records still queued at shutdown were not written", self._queue.qsize())
                return
        self._sink.close()

    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch:
                try:
                    self._write(batch)
                except Exception:  # the writer must outlive anything a record or a sink can do
                    log.exception("request log: failed to write a batch; continuing")
            elif self._stopping.is_set():
                return

    def _next_batch(self) -> list[Exchange]:
        """Up to batch_size exchanges: waits for a first one, then at most `linger` for more."""
        try:
            batch = [self._queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        deadline = time.monotonic() + self.config.linger
        while len(batch) < self.config.batch_size:
            wait = deadline - time.monotonic()
            try:
                if wait <= 0 or self._stopping.is_set():
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=wait))
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[Exchange]) -> None:
        lines = []
        for exchange in batch:
            try:
                lines.append(encode_record(build_record(exchange, self.identity, self.config.redact)))
            except Exception:
                self._dropped[DROPPED_RECORD_ERROR].inc()
                log.debug("request log: cannot build a record; dropped", exc_info=True)
        if not lines:
            return
        try:
            self._sink.write(lines)
        except Exception as exc:
            self._dropped[DROPPED_SINK_ERROR].inc(len(lines))
            self._report_failure(exc, len(lines))
        else:
            self._written.inc(len(lines))
            if self._failing_since is not None:
                log.info("request log: the sink %s takes records again", shown_sink(self.config.sink))
                self._failing_since = None

    def _report_failure(self, exc: Exception, records: int) -> None:
        """A warning when the sink starts failing, then at most one a minute; never the token."""
        now = time.monotonic()
        self._failed_batches += 1
        if self._failing_since is not None and now - self._failure_logged < _FAILURE_LOG_SECONDS:
            return
        if self._failing_since is None:
            self._failing_since = now
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self._secret:
            reason = reason.replace(self._secret, "***")
        log.warning(
            "request log: the sink %s failed (%s); %d records dropped (%d failed batches so far)",
            shown_sink(self.config.sink), reason, records, self._failed_batches,
        )  # fmt: skip
        self._failure_logged = now


class _Capture:
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
            request_omitted=_too_large(limit) if self.request is None else None,
            response_omitted=_too_large(limit) if self.response is None else None,
            request_json_length=request_json_length,
            response_json_length=self.response_json_length,
        )


def _length(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _size(body: bytes | Sequence[bytes]) -> int:
    return len(body) if isinstance(body, (bytes, bytearray)) else sum(len(chunk) for chunk in body)


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit} bytes (--log-requests-max-body)"


def from_args(args: argparse.Namespace, metrics: ServingMetrics, env: Mapping[str, str] | None = None) -> RequestLog | None:
    """The server's request log as its flags configure it (None when off), its writer started."""
    config = config_from_args(args)
    if config is None:
        return None
    env = os.environ if env is None else env
    request_log = RequestLog(config, metrics, token=env.get(TOKEN_ENV) or None)
    request_log.start()
    log.info(
        "request log: %g of scoring requests to %s%s, redacting %s; queue of %d",
        config.fraction, shown_sink(config.sink), " with a bearer token" if env.get(TOKEN_ENV) else "",
        ", ".join(sorted(config.redact)) or "nothing", config.queue_size,
    )  # fmt: skip
    return request_log


