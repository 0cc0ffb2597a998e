"""The Prometheus metrics every modelpilot model server exports, whatever the model.

Names are fixed (docs/metrics.md is their reference). Every series carries the labels ``deployment``,
``model_version`` and ``track`` taken from the pod's environment, so one PromQL query can compare the
stable and the canary track of a ModelDeployment. Request counts and latencies also say which scoring
protocol answered (``protocol``: ``mlflow`` for ``/invocations``, ``v2`` for the Open Inference Protocol).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .baseline import DriftMonitor

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


class ServingMetrics:
    """The metric objects of one server process, in their own registry."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.registry = CollectorRegistry(auto_describe=True)
        ids = identity.values()
        self._requests = Counter(
            "modelpilot_requests",
            "Scoring requests (/invocations, /v2 infer) answered, by protocol and HTTP status code.",
            (*LABELS, "protocol", "code"),
            registry=self.registry,
        )
        duration = Histogram(
            "modelpilot_request_duration_seconds",
            "Time from receiving a scoring request to sending the last byte of its response.",
            (*LABELS, "protocol"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._durations = {protocol: duration.labels(*ids, protocol) for protocol in PROTOCOLS}
        self.prediction_errors = Counter(
            "modelpilot_prediction_errors",
            "Scoring requests whose input parsed but the model's predict raised (schema or model error).",
            LABELS,
            registry=self.registry,
        ).labels(*ids)
        self.in_flight = Gauge(
            "modelpilot_requests_in_flight",
            "Scoring requests being processed now.",
            LABELS,
            registry=self.registry,
        ).labels(*ids)
        self.model_load_seconds = Gauge(
            "modelpilot_model_load_seconds",
            "Seconds it took to load the model at start-up (absent until it loaded).",
            LABELS,
            registry=self.registry,
        )
        # Request logging (serving/request_log/): children only once it is turned on.
        self.request_log_sampled = Counter(
            "modelpilot_request_log_sampled",
            "Scoring requests sampled for the request log: once handled, each is either written or dropped.",
            LABELS,
            registry=self.registry,
        )
        self.request_log_written = Counter(
            "modelpilot_request_log_written",
            "Sampled scoring requests written, with their responses, to the request log's sink.",
            LABELS,
            registry=self.registry,
        )
        self.request_log_dropped = Counter(
            "modelpilot_request_log_dropped",
            "Sampled scoring requests the request log dropped, by reason: queue_full (the sink is slow or down), "
            "sink_error (the sink failed or refused a batch), record_error (a record could not be built).",
            (*LABELS, "reason"),
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
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

    def watch_drift(self, monitor: DriftMonitor) -> None:
        self.registry.register(DriftCollector(monitor, self.identity))


class DriftCollector(Collector):
    """Computes PSI at scrape time, so scoring requests only pay for binning their rows."""

    def __init__(self, monitor: DriftMonitor, identity: Identity) -> None:
        self.monitor = monitor
        self.identity = identity

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        scores = self.monitor.scores()
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
