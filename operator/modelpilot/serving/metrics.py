"""The Prometheus metrics every modelpilot model server exports, whatever the model.

Names are fixed (docs/metrics.md is their reference). Every series carries the labels ``deployment``,
``model_version`` and ``track`` taken from the pod's environment, so one PromQL query can compare the
stable and the canary track of a ModelDeployment. Request counts and latencies also say which scoring
protocol answered (``protocol``: ``mlflow`` for ``/invocations``, ``v2`` for the Open Inference Protocol).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from .workers import read_state

LABELS = ("deployment", "model_version", "track")
# Scoring protocols, the values of the `protocol` label: MLflow's /invocations and the Open Inference
# Protocol's (KServe / Triton "v2") infer endpoints.
PROTOCOLS = ("mlflow", "v2")
# Scoring latency from sub-millisecond tabular models to multi-second deep models; dense between 5 ms
# and 1 s where canary p99 comparisons usually fall.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.035, 0.05, 0.075, 0.1,
    0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


@dataclass(frozen=True)
class Identity:
    """Who is serving: the values of the common labels, and the registered model's name (not a label:
    the deployment already stands for it in PromQL; responses carry it in a header)."""

    deployment: str
    model_version: str
    track: str
    model_name: str = ""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, model_version: str = "", model_name: str = ""
    ) -> Identity:
        """From the pod's environment; `model_version` and `model_name` (from the fetch manifest) fill gaps."""
        env = os.environ if env is None else env
        return cls(
            deployment=env.get("MODELPILOT_DEPLOYMENT", ""),
            model_version=env.get("MODELPILOT_MODEL_VERSION", "") or model_version,
            track=env.get("MODELPILOT_TRACK", "stable") or "stable",
            model_name=env.get("MODELPILOT_MODEL_NAME", "") or model_name,
        )

    def values(self) -> tuple[str, str, str]:
        return (self.deployment, self.model_version, self.track)


DriftScores = Callable[[], "tuple[float, dict[str, float]] | None"]


