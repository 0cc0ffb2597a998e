"""The log: sampling, a bounded queue and the writer thread that builds records and hands them to the sink."""

from __future__ import annotations

import argparse
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from ..metrics import ServingMetrics
from .capture import Capture, Handler, Receive, Scope, Send
from .config import RequestLogConfig, config_from_args
from .records import Exchange, body_size, build_record, encode_record, too_large
from .redaction import PROTOCOL_MLFLOW
from .sinks import TOKEN_ENV, Sink, make_sink, shown_sink

log = logging.getLogger("modelpilot.serving.request_log")

# Why a sampled record was not written: the values of the `reason` label of the dropped counter.
DROPPED_QUEUE_FULL = "queue_full"
DROPPED_SINK_ERROR = "sink_error"
DROPPED_RECORD_ERROR = "record_error"
DROP_REASONS = (DROPPED_QUEUE_FULL, DROPPED_SINK_ERROR, DROPPED_RECORD_ERROR)
_FAILURE_LOG_SECONDS = 60.0  # a failing sink is reported at most this often


def sampled(fraction: float, draw: Callable[[], float] = random.random) -> bool:
    """Whether to log one request: true for a `fraction` of calls. No body is needed to decide."""
    return fraction >= 1.0 or (fraction > 0.0 and draw() < fraction)


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
        if request_omitted is None and request_body is not None and body_size(request_body) > limit:
            request_body, request_omitted = None, too_large(limit)
        if response_omitted is None and response_body is not None and body_size(response_body) > limit:
            response_body, response_omitted = None, too_large(limit)
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
        capture = Capture(receive, send, self.config.max_body)
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


def from_args(
    args: argparse.Namespace,
    metrics: ServingMetrics,
    env: Mapping[str, str] | None = None,
    stdout_lock: str | None = None,
) -> RequestLog | None:
    """The server's request log as its flags configure it (None when off), its writer started; `stdout_lock`
    is the file the server's workers lock to write to their shared standard output (see StdoutSink)."""
    config = config_from_args(args)
    if config is None:
        return None
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV) or None
    request_log = RequestLog(config, metrics, token=token, sink=make_sink(config, token, stdout_lock))
    request_log.start()
    log.info(
        "request log: %g of scoring requests to %s%s, redacting %s; queue of %d",
        config.fraction, shown_sink(config.sink), " with a bearer token" if env.get(TOKEN_ENV) else "",
        ", ".join(sorted(config.redact)) or "nothing", config.queue_size,
    )  # fmt: skip
    return request_log
