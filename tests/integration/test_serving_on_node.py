"""Models served for real on the real node: the operator's pods fetch the model from the real MLflow
server, answer through the Service's ClusterIP exactly what the model predicts in-process, roll a new
version out under load without a failed request and report a refused model. Prometheus finding and
scraping them through Kubernetes service discovery: test_prometheus_discovery.py."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.load import Load, post_once_routed
from tests.support.mlflow import predict_in_process, register_sklearn_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]

MODEL = "node-model"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4], [1.9, 0.8, -0.6, 0.0], [-1.1, -0.9, 0.2, 0.7]]


@pytest.fixture(scope="module")
def node_model(mlflow) -> str:
    """Versions 1 and 2 of a model, alias champion on version 1."""
    register_sklearn_model(mlflow, MODEL, alias="champion", seed=11)
    register_sklearn_model(mlflow, MODEL, seed=12)
    return MODEL


@pytest.fixture(scope="module")
def served(kubectl, operator, images, node_model, pod_mlflow_uri, module_namespace) -> dict:
    """ModelDeployment `fraud` following alias champion (version 1), two replicas, Ready on the real node."""
    apply_model(kubectl, module_namespace, "fraud", pod_mlflow_uri, {"name": node_model, "alias": "champion"}, replicas=2)
    wait_status(kubectl, operator, module_namespace, "fraud", serving("1"), "fraud Ready on version 1")
    url = f"http://{cluster_ip(kubectl, module_namespace, 'fraud')}/invocations"
    post_once_routed(url, {"inputs": ROWS})
    return {"namespace": module_namespace, "url": url}


def test_the_service_answers_what_the_model_predicts_in_process(kubectl, mlflow, served, node_model):
    ns = served["namespace"]
    response = httpx.post(served["url"], json={"inputs": ROWS}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == predict_in_process(mlflow, node_model, "1", ROWS)
    assert response.headers["modelpilot-model-version"] == "1"
    assert response.headers["modelpilot-track"] == "stable"
    # The stable track also answers on its own Service.
    stable_only = post_once_routed(f"http://{cluster_ip(kubectl, ns, 'fraud-stable')}/invocations", {"inputs": ROWS})
    assert stable_only.headers["modelpilot-track"] == "stable"

    pods = get(kubectl, "pods", "-n", ns, "-l", "modelpilot.io/deployment=fraud")["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == "real-node"
        fetch = pod["status"]["initContainerStatuses"][0]
        assert fetch["name"] == "fetch-model" and fetch["state"]["terminated"]["exitCode"] == 0
    pod = pods[0]["metadata"]["name"]
    fetched = kubectl("logs", pod, "-n", ns, "-c", "fetch-model", check=True).stdout
    assert f"fetched {node_model} version 1" in fetched
    assert mlflow.credentials_env()["MLFLOW_TRACKING_PASSWORD"] not in fetched
    # Non-root, read-only root filesystem, under the namespace's enforced "restricted" profile.
    probe = "import os\ntry:\n open('/probe', 'w')\nexcept OSError as e:\n print(os.getuid(), e.strerror)"
    answer = kubectl("exec", pod, "-n", ns, "-c", "model-server", "--", "python", "-c", probe, check=True).stdout
    assert answer.strip() == "10001 Read-only file system"
    assert get(kubectl, "namespace", ns)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_an_alias_move_rolls_out_under_load_without_a_failed_request(kubectl, operator, mlflow, served, node_model):
    ns = served["namespace"]
    with Load(served["url"], {"inputs": ROWS}) as load:
        wait_for(lambda: len(load.answers) >= 20, "traffic to flow before the alias moves", timeout=30)
        set_alias(mlflow, node_model, "champion", "2")
        wait_status(kubectl, operator, ns, "fraud", serving("2"), "fraud Ready on version 2")
        completed = time.monotonic()
        wait_for(lambda: sum(a.sent > completed for a in load.answers) >= 40, "traffic after the rollout", timeout=60)
    answers = load.answers
    assert load.failures() == [], f"{len(load.failures())} of {len(answers)} requests failed: {load.failures()[:5]}"
    assert {a.version for a in answers} == {"1", "2"}, "both versions answered during the rollout, nothing else"
    late = {a.version for a in answers if a.sent > completed}
    assert late == {"2"}, "once the ModelDeployment reports the rollout complete, only version 2 answers"
    assert httpx.post(served["url"], json={"inputs": ROWS}, timeout=30).json()["predictions"] == predict_in_process(
        mlflow, node_model, "2", ROWS
    )


def test_a_refused_model_is_reported_with_the_fetch_reason(kubectl, operator, mlflow, images, pod_mlflow_uri, restricted_namespace):
    ns = restricted_namespace
    version = register_sklearn_model(mlflow, "refused-model", seed=13, extra_pip_requirements=["modelpilot-absent-package==1.0"])
    apply_model(kubectl, ns, "strict", pod_mlflow_uri, {"name": "refused-model", "version": version},
                runtime={"requirementsPolicy": "Refuse"})  # fmt: skip
    status = wait_status(kubectl, operator, ns, "strict", lambda st: st.get("phase") == "Failed", "strict Failed")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "RequirementsRefused"
    assert "modelpilot-absent-package: wanted ==1.0, found not installed" in status["message"]
    events = get(kubectl, "events", "-n", ns, "--field-selector", "involvedObject.name=strict")["items"]
    assert any(e["reason"] == "RequirementsRefused" and e["type"] == "Warning" for e in events)


def test_a_server_that_cannot_start_is_reported_and_the_old_pods_keep_serving(kubectl, operator, served):
    ns = served["namespace"]
    def set_args(args: list[str] | None) -> None:
        patch = {"spec": {"runtime": {"args": args}}}  # null removes the field again
        kubectl("patch", "mdep", "fraud", "-n", ns, "--type=merge", "-p", json.dumps(patch), check=True)

    with Load(served["url"], {"inputs": ROWS}, workers=2) as load:
        set_args(["--no-such-flag"])
        status = wait_status(kubectl, operator, ns, "fraud", lambda st: st.get("phase") == "Degraded", "fraud Degraded")
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["status"] == "True" and degraded["reason"] == "ModelServerCrashLoop"
        # The server's own last words, taken from its log since it died before writing a termination message.
        assert "unrecognized arguments: --no-such-flag" in degraded["message"]
        assert "replicas of version 2 ready" in status["message"], "the pods of the previous template still serve"
        events = get(kubectl, "events", "-n", ns, "--field-selector", "involvedObject.name=fraud")["items"]
        assert any(e["reason"] == "ModelServerCrashLoop" and e["type"] == "Warning" for e in events)

        set_args(None)
        wait_status(kubectl, operator, ns, "fraud", serving("2"), "fraud Ready again once the spec is fixed")
    assert load.answers and load.failures() == [], f"requests failed while the new pods crashed: {load.failures()[:5]}"
    assert {a.version for a in load.answers} == {"2"}


def test_an_operator_killed_mid_rollout_resumes_it_without_a_failed_request(
    kubectl, operator, mlflow, images, node_model, pod_mlflow_uri, restricted_namespace
):
    ns = restricted_namespace
    apply_model(kubectl, ns, "resumed", pod_mlflow_uri, {"name": node_model, "version": "1"})
    wait_status(kubectl, operator, ns, "resumed", serving("1"), "resumed Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, 'resumed')}/invocations"
    post_once_routed(url, {"inputs": ROWS})
    with Load(url, {"inputs": ROWS}) as load:
        wait_for(lambda: len(load.answers) >= 20, "traffic to flow before the version changes", timeout=30)
        apply_model(kubectl, ns, "resumed", pod_mlflow_uri, {"name": node_model, "version": "2"})
        in_flight = wait_status(
            kubectl, operator, ns, "resumed",
            lambda st: (st.get("stable") or {}).get("updatingTo") == "2" and st.get("phase") == "Progressing",
            "the rollout to version 2 under way", timeout=60,
        )  # fmt: skip
        assert in_flight["stable"]["version"] == "1"  # what serves until the rollout completes
        operator.kill()
        try:
            generation = get(kubectl, "deployment", "resumed", "-n", ns)["metadata"]["generation"]
        finally:
            operator.start()
        final = wait_status(kubectl, operator, ns, "resumed", serving("2"), "resumed Ready on version 2")
        completed = time.monotonic()
        wait_for(lambda: sum(a.sent > completed for a in load.answers) >= 20, "traffic after the rollout", timeout=60)
    assert load.failures() == [], f"{len(load.failures())} of {len(load.answers)} requests failed: {load.failures()[:5]}"
    assert final["stable"]["version"] == "2" and "updatingTo" not in final["stable"]
    # The restarted operator carried on with the same rollout: no new template, no third ReplicaSet.
    assert get(kubectl, "deployment", "resumed", "-n", ns)["metadata"]["generation"] == generation
    replica_sets = get(kubectl, "replicasets", "-n", ns, "-l", "modelpilot.io/deployment=resumed")["items"]
    versions = sorted(rs["spec"]["template"]["metadata"]["labels"]["modelpilot.io/model-version"] for rs in replica_sets)
    assert versions == ["1", "2"]
    assert {a.version for a in load.answers if a.sent > completed} == {"2"}
