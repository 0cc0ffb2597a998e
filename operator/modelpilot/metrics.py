"""The operator's own Prometheus metrics (the model server's are in serving/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "modelpilot_reconciles_total",
    "Reconciles of ModelDeployments started, by what triggered them: a spec change, the periodic resync, "
    "a change of an owned object or pod, the timer of a rollout step, or a manual rollout request.",
    ["trigger"],
)

ROLLOUTS = Counter(
    "modelpilot_rollouts_total",
    "Canary rollouts that ended, by outcome: Promoted, Aborted (by a request), RolledBack (by the analysis), "
    "Abandoned (the reference moved back to the stable version) or Replaced (a newer version took its place).",
    ["outcome"],
)
LEADER = Gauge(
    "modelpilot_leader",
    "1 while this replica reconciles (with leader election: while it holds the Lease); 0 while it stands by.",
)
# The rollout Event that ends a rollout, and the outcome it counts as.
ROLLOUT_ENDINGS = {
    "RolloutCompleted": "Promoted",
    "RolloutAborted": "Aborted",
    "RolledBack": "RolledBack",
    "RolloutAbandoned": "Abandoned",
    "CanaryReplaced": "Replaced",
}


RECONCILE_SECONDS = Histogram(
    "modelpilot_reconcile_duration_seconds",
    "Reconciles by result and how long they took, the wait for their object's lock and the registry included: "
    "ok, retry (a failure waiting may cure, retried with backoff), error (an exception), skipped (nothing to do).",
    ["result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge("modelpilot_reconciles_in_flight", "Reconciles under way, those waiting for their object's lock included.")
WAKEUPS_PENDING = Gauge("modelpilot_wakeups_pending", "ModelDeployments waiting for a timed reconcile (a pause ending, a measurement due).")
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
REGISTRY_REQUESTS = Histogram(
    "modelpilot_registry_request_duration_seconds",
    "MLflow requests by outcome (2xx, 4xx, 5xx, or unreachable: refused, timed out) and how long they took.",
    ["outcome"],
    buckets=REQUEST_BUCKETS,
)
PROMETHEUS_QUERIES = Histogram(
    "modelpilot_prometheus_query_duration_seconds",
    "Prometheus queries of canary analysis by outcome (ok, or error) and how long they took.",
    ["outcome"],
    buckets=REQUEST_BUCKETS,
)
POOL_SIZE = Gauge(
    "modelpilot_pool_size",
    "Workers of each bounded pool: kube (threads calling the Kubernetes API), registry (MLflow asks at once).",
    ["pool"],
)
POOL_WAITING = Gauge("modelpilot_pool_waiting", "Work waiting for a free worker of the pool.", ["pool"])
POOL_BUSY = Gauge("modelpilot_pool_busy", "Workers of the pool at work.", ["pool"])
PHASES = ("Pending", "Progressing", "Ready", "Degraded", "Failed")
MODELDEPLOYMENTS = Gauge("modelpilot_modeldeployments", "ModelDeployments by phase, as this replica last reconciled them.", ["phase"])
CANARY_WEIGHT = Gauge(
    "modelpilot_canary_weight", "Percent of requests the canary takes now (0 with no canary).", ["namespace", "name"]
)
CANARY_STEP = Gauge(
    "modelpilot_canary_step", "Index of the canary's current step, while a canary runs.", ["namespace", "name"]
)


class ObjectGauges:
    """The per-ModelDeployment series: phase counts, canary weight and step, kept to the objects that exist."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, str], str] = {}
        self._stepping: set[tuple[str, str]] = set()
        for phase in PHASES:
            MODELDEPLOYMENTS.labels(phase=phase).set(0)

    def record(self, namespace: str, name: str, phase: str, weight: int, step: int | None) -> None:
        key = (namespace, name)
        self._move(self._phases.get(key), phase)
        self._phases[key] = phase
        CANARY_WEIGHT.labels(namespace=namespace, name=name).set(weight)
        if step is None:
            self._drop_step(key)
        else:
            CANARY_STEP.labels(namespace=namespace, name=name).set(step)
            self._stepping.add(key)

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        phase = self._phases.pop(key, None)
        if phase is not None:
            self._move(phase, None)
            CANARY_WEIGHT.remove(namespace, name)
        self._drop_step(key)

    def _drop_step(self, key: tuple[str, str]) -> None:
        if key in self._stepping:
            self._stepping.discard(key)
            CANARY_STEP.remove(*key)

    @staticmethod
    def _move(old: str | None, new: str | None) -> None:
        """One object from phase `old` to `new` (None: not counted). By steps, not a recount of every
        object: a reconcile's cost must not grow with the number of ModelDeployments."""
        if old == new:
            return
        if old in PHASES:
            MODELDEPLOYMENTS.labels(phase=old).dec()
        if new in PHASES:
            MODELDEPLOYMENTS.labels(phase=new).inc()


def serve(address: str) -> None:
    """Serve /metrics on `address` ("host:port") from a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
