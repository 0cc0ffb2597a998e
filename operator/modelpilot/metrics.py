"""The operator's own Prometheus metrics (the model server's are in serving/metrics.py)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

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


def serve(address: str) -> None:
    """Serve /metrics on `address` ("host:port") from a background thread."""
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host or "0.0.0.0")
