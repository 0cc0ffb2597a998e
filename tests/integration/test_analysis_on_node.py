"""Canary analysis end to end on the real node: live traffic through the Service, a real Prometheus that
finds and scrapes the pods, and model versions that are good or bad on their own. A good version waits for
enough traffic, survives an operator kill mid-analysis and is promoted; a version whose model raises on
part of its inputs, and one that is slower, are rolled back with traffic back on the stable version. A
promoted version whose inputs drift while it bakes is rolled back to the version kept for it."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.support.load import Load, post_once_routed
from tests.support.mlflow import ADMIN_PASSWORD, ADMIN_USER, register_pyfunc_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow, pytest.mark.prometheus]

MODEL, NAME = "judged-model", "judged"
# Feature 0 above 1.0 makes the failing model raise: every second request carries such a row.
GOOD_ROWS = {"inputs": [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]}
RAISING_ROWS = {"inputs": [[2.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]}
INTERVAL = "6s"
CHECKS = [
    {"name": "errors", "metric": "errorRate", "max": 0.05},
    {"name": "prediction-errors", "metric": "predictionErrorRate", "max": 0.05},
    # A loaded 2-core machine makes the odd slow answer: one failed measurement is tolerated below.
    {"name": "p99", "metric": "latencyP99", "maxRelativeToStable": 5},
]
SETTLE = 3.0


def rollout(kubectl, ns: str) -> dict:
    return get(kubectl, "mdep", NAME, "-n", ns).get("status", {}).get("rollout") or {}


def analysis_of(kubectl, ns: str) -> dict:
    return rollout(kubectl, ns).get("analysis") or {}


def version_tags(mlflow, name: str, version: str) -> dict[str, str]:
    response = httpx.get(f"{mlflow.uri}/api/2.0/mlflow/model-versions/get", params={"name": name, "version": version},
                         auth=(ADMIN_USER, ADMIN_PASSWORD), timeout=10)  # fmt: skip
    response.raise_for_status()
    return {t["key"]: t["value"] for t in response.json()["model_version"].get("tags", [])}


def test_analysis_promotes_a_good_version_and_rolls_back_bad_ones_with_traffic_back_on_stable(
    kubectl, operator, mlflow, images, pod_mlflow_uri, discovering_prometheus, restricted_namespace
):
    ns = restricted_namespace
    v1 = register_pyfunc_model(mlflow, MODEL, "good", alias="champion", seed=41)
    spec = {
        "steps": [{"setWeight": 50}, {"analysis": {}}],
        "analysis": {
            "prometheus": {"address": discovering_prometheus.url}, "interval": INTERVAL, "count": 2,
            "minSampleSize": 10, "failureLimit": 1, "inconclusiveLimit": 3, "checks": CHECKS, "tagRollbacks": True,
        },
    }  # fmt: skip
    apply_model(kubectl, ns, NAME, pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=1, rollout=spec)
    wait_status(kubectl, operator, ns, NAME, serving(v1), "Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, NAME)}/invocations"
    post_once_routed(url, GOOD_ROWS)

    # A good version, with no traffic yet: no verdict without the minimum sample, so no promotion.
    v2 = register_pyfunc_model(mlflow, MODEL, "good", seed=42)
    set_alias(mlflow, MODEL, "champion", v2)
    held = wait_for(lambda: "waiting for traffic" in (analysis_of(kubectl, ns).get("held") or "") or None,
                    "the analysis to wait for traffic", timeout=240)  # fmt: skip
    assert held and rollout(kubectl, ns)["phase"] == "Paused" and not analysis_of(kubectl, ns).get("measurements")

    with Load(url, [GOOD_ROWS, RAISING_ROWS]) as load:
        # The operator is killed once a measurement is recorded; what was measured survives the restart.
        first = wait_for(lambda: analysis_of(kubectl, ns).get("measurements"), "a first measurement", timeout=120)
        operator.kill()
        try:
            time.sleep(3)
        finally:
            operator.start()
        after = wait_for(lambda: (a := analysis_of(kubectl, ns)) and len(a.get("measurements", [])) > len(first) and a,
                         "a measurement after the restart", timeout=120)  # fmt: skip
        assert after["measurements"][: len(first)] == first
        promoted = wait_status(kubectl, operator, ns, NAME, serving(v2), "version 2 promoted by analysis", timeout=240)
        assert promoted["stable"]["version"] == v2 and promoted["rollout"]["history"][-1]["outcome"] == "Promoted"
        checked = {m["check"] for m in promoted["rollout"]["analysis"]["measurements"] if m["verdict"] == "Pass"}
        assert checked == {"errors", "prediction-errors", "p99"}
        promoted_at = time.monotonic()

        # A version whose model raises on part of its inputs: rolled back, traffic back on version 2.
        v3 = register_pyfunc_model(mlflow, MODEL, "failing", seed=43)
        set_alias(mlflow, MODEL, "champion", v3)
        rolled = wait_for(lambda: (st := get(kubectl, "mdep", NAME, "-n", ns)["status"]).get("phase") == "Degraded" and st,
                          "version 3 to be rolled back", timeout=300)  # fmt: skip
        back_at = time.monotonic()
        degraded = next(c for c in rolled["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "RolledBack"
        assert "failed analysis: prediction-errors" in degraded["message"] and "> max 0.05" in degraded["message"]
        assert rolled["stable"]["version"] == v2 and rolled["rollout"]["rejected"][-1]["version"] == v3
        assert rolled["rollout"]["history"][-1]["outcome"] == "RolledBack"
        wait_for(lambda: kubectl("get", "deployment", f"{NAME}-canary", "-n", ns).returncode != 0, "the canary to go", timeout=60)
        tag = wait_for(lambda: version_tags(mlflow, MODEL, v3).get("modelpilot.io/rolled-back"), "the rollback tag in MLflow", timeout=30)
        assert tag.startswith(f"{ns}/{NAME} at ") and "failed analysis: prediction-errors" in tag
        wait_for(lambda: sum(a.sent > back_at + SETTLE for a in load.answers) >= 40, "traffic after the rollback", timeout=60)
        assert {a.version for a in load.answers if a.sent > back_at + SETTLE} == {v2}

        # A version that is slower on its own: rolled back by the p99 check relative to stable.
        v4 = register_pyfunc_model(mlflow, MODEL, "slow", seed=44, sleep_seconds=0.25)
        set_alias(mlflow, MODEL, "champion", v4)
        slow = wait_for(lambda: (r := rollout(kubectl, ns)).get("phase") == "Aborted" and r.get("canaryVersion") == v4 and r,
                        "version 4 to be rolled back", timeout=300)  # fmt: skip
        slow_back_at = time.monotonic()
        assert slow["rejected"][-1]["version"] == v4 and "p99" in slow["rejected"][-1]["reason"]
        assert "x stable" in slow["rejected"][-1]["reason"]
        wait_for(lambda: sum(a.sent > slow_back_at + SETTLE for a in load.answers) >= 40, "traffic after the rollback", timeout=60)
        assert {a.version for a in load.answers if a.sent > slow_back_at + SETTLE} == {v2}

    # Only the failing canary ever failed a request, with the model's own 400; stable answered every one.
    failures = load.failures()
    assert failures and {(a.status, a.version) for a in failures} == {(400, v3)}
    assert all(a.ok for a in load.answers if a.version == v2 and a.sent > promoted_at)
    reasons = [e["reason"] for e in get(kubectl, "events", "-n", ns, "--field-selector", f"involvedObject.name={NAME}")["items"]]
    assert {"AnalysisPassed", "AnalysisFailed", "RolledBack"} <= set(reasons), reasons
    # Counted since the restart: the promotion of version 2, the rollbacks of versions 3 and 4.
    outcomes = {o: operator.counter("modelpilot_rollouts_total", "outcome", o) for o in ("Promoted", "RolledBack", "Aborted")}
    assert outcomes == {"Promoted": 1, "RolledBack": 2, "Aborted": 0}
    # The operator's own view of its work: queries, registry requests and reconciles, timed.
    assert operator.counter("modelpilot_prometheus_query_duration_seconds_count", "outcome", "ok") > 0
    assert operator.counter("modelpilot_registry_request_duration_seconds_count", "outcome", "2xx") > 0
    assert operator.counter("modelpilot_reconcile_duration_seconds_count", "result", "ok") > 0
    assert operator.counter("modelpilot_modeldeployments", "phase", "Degraded") >= 1



def rows_like_training(seed: int, shift: float = 0.0, bodies: int = 100) -> list[dict]:
    """Request bodies of four rows drawn like the models' training data, moved by `shift`."""
    rng = np.random.default_rng(seed)
    return [{"inputs": (rng.normal(size=(4, 4)) + shift).round(4).tolist()} for _ in range(bodies)]