class ServingMetrics:
    """The metric objects of one server process, and the registry /metrics exposes.

    With `shared_dir` (a worker of ``--workers N``; prometheus_client must have been imported with
    ``PROMETHEUS_MULTIPROC_DIR`` naming it) every metric object writes its values to files there, and the
    registry reads every worker's files: /metrics answers the sum whichever worker answers it.
    """

    def __init__(self, identity: Identity, shared_dir: str | None = None) -> None:
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=True)
        own = self.registry if shared_dir is None else None
        ids = identity.values()
        self._requests = Counter(
            "modelpilot_requests",
            "Scoring requests (/invocations, /v2 infer) answered, by protocol and HTTP status code.",
            (*LABELS, "protocol", "code"),
            registry=own,
        )
        duration = Histogram(
            "modelpilot_request_duration_seconds",
            "Time from receiving a scoring request to sending the last byte of its response.",
            (*LABELS, "protocol"),
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._durations = {protocol: duration.labels(*ids, protocol) for protocol in PROTOCOLS}
        self.prediction_errors = Counter(
            "modelpilot_prediction_errors",
            "Scoring requests whose input parsed but the model's predict raised (schema or model error).",
            LABELS,
            registry=own,
        ).labels(*ids)
        self.in_flight = Gauge(
            "modelpilot_requests_in_flight",
            "Scoring requests being processed now.",
            LABELS,
            registry=own,
            multiprocess_mode="livesum",  # with workers: theirs added up, a dead one's left out
        ).labels(*ids)
        self.model_load_seconds = Gauge(
            "modelpilot_model_load_seconds",
            "Seconds it took to load the model at start-up (absent until it loaded).",
            LABELS,
            registry=own,
            multiprocess_mode="livemax",  # with workers: the slowest live worker's
        )
        # Request logging (serving/request_log/): children only once it is turned on.
        self.request_log_sampled = Counter(
            "modelpilot_request_log_sampled",
            "Scoring requests sampled for the request log: once handled, each is either written or dropped.",
            LABELS,
            registry=own,
        )
        self.request_log_written = Counter(
            "modelpilot_request_log_written",
            "Sampled scoring requests written, with their responses, to the request log's sink.",
            LABELS,
            registry=own,
        )
        self.request_log_dropped = Counter(
            "modelpilot_request_log_dropped",
            "Sampled scoring requests the request log dropped, by reason: queue_full (the sink is slow or down), "
            "sink_error (the sink failed or refused a batch), record_error (a record could not be built).",
            (*LABELS, "reason"),
            registry=own,
        )
        if shared_dir is None:
            ProcessCollector(registry=self.registry)
        else:
            MultiProcessCollector(self.registry, shared_dir)
            self.registry.register(WorkersCollector(shared_dir, identity))
        self._by_code: dict[tuple[str, int], object] = {}
        self._codes_lock = threading.Lock()
        # Export the common codes at zero from the start, so rate() works from the first scrape.
        for protocol in PROTOCOLS:
            for code in (200, 400, 500):
                self.request_counter(code, protocol)

    def request_duration(self, protocol: str = "mlflow"):
        """The latency histogram child of one protocol."""
        return self._durations[protocol]

    def request_counter(self, code: int, protocol: str = "mlflow"):
        """The (cached) child counter of one protocol and status code: no label lookup per request."""
        key = (protocol, code)
        child = self._by_code.get(key)
        if child is None:
            if protocol not in PROTOCOLS:
                raise ValueError(f"unknown protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
            with self._codes_lock:
                child = self._by_code.get(key)
                if child is None:
                    child = self._requests.labels(*self.identity.values(), protocol, str(code))
                    self._by_code[key] = child
        return child

    def model_loaded(self, seconds: float) -> None:
        self.model_load_seconds.labels(*self.identity.values()).set(seconds)

    def watch_drift(self, scores: DriftScores) -> None:
        """Export drift as `scores` computes it at scrape time (a DriftMonitor's, or a pool's)."""
        self.registry.register(DriftCollector(scores, self.identity))


class DriftCollector(Collector):
    """Computes PSI at scrape time, so scoring requests only pay for binning their rows."""

    def __init__(self, scores: DriftScores, identity: Identity) -> None:
        self.scores = scores
        self.identity = identity

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        scores = self.scores()
        if scores is None:  # too few rows in the window for a meaningful score: export nothing
            return
        overall, per_feature = scores
        ids = list(self.identity.values())
        score = GaugeMetricFamily(
            "modelpilot_drift_score",
            "Mean population stability index of the scoring window's features against the training baseline.",
            labels=LABELS,
        )
        score.add_metric(ids, overall)
        yield score
        feature = GaugeMetricFamily(
            "modelpilot_feature_drift",
            "Population stability index of one feature in the scoring window against the training baseline.",
            labels=(*LABELS, "feature"),
        )
        for name, value in per_feature.items():
            feature.add_metric([*ids, name], value)
        yield feature


# process_* series of several processes: these two are taken from the oldest, or the lowest limit; the
# others are added up.
_NOT_ADDED = {"process_start_time_seconds": min, "process_max_fds": min}


class WorkersCollector(Collector):
    """With workers: how many were restarted, and the process_* series of the whole server (the
    supervisor and its live workers), as the supervisor's state file names them."""

    def __init__(self, directory: str, identity: Identity) -> None:
        self.directory = directory
        self.identity = identity

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        state = read_state(self.directory)
        restarts = CounterMetricFamily(
            "modelpilot_worker_restarts",
            "Worker processes of this server that died (killed, crashed) and were replaced.",
            labels=LABELS,
        )
        restarts.add_metric(list(self.identity.values()), state.restarts)
        yield restarts
        totals: dict[str, tuple[Metric, float]] = {}
        for pid in state.pids:
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                value = family.samples[0].value
                if family.name in totals:
                    value = _NOT_ADDED.get(family.name, sum)((totals[family.name][1], value))
                totals[family.name] = (family, value)
        for family, value in totals.values():
            if family.name == "process_cpu_seconds":
                value += state.reaped_cpu_seconds
            merged = Metric(family.name, family.documentation, family.type)
            merged.add_sample(family.samples[0].name, {}, value)
            yield merged
