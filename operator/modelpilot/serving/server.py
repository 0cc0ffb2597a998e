"""The model server: MLflow's scoring protocol and Open Inference (v2), truthful probes, metrics and drift.

    python -m modelpilot.serving.server --model-dir /var/lib/modelpilot/model --port 8080 --host 0.0.0.0

``/invocations``, ``/ping`` and ``/version`` are MLflow's own scoring server
(``mlflow.pyfunc.scoring_server.init``), so request and response formats are exactly those of
``mlflow models serve``. Around it sits a small ASGI layer that

- answers the Open Inference Protocol (KServe / Triton "v2" REST: ``/v2``, ``/v2/health/*``,
  ``/v2/models/{name}[/versions/{version}][/ready|/infer]``) for the same model (``open_inference``);
- answers ``/health`` (liveness) at once and ``/ready`` (readiness) with 503 until the model has loaded,
  so the port opens immediately while a large model loads in the background;
- names who answered on every response: ``modelpilot-model-name``, ``modelpilot-model-version`` and
  ``modelpilot-track`` headers (bodies stay exactly MLflow's);
- times and counts every ``/invocations`` and ``/v2`` infer request by protocol (``/metrics``; probes,
  metadata and scrapes are not counted), a client that left before its answer as 499 rather than as a
  server error;
- answers JSON nested too deeply for MLflow's parser 400, and leaves MLflow's ``stack_trace`` (the
  server's files and code) out of error bodies unless logging is at debug level;
- answers the commonest ``/invocations`` request (JSON rows of numbers for a signature of numeric
  columns) through a fast path that gives MLflow's exact answer without its per-column work
  (``fast_path``), and with ``--max-batch-size`` scores such requests that arrive together in one
  ``predict`` call (``batching``); every other request is MLflow's app's;
- hands the model a thin wrapper whose ``predict`` counts prediction errors and feeds each scored batch to
  the drift monitor;
- when asked (``--log-requests-fraction``), logs a sampled share of scoring requests with their answers
  (``request_log``).

One process, one uvicorn worker by default, like ``mlflow models serve``. With ``--workers N`` this
process supervises N worker processes sharing the port (``workers``), whose metrics and drift windows
are pooled so that any of them answers ``/metrics`` for the whole server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from . import MANIFEST_FILE, MODEL_DIR
from .baseline import BASELINE_FILE, DriftMonitor, ProfileError, load_baseline_profile
from .batching import Batcher, score_one
from .drift_pool import PooledDrift
from .environments import environment_python
from .fast_path import CONTENT_TYPE as FAST_CONTENT_TYPE
from .fast_path import FastPath
from .metrics import Identity, ServingMetrics
from .open_inference import OpenInference, is_infer
from .request_log import PROTOCOL_MLFLOW, RequestLog
from .request_log import add_arguments as add_request_log_arguments
from .request_log import check_arguments as check_request_log_arguments
from .request_log import from_args as request_log_from_args
from .termination import ArgumentParser, write_termination_message
from .workers import Worker, supervise

log = logging.getLogger("modelpilot.serving.server")

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]

_SCORING_CONTENT_TYPES = "application/json, text/csv or application/vnd.apache.parquet"
# nginx's "client closed request": the client left before the answer, so no status code reached it.
CLIENT_CLOSED_REQUEST = 499
# Header values are visible ASCII; anything else (a model name in another script) is percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


class InstrumentedModel:
    """Looks like the PyFuncModel to MLflow's scoring server; counts errors and observes drift."""

    def __init__(self, model: Any, metrics: ServingMetrics, drift: DriftMonitor | None) -> None:
        self._model = model
        self._errors = metrics.prediction_errors
        self._drift = drift
        self.metadata = model.metadata

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            result = self._model.predict(data, params=params)
        except Exception:
            self._errors.inc()
            raise
        self.observe(data)
        return result

    def observe(self, data: Any) -> None:
        """Feed the rows of a scored request to the drift monitor."""
        if self._drift is not None:
            try:
                self._drift.observe(data)
            except Exception:  # drift is advisory: never fail a scored request because of it
                log.exception("drift: failed to profile a request; continuing")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class ServingApp:
    """ASGI application: probes and metrics here, scoring delegated to MLflow's app once loaded."""

    def __init__(
        self,
        model_dir: str,
        metrics: ServingMetrics,
        *,
        drift_window: int = 1000,
        drift_min_rows: int = 50,
        drift: bool = True,
        stack_traces: bool = False,
        on_fatal: Callable[[], None] | None = None,
        request_log: RequestLog | None = None,
        max_batch_size: int = 1,
        max_batch_wait: float = 0.002,
        worker: Worker | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.metrics = metrics
        self.drift_window = drift_window
        self.drift_min_rows = drift_min_rows
        self.drift_enabled = drift
        self.stack_traces = stack_traces  # keep MLflow's stack_trace in error bodies (debug logging)
        self.on_fatal = on_fatal
        self.request_log = request_log  # a sampled share of scoring requests, logged (serving/request_log/)
        self.scoring: Any = None  # MLflow's FastAPI app, once the model is loaded
        self.model: InstrumentedModel | None = None  # what MLflow's app scores with; the v2 infer too
        self.fast_path: FastPath | None = None  # common /invocations requests, answered without MLflow's app
        self.max_batch_size = max_batch_size
        self.max_batch_wait = max_batch_wait
        self.batcher: Batcher | None = None  # fast-path requests scored together (--max-batch-size > 1)
        self.worker = worker  # this process as one of --workers N, sharing metrics, drift and readiness
        self.load_error: str | None = None
        self.timeout: float | None = None  # scoring request timeout, enforced here (see _take_over_timeout)
        self._loader: threading.Thread | None = None
        self._identity_headers = identity_headers(metrics.identity)
        self.open_inference = OpenInference(
            metrics.identity, lambda: self.model if self.scoring is not None else None, lambda: self.timeout
        )

    # -- loading ------------------------------------------------------------------------------------

    def start_loading(self) -> None:
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._loader.start()

    def wait_loaded(self) -> None:
        """Load the model now, until it has loaded or failed to (`load_error`)."""
        self.start_loading()
        self._loader.join()

    def _load(self) -> None:
        from mlflow.pyfunc import scoring_server

        started = time.perf_counter()
        log.info("loading model from %s", self.model_dir)
        try:
            if not os.path.isfile(os.path.join(self.model_dir, "MLmodel")):
                raise FileNotFoundError(f"no MLmodel file in {self.model_dir}: did the fetch step run?")
            model = scoring_server.load_model_with_mlflow_config(self.model_dir)
            scoring = self.mlflow_app(model, self._drift_monitor())
        except Exception as exc:  # report once, clearly, and stop: Kubernetes restarts the pod
            self.load_error = f"cannot load the model in {self.model_dir}: {type(exc).__name__}: {exc}"
            log.error("%s", self.load_error)
            if self.on_fatal is not None:
                self.on_fatal()
            return
        elapsed = time.perf_counter() - started
        self.metrics.model_loaded(elapsed)
        self.scoring = scoring
        if self.worker is not None:
            self.worker.model_loaded()
        log.info("model loaded in %.2fs; ready", elapsed)

    def mlflow_app(self, model: Any, drift: DriftMonitor | None = None) -> Any:
        """MLflow's scoring app for `model`, with its timeout moved here and deep JSON answered 400."""
        from mlflow.pyfunc import scoring_server

        self.model = InstrumentedModel(model, self.metrics, drift)
        self.fast_path = FastPath.for_model(model)
        if self.fast_path is not None and self.max_batch_size > 1:
            self.batcher = Batcher(
                self.fast_path, self.model.observe, max_size=self.max_batch_size, max_wait=self.max_batch_wait
            )
        scoring = scoring_server.init(self.model)
        self.timeout = _take_over_timeout(scoring)
        scoring.add_exception_handler(RecursionError, _too_deeply_nested)
        return scoring

    def _drift_monitor(self) -> DriftMonitor | None:
        if not self.drift_enabled:
            log.info("drift: disabled by --no-drift")
            return None
        path = os.path.join(self.model_dir, BASELINE_FILE)
        if not os.path.isfile(path):
            log.warning(
                "drift: this model version has no baseline profile (%s); no drift metrics will be exported. "
                "Log one at training time with modelpilot.serving.baseline.log_baseline_profile().",
                BASELINE_FILE,
            )
            return None
        worker = self.worker
        window = self.drift_window if worker is None else worker.window_share(self.drift_window)
        try:
            monitor = DriftMonitor(load_baseline_profile(path), window=window, min_rows=self.drift_min_rows)
        except ProfileError as exc:
            log.warning("drift: %s; no drift metrics will be exported", exc)
            return None
        if worker is None:
            self.metrics.watch_drift(monitor.scores)
            log.info("drift: monitoring %d features over the last %d rows", len(monitor.names), monitor.window)
        else:
            pool = PooledDrift(monitor, worker.directory, min_rows=min(self.drift_min_rows, self.drift_window))
            pool.start()
            self.metrics.watch_drift(pool.scores)
            log.info(
                "drift: monitoring %d features over the last %d rows of %d workers, %d of them in this one",
                len(monitor.names), self.drift_window, worker.count, monitor.window,
            )  # fmt: skip
        return monitor

    # -- ASGI ---------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            send = self._signed(send)
            path = scope["path"]
            if path == "/invocations":
                await self._logged(scope, receive, send)
            elif path == "/health":
                await _respond(send, 200, b'{"status": "alive"}\n')
            elif path == "/ready":
                if self.scoring is not None and (self.worker is None or self.worker.all_loaded()):
                    await _respond(send, 200, b'{"status": "ready"}\n')
                else:
                    await _respond(send, 503, b'{"status": "loading"}\n')
            elif path == "/metrics":
                body = await asyncio.to_thread(generate_latest, self.metrics.registry)
                await _respond(send, 200, body, CONTENT_TYPE_LATEST.encode())
            elif path == "/v2" or path.startswith("/v2/"):
                if is_infer(path):
                    await self._logged(scope, receive, send, protocol="v2")
                else:
                    await self.open_inference(scope, receive, send)
            elif self.scoring is not None:
                await self.scoring(scope, receive, send)
            else:
                await _not_loaded(send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _signed(self, send: Send) -> Send:
        """`send` that adds the identity headers to the response start, whoever answers."""
        headers = self._identity_headers
        if not headers:
            return send

        async def send_signed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        return send_signed

    async def _logged(self, scope: Scope, receive: Receive, send: Send, protocol: str = PROTOCOL_MLFLOW) -> None:
        """A scoring request (`_scored`); with request logging on, a sampled share is logged with its answer."""
        if self.request_log is None:
            await self._scored(scope, receive, send, protocol)
        else:
            await self.request_log.serve(
                lambda scope, receive, send: self._scored(scope, receive, send, protocol), scope, receive, send, protocol
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.request_log is not None:  # write what is queued, within a bound
                    await asyncio.to_thread(self.request_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _scored(self, scope: Scope, receive: Receive, send: Send, protocol: str = "mlflow") -> None:
        metrics = self.metrics
        started = time.perf_counter()
        exchange = _Exchange(receive, send if self.stack_traces else _without_stack_traces(send))
        metrics.in_flight.inc()
        try:
            if protocol == "v2":
                await self.open_inference(scope, exchange.receive, exchange.send)
            else:
                await self._answer_scoring(scope, exchange)
        except Exception:
            if not exchange.client_left:
                raise
            # The app fails because its client is gone (ClientDisconnect); there is nobody to answer.
            log.debug("client closed the connection before the answer to %s", scope["path"], exc_info=True)
        finally:
            metrics.in_flight.dec()
            metrics.request_duration(protocol).observe(time.perf_counter() - started)
            metrics.request_counter(exchange.counted_status(), protocol).inc()

    async def _answer_scoring(self, scope: Scope, exchange: _Exchange) -> None:
        receive, send = exchange.receive, exchange.send
        if self.scoring is None:
            await _not_loaded(send)
        elif scope["method"] == "POST" and not _has_content_type(scope):
            await _respond(
                send, 415, _error("BAD_REQUEST", f"a Content-Type header is required: {_SCORING_CONTENT_TYPES}")
            )
        elif self.timeout is None:
            await self._score(scope, receive, send)
        else:
            try:
                async with asyncio.timeout(self.timeout):
                    await self._score(scope, receive, send)
            except TimeoutError:
                if not exchange.started:
                    await _respond(send, 504, b"Request processing time exceeded limit")

    async def _score(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path's answer when it has one; otherwise MLflow's app answers from the start."""
        if self.fast_path is None or scope["method"] != "POST" or _content_type(scope) != FAST_CONTENT_TYPE:
            await self.scoring(scope, receive, send)
            return
        batcher = self.batcher
        if batcher is not None:  # tells the batcher to wait for this request's body
            batcher.arriving += 1
        try:
            messages, body = await _read_body(receive)
        finally:
            if batcher is not None:
                batcher.arriving -= 1
        if body is not None:
            if batcher is not None:
                answer = await batcher.answer(body)
            else:
                answer = await asyncio.to_thread(self._fast_answer, body)
            if answer is not None:
                await _respond_as_mlflow(send, answer)
                return
        await self.scoring(scope, _replayed(messages, receive), send)

    def _fast_answer(self, body: bytes) -> bytes | None:
        """MLflow's answer to `body` through the fast path, or None to let MLflow's app answer."""
        parsed = self.fast_path.parse(body)
        return None if parsed is None else score_one(self.fast_path, self.model.observe, parsed)


class _Exchange:
    """One scoring request's `receive` and `send`, watched: the status answered, and whether the client
    left before the answer was complete (then no status reached it, and it is counted 499)."""

    __slots__ = ("_receive", "_send", "status", "started", "complete", "client_left")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.status = 500  # what the server answers if the app never starts a response
        self.started = False
        self.complete = False
        self.client_left = False

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        # A malformed chunked body ends the same way: uvicorn answers 400 itself and closes the connection.
        if message["type"] == "http.disconnect" and not self.complete:
            self.client_left = True
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        try:
            await self._send(message)
        except OSError:  # how ASGI servers report a connection that is already closed
            self.client_left = True
            raise

    def counted_status(self) -> int:
        return CLIENT_CLOSED_REQUEST if self.client_left else self.status


def _without_stack_traces(send: Send) -> Send:
    """`send` that leaves MLflow's `stack_trace` out of JSON error bodies: it shows the server's files and
    code. Only error answers are held back (to rewrite the body and its length); others pass at once."""
    held: list[dict[str, Any]] = []  # the start of a JSON error answer, then its body parts

    async def send_without_stack_traces(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            if message["status"] >= 400 and _is_json(message.get("headers", ())):
                held.append(message)
                return
        elif held and message["type"] == "http.response.body":
            held.append(message)
            if message.get("more_body", False):
                return
            start, *parts = held
            held.clear()
            body = _without_stack_trace(b"".join(part.get("body", b"") for part in parts))
            await send({**start, "headers": _with_content_length(start.get("headers", ()), len(body))})
            message = {"type": "http.response.body", "body": body}
        await send(message)

    return send_without_stack_traces


def _without_stack_trace(body: bytes) -> bytes:
    """MLflow's JSON error body without its `stack_trace` key, serialised the way MLflow does."""
    if b'"stack_trace"' not in body:
        return body
    try:
        error = json.loads(body)
    except ValueError:
        return body
    if not isinstance(error, dict) or "stack_trace" not in error:
        return body
    del error["stack_trace"]
    return json.dumps(error).encode()


def _is_json(headers: Any) -> bool:
    return any(name == b"content-type" and value.startswith(b"application/json") for name, value in headers)


def _with_content_length(headers: Any, length: int) -> list[tuple[bytes, bytes]]:
    kept = [(name, value) for name, value in headers if name != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


async def _too_deeply_nested(request: Any, exc: RecursionError) -> Any:
    """MLflow parses JSON with `json.loads`, which raises RecursionError on input nested about a thousand
    levels deep: the client's input is at fault, so answer MLflow's 400 rather than a 500."""
    from fastapi.responses import Response
    from mlflow.utils.proto_json_utils import MlflowInvalidInputException

    error = MlflowInvalidInputException(
        f"The request body is nested too deeply to be parsed ({exc}). MLflow's input formats "
        "(dataframe_split, dataframe_records, instances, inputs) need only a few levels of nesting."
    )
    return Response(error.serialize_as_json(), status_code=error.get_http_status_code(), media_type="application/json")


def _take_over_timeout(scoring: Any) -> float | None:
    """Move the request timeout of MLflow's app into our ASGI layer; the timeout in seconds.

    MLflow enforces MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT with an ``@app.middleware("http")`` function,
    which Starlette runs through BaseHTTPMiddleware: a task group and memory streams per request. The
    same rule as an ``asyncio.timeout`` around the call costs nothing, with the same 504 answer. If MLflow
    changes shape, its own middleware is left in place.
    """
    from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT

    kept = [
        m for m in scoring.user_middleware
        if getattr(m.kwargs.get("dispatch"), "__name__", None) != "timeout_middleware"
    ]  # fmt: skip
    if len(kept) != len(scoring.user_middleware) - 1 or scoring.middleware_stack is not None:
        return None
    scoring.user_middleware = kept
    return float(MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


def identity_headers(identity: Identity) -> list[tuple[bytes, bytes]]:
    """Response headers naming the model, version and track that answered; unknown ones are left out."""
    named = (
        (b"modelpilot-model-name", identity.model_name),
        (b"modelpilot-model-version", identity.model_version),
        (b"modelpilot-track", identity.track),
    )
    return [(name, urllib.parse.quote(value, safe=_HEADER_SAFE).encode()) for name, value in named if value]


def _content_type(scope: Scope) -> bytes | None:
    """The first Content-Type header, as Starlette's ``request.headers.get`` reads it."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value
    return None


async def _read_body(receive: Receive) -> tuple[list[dict[str, Any]], bytes | None]:
    """The messages received and the whole body, or None as the body if the client left first."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        if not message.get("more_body", False):
            return messages, b"".join(m.get("body", b"") for m in messages)


def _replayed(messages: list[dict[str, Any]], receive: Receive) -> Receive:
    """`receive` that hands out `messages` again first, so another app reads the request from its start."""
    pending = list(messages)

    async def replay() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


async def _respond_as_mlflow(send: Send, body: bytes) -> None:
    """A 200 JSON answer with the headers MLflow's app (a Starlette Response) sends, in its order."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _has_content_type(scope: Scope) -> bool:
    return any(name == b"content-type" and value.strip() for name, value in scope["headers"])


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode() + b"\n"


async def _not_loaded(send: Send) -> None:
    await _respond(send, 503, _error("NOT_READY", "the model is still loading"))


async def _respond(send: Send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def serving_identity(model_dir: str, env: dict[str, str] | None = None) -> Identity:
    """Who serves, from the pod's environment; the fetch manifest fills in what it does not say."""
    manifest = _manifest(model_dir)
    return Identity.from_env(
        env, model_version=str(manifest.get("version") or ""), model_name=str(manifest.get("name") or "")
    )


def _manifest(model_dir: str) -> dict[str, Any]:
    """The fetch step's manifest, or {} when there is none to read."""
    try:
        with open(os.path.join(model_dir, MANIFEST_FILE), encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _enter_model_environment(model_dir: str, argv: list[str]) -> None:
    """Run on in the environment the fetch step built for the model (requirements policy Install), if it
    built one: this process becomes the environment's interpreter running the same server and arguments."""
    python = environment_python(_manifest(model_dir))
    if python is None or os.path.realpath(sys.prefix) == os.path.realpath(os.path.dirname(os.path.dirname(python))):
        return
    log.info("entering the model's environment %s", os.path.dirname(os.path.dirname(python)))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-m", "modelpilot.serving.server", *argv])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m modelpilot.serving.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=MODEL_DIR, help="directory holding the fetched model (MLmodel)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds before a scoring request is answered 504 (MLflow's MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT)",
    )
    parser.add_argument("--drift-window", type=int, default=1000, help="rows in the drift sliding window")
    parser.add_argument("--drift-min-rows", type=int, default=50, help="rows needed before drift is exported")
    parser.add_argument("--no-drift", action="store_true", help="do not compute input drift")
    parser.add_argument("--access-log", action="store_true", help="log every request (off: metrics cover it)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="debug also keeps MLflow's stack_trace (the server's files and code) in error bodies",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port, metrics and drift (default 1: this process serves alone)",
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=1,
        help="score up to this many requests that arrive together in one predict call (default 1: off)",
    )
    parser.add_argument(
        "--max-batch-wait-ms",
        type=float,
        default=2.0,
        help="how long a batch waits for requests still arriving, at most (default 2 ms)",
    )
    add_request_log_arguments(parser)
    args = parser.parse_args(argv)
    check_request_log_arguments(parser, args)
    if args.drift_window < 1 or args.drift_min_rows < 1:
        parser.error("--drift-window and --drift-min-rows must be positive")
    if args.workers < 1:
        parser.error("--workers must be positive")
    if args.max_batch_size < 1 or not 0 <= args.max_batch_wait_ms <= 1000:
        parser.error("--max-batch-size must be positive and --max-batch-wait-ms between 0 and 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _enter_model_environment(args.model_dir, argv)
    if args.timeout is not None:
        os.environ["MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT"] = str(args.timeout)
    identity = serving_identity(args.model_dir)
    worker = Worker.from_env(args.workers) if args.workers > 1 else None
    if worker is None:
        log.info(
            "serving %s (deployment=%r model=%r version=%r track=%r) on %s:%d%s",
            args.model_dir,
            identity.deployment,
            identity.model_name,
            identity.model_version,
            identity.track,
            args.host,
            args.port,
            f" with {args.workers} workers" if args.workers > 1 else "",
        )
    if args.workers > 1 and worker is None:
        return supervise([sys.executable, "-m", "modelpilot.serving.server", *argv], args.host, args.port, args.workers)
    metrics = ServingMetrics(identity, shared_dir=None if worker is None else worker.directory)
    app = ServingApp(
        args.model_dir,
        metrics,
        drift_window=args.drift_window,
        drift_min_rows=args.drift_min_rows,
        drift=not args.no_drift,
        stack_traces=args.log_level == "debug",
        request_log=request_log_from_args(args, metrics, stdout_lock=None if worker is None else worker.stdout_lock),
        max_batch_size=args.max_batch_size,
        max_batch_wait=args.max_batch_wait_ms / 1000,
        worker=worker,
    )
    if worker is not None and worker.load_first:
        app.wait_loaded()  # a replacement takes connections once it can score: the other workers serve meanwhile
    if app.load_error is None:
        config = uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            lifespan="on",
            access_log=args.access_log,
            log_level=args.log_level,
        )
        server = uvicorn.Server(config)
        app.on_fatal = lambda: setattr(server, "should_exit", True)
        server.run(sockets=None if worker is None else [worker.socket()])
    if app.load_error is not None:
        write_termination_message(app.load_error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