def replica_sets(kubectl, ns: str, name: str) -> dict[str, tuple[str, int]]:
    """The stable track's ReplicaSets: model version -> (name, desired pods)."""
    found = get(kubectl, "replicasets", "-n", ns, "-l", f"modelpilot.io/track=stable,app.kubernetes.io/instance={name}")
    return {rs["metadata"]["labels"]["modelpilot.io/model-version"]: (rs["metadata"]["name"], rs["spec"]["replicas"])
            for rs in found["items"]}  # fmt: skip


# The long tier: unit tests cover the drift verdict and bake, the default tier a rollback by analysis.
@pytest.mark.long
def test_a_promoted_version_whose_inputs_drift_while_it_bakes_rolls_back_to_the_version_kept_for_it(
    kubectl, operator, mlflow, images, pod_mlflow_uri, discovering_prometheus, restricted_namespace
):
    ns, name, model = restricted_namespace, "baked", "baked-model"
    v1 = register_pyfunc_model(mlflow, model, "good", alias="champion", seed=61, baseline_rows=2000)
    spec = {
        "steps": [{"setWeight": 50}, {"analysis": {}}],
        "bakeTime": "30m",
        "analysis": {
            "prometheus": {"address": discovering_prometheus.url}, "interval": INTERVAL, "count": 1,
            "minSampleSize": 10, "failureLimit": 1, "inconclusiveLimit": 5,
            # errorRate has a relative bound too: while baking there is nothing to compare with, so only its max holds.
            "checks": [{"name": "drift", "metric": "drift", "max": 0.25},
                       {"name": "errors", "metric": "errorRate", "max": 0.05, "maxRelativeToStable": 2}],
        },
    }  # fmt: skip
    apply_model(kubectl, ns, name, pod_mlflow_uri, {"name": model, "alias": "champion"}, replicas=1, rollout=spec)
    wait_status(kubectl, operator, ns, name, serving(v1), "Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, name)}/invocations"
    post_once_routed(url, GOOD_ROWS)

    with Load(url, rows_like_training(seed=7)) as load:
        v2 = register_pyfunc_model(mlflow, model, "good", seed=62, baseline_rows=2000)
        set_alias(mlflow, model, "champion", v2)
        baking = wait_for(lambda: (st := get(kubectl, "mdep", name, "-n", ns)["status"])["rollout"]["phase"] == "Baking"
                          and st["stable"].get("version") == v2 and st, "version 2 to be promoted and bake", timeout=300)  # fmt: skip
        # Promoted on a passing drift check, and served alone; version 1 is kept, scaled down, to go back to.
        passed = [m for m in baking["rollout"]["analysis"]["measurements"] if m["check"] == "drift" and m["verdict"] == "Pass"]
        assert passed and all(m["value"] < 0.25 for m in passed)
        assert baking["rollout"]["stableVersion"] == v1 and not baking.get("canary")
        assert next(c for c in baking["conditions"] if c["type"] == "Ready")["status"] == "True"
        kept = replica_sets(kubectl, ns, name)
        assert kept[v1][1] == 0 and kept[v2][1] == 1

        # Its inputs move away from what it was trained on: the drift check fails while it bakes.
        wait_for(lambda: sum(a.version == v2 for a in load.answers) >= 20, "version 2 answering", timeout=60)
        load.send(rows_like_training(seed=8, shift=3.0))
        rolled = wait_for(lambda: (st := get(kubectl, "mdep", name, "-n", ns)["status"]).get("phase") == "Degraded" and st,
                          "version 2 to be rolled back while baking", timeout=240)  # fmt: skip
        degraded = next(c for c in rolled["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "RolledBack" and "failed analysis: drift" in degraded["message"]
        assert "> max 0.25" in degraded["message"] and "the stable track rolls back to version 1" in degraded["message"]
        assert rolled["rollout"]["history"][-1]["outcome"] == "RolledBack" and rolled["rollout"]["rejected"][-1]["version"] == v2
        assert not any(m["check"] == "errors" and "stable" in m["bound"] for m in rolled["rollout"]["analysis"]["measurements"][-2:])
        back = wait_status(kubectl, operator, ns, name, lambda st: (st.get("stable") or {}).get("version") == v1
                           and not (st.get("stable") or {}).get("updatingTo"), "version 1 back on every pod", timeout=240)  # fmt: skip
        back_at = time.monotonic()
        # The same ReplicaSet that was kept came back: nothing was rebuilt.
        assert replica_sets(kubectl, ns, name)[v1] == (kept[v1][0], 1)
        wait_for(lambda: sum(a.sent > back_at + SETTLE for a in load.answers) >= 20, "traffic after the rollback", timeout=60)
    assert back["phase"] == "Degraded"
    assert {a.version for a in load.answers if a.sent > back_at + SETTLE} == {v1}
    assert load.failures() == []
