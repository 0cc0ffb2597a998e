"""Two operator replicas with leader election on the real node, under live traffic through the Service:
only the one holding the Lease reconciles; killing it in the middle of a canary's timed pause hands over
to the standby, which goes on from where the rollout was (the step not repeated, the pause neither
restarted nor lost) and promotes without a failed request. The handover time is printed."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import OPERATOR_NAMESPACE, operator_kubeconfig, running_operator
from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_sklearn_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.waiting import wait_for
from tests.support.figures import report_figure

# The long tier: the default tier fails a leader over with the chart-installed operator (test_operator_in_cluster).
pytestmark = [pytest.mark.long, pytest.mark.cluster, pytest.mark.mlflow]

MODEL = "ha-model"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]
PAUSE = 40


@pytest.fixture(scope="module")
def replicas(kube_cluster, kubectl, crds, tmp_path_factory):
    kubeconfig = operator_kubeconfig(kube_cluster, kubectl, "--set", "replicas=2")
    # As the chart runs them: the Lease of the release's full name, in the release namespace.
    election = {"MODELPILOT_LEADER_ELECTION": "true", "POD_NAMESPACE": OPERATOR_NAMESPACE,
                "MODELPILOT_LEADER_ELECTION_LEASE": "modelpilot"}  # fmt: skip
    with running_operator(kubeconfig, tmp_path_factory.mktemp("first"), **election) as first, \
            running_operator(kubeconfig, tmp_path_factory.mktemp("second"), **election) as second:  # fmt: skip
        yield first, second


@pytest.fixture(scope="module")
def operator(replicas):
    """The replica whose log a failed wait shows: the first, which usually leads."""
    return replicas[0]


def test_killing_the_leader_mid_canary_hands_over_to_the_standby_without_losing_the_rollout(
    kubectl, replicas, operator, mlflow, images, pod_mlflow_uri, restricted_namespace
):
    ns, name = restricted_namespace, "ha"
    leader = wait_for(lambda: (lead := [p for p in replicas if p.total("modelpilot_leader") == 1]) and lead,
                      "a replica to lead", timeout=60)  # fmt: skip
    assert len(leader) == 1, "exactly one replica leads"
    leader, standby = leader[0], next(p for p in replicas if p is not leader[0])
    v1 = register_sklearn_model(mlflow, MODEL, alias="champion", seed=71)
    v2 = register_sklearn_model(mlflow, MODEL, seed=72)
    apply_model(kubectl, ns, name, pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=2,
                rollout={"steps": [{"setWeight": 50}, {"pause": {"duration": f"{PAUSE}s"}}]})  # fmt: skip
    wait_status(kubectl, leader, ns, name, serving(v1), "Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, name)}/invocations"
    post_once_routed(url, {"inputs": ROWS})

    def rollout() -> dict:
        return get(kubectl, "mdep", name, "-n", ns).get("status", {}).get("rollout") or {}

    with Load(url, {"inputs": ROWS}) as load:
        set_alias(mlflow, MODEL, "champion", v2)
        paused = wait_for(lambda: (r := rollout()).get("phase") == "Paused" and r.get("stepIndex") == 1 and r,
                          "the canary to reach its pause", timeout=300)  # fmt: skip
        assert standby.total("modelpilot_reconciles_total") == 0, "the standby reconciles nothing"
        time.sleep(5)
        leader.kill()
        killed = time.monotonic()
        wait_for(lambda: standby.total("modelpilot_leader") == 1, "the standby to take the lease", timeout=60)
        handover = time.monotonic() - killed
        resumed = wait_for(lambda: standby.total("modelpilot_reconciles_total") > 0 and rollout(), "the new leader to reconcile", timeout=30)
        reconciling = time.monotonic() - killed
        # The pause goes on from when it started, under the new leader.
        assert (resumed["stepIndex"], resumed["stepStartedAt"]) == (1, paused["stepStartedAt"]), resumed
        done = wait_status(kubectl, standby, ns, name, serving(v2), "version 2 promoted by the new leader", timeout=240)
    report_figure(f"leader killed mid-pause: the standby led after {handover:.1f} s and reconciled after {reconciling:.1f} s")
    assert done["rollout"]["history"][-1]["outcome"] == "Promoted"
    events = get(kubectl, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
    pause_steps = [e for e in events if e["reason"] == "RolloutStep" and "step 2/2" in e["message"]]
    assert len(pause_steps) == 1 and pause_steps[0].get("count", 1) == 1, "the pause step was entered once"
    assert load.failures() == [], load.failures()[:5]
