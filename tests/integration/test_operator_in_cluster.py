"""The operator as users install it: `helm install` of the chart runs the operator image on the real node,
under the chart's ServiceAccount, RBAC and the Pod Security "restricted" profile; that operator serves a
ModelDeployment for real, its model answering through the Service's ClusterIP; `helm uninstall` removes
the operator and leaves the ModelDeployment, and what serves it, in place.

This module never uses the `operator` fixture, so the only operator acting is the one Helm installs."""

from __future__ import annotations

import json
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import yaml

from tests.cluster.launcher import default_bin_dir
from tests.cluster.node import NODE_NAME
from tests.conftest import fresh_namespace
from tests.support.load import post_once_routed
from tests.support.mlflow import register_sklearn_model
from tests.support.waiting import wait_for
from tests.support.figures import report_figure

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]

CHART = Path(__file__).resolve().parents[2] / "helm" / "modelpilot"
MODEL = "in-cluster-model"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"
OPERATOR_START_TIMEOUT = 180  # image already on the node; Python imports on a shared 2-core machine
MODEL_START_TIMEOUT = 300  # resolve, fetch init container, model load, on the same machine


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        """The chart's name for the Deployment, ServiceAccount, ClusterRole and binding."""
        return f"{self.name}-modelpilot"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/instance={self.name}"


def helm(kube_cluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(default_bin_dir() / "helm"), f"--kubeconfig={kube_cluster.kubeconfig}", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def get(kubectl, *args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json", check=True).stdout)


@pytest.fixture
def operator_namespace(kube_api, kubectl) -> Iterator[str]:
    """Where the chart goes; it enforces "restricted" too, so the operator's own pod must pass it."""
    for name in fresh_namespace(kube_api):
        kubectl("label", "namespace", name, RESTRICTED, check=True)
        yield name


@pytest.fixture
def release(kube_cluster, operator_namespace) -> Iterator[Release]:
    installed = Release(f"mp-{operator_namespace}", operator_namespace)
    yield installed
    # The test uninstalls it itself; this covers a test that failed before it got there.
    helm(kube_cluster, "uninstall", installed.name, "-n", installed.namespace, "--ignore-not-found")


def cluster_state(kubectl, release: Release, model_namespace: str) -> str:
    """What a failed run needs to be diagnosed: the operator's log, and what Kubernetes says about its
    pod and about the model's objects."""
    ops, sel = release.namespace, release.selector
    sections = {
        "operator log": kubectl("logs", "-n", ops, "-l", sel, "--tail=150"),
        "operator log, previous container": kubectl("logs", "-n", ops, "-l", sel, "--previous", "--tail=50"),
        "operator deployment and pods": kubectl("describe", "deployments,pods", "-n", ops, "-l", sel),
        "model namespace": kubectl("describe", "modeldeployments,deployments,services,pods", "-n", model_namespace),
        "model namespace events": kubectl("get", "events", "-n", model_namespace, "--sort-by=.lastTimestamp"),
    }
    return "\n\n".join(f"----- {title} -----\n{(out.stdout + out.stderr).strip()}" for title, out in sections.items())


@contextmanager
def explained_by(state: Callable[[], str]) -> Iterator[None]:
    """A failed check inside says what it expected, then what the cluster looked like."""
    try:
        yield
    except (AssertionError, subprocess.CalledProcessError, subprocess.TimeoutExpired, httpx.HTTPError) as exc:
        output = getattr(exc, "stderr", None) or ""
        raise AssertionError(f"{exc}\n{output}\n{state()}") from exc


def install(kube_cluster, release: Release, images: dict[str, str], *values: str) -> None:
    repository, _, tag = images["operator"].rpartition(":")
    installed = helm(
        kube_cluster, "install", release.name, str(CHART), "-n", release.namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        # The images exist only in the node's containerd: there is no registry to pull from.
        "--set", "image.pullPolicy=Never",
        "--set", f"runtimeImage={images['runtime']}",
        "--set", "resolveIntervalSeconds=5",
        # The suite's own CRD (the `crds` fixture) serves every module; a release may not take it over.
        "--set", "crds.install=false",
        *values,
    )  # fmt: skip
    assert installed.returncode == 0, f"helm install failed:\n{installed.stdout}{installed.stderr}"


def wait_operator_available(kubectl, release: Release, replicas: int = 1) -> list[dict]:
    """The operator's Deployment Available, and its pods."""
    waited = kubectl(
        "wait", f"deployment/{release.fullname}", "-n", release.namespace, "--for=condition=Available",
        f"--timeout={OPERATOR_START_TIMEOUT}s", timeout=OPERATOR_START_TIMEOUT + 30,
    )  # fmt: skip
    assert waited.returncode == 0, f"operator Deployment not Available: {waited.stdout}{waited.stderr}"
    pods = wait_for(lambda: (found := get(kubectl, "pods", "-n", release.namespace, "-l", release.selector)["items"])
                    and len(found) == replicas and found, f"{replicas} operator pods", timeout=60)  # fmt: skip
    return pods


def apply_model(kubectl, namespace: str, name: str, tracking_uri: str, version: str) -> None:
    body = {
        "apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"name": MODEL, "version": version},
                 "mlflow": {"trackingUri": tracking_uri, "credentialsSecret": "mlflow-creds"}},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=True)


def wait_ready(kubectl, namespace: str, name: str, version: str) -> dict:
    def ready_status():
        status = get(kubectl, "mdep", name, "-n", namespace).get("status", {})
        serving = status.get("phase") == "Ready" and (status.get("model") or {}).get("version") == version
        return status if serving else None

    return wait_for(ready_status, f"{namespace}/{name} Ready on version {version}", timeout=MODEL_START_TIMEOUT)


def assert_model_pods_run_on_the_real_node(kubectl, namespace: str, name: str) -> None:
    pods = get(kubectl, "pods", "-n", namespace, "-l", f"modelpilot.io/deployment={name}")["items"]
    assert pods, f"no model pods of {name}"
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE_NAME, pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running", (pod["metadata"]["name"], pod["status"]["phase"])


def assert_answers(url: str, version: str) -> None:
    response = post_once_routed(url, {"inputs": ROWS})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == len(ROWS)
    assert response.headers["modelpilot-model-version"] == version


def uninstall(kube_cluster, kubectl, release: Release) -> None:
    removed = helm(kube_cluster, "uninstall", release.name, "-n", release.namespace, "--wait", "--timeout=120s", timeout=150)
    assert removed.returncode == 0, f"helm uninstall failed:\n{removed.stdout}{removed.stderr}"
    wait_for(
        lambda: not get(kubectl, "pods", "-n", release.namespace, "-l", release.selector)["items"],
        "the operator's pod to be gone", timeout=120,
    )  # fmt: skip
    left = kubectl("get", "deployment,serviceaccount", release.fullname, "-n", release.namespace)
    assert "NotFound" in left.stderr and not left.stdout, left.stdout
    rbac = kubectl("get", "clusterrole,clusterrolebinding", release.fullname)
    assert "NotFound" in rbac.stderr and not rbac.stdout, rbac.stdout


def test_the_helm_installed_operator_serves_a_model_on_the_real_node(
    kube_cluster, kubectl, images, mlflow, host_address, release, restricted_namespace, crds
):
    ns, name = restricted_namespace, "served"
    with explained_by(lambda: cluster_state(kubectl, release, ns)):
        install(kube_cluster, release, images)
        [operator_pod] = wait_operator_available(kubectl, release)
        tested = helm(kube_cluster, "test", release.name, "-n", release.namespace, timeout=240)
        assert tested.returncode == 0, f"helm test failed:\n{tested.stdout}{tested.stderr}"
        assert operator_pod["spec"]["nodeName"] == NODE_NAME
        assert operator_pod["spec"]["serviceAccountName"] == release.fullname
        assert operator_pod["status"]["containerStatuses"][0]["restartCount"] == 0

        version = register_sklearn_model(mlflow, MODEL, seed=21)
        apply_model(kubectl, ns, name, mlflow.uri.replace("127.0.0.1", host_address), version)
        wait_ready(kubectl, ns, name, version)
        assert_model_pods_run_on_the_real_node(kubectl, ns, name)
        url = f"http://{get(kubectl, 'service', name, '-n', ns)['spec']['clusterIP']}/invocations"
        assert_answers(url, version)
        # The operator names itself in its Events by host name: in a pod, the pod's name.
        events = get(kubectl, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]
        reporters = {e.get("reportingInstance") for e in events}
        assert operator_pod["metadata"]["name"] in reporters, f"the in-cluster operator served it; reporters: {reporters}"

        uninstall(kube_cluster, kubectl, release)
        model = get(kubectl, "mdep", name, "-n", ns)
        assert not model["metadata"].get("finalizers"), "nothing left that only the operator could remove"
        # What serves does not depend on the operator being there.
        assert_answers(url, version)


def lease_holder(kubectl, release: Release) -> str | None:
    found = kubectl("get", "lease", release.fullname, "-n", release.namespace, "-o", "json")
    return json.loads(found.stdout)["spec"].get("holderIdentity") if found.returncode == 0 else None


def test_two_replicas_serving_one_namespace_with_monitors_elect_a_leader_and_fail_over(
    kube_cluster, kubectl, images, mlflow, host_address, release, restricted_namespace, crds, monitoring_crds
):
    ns, name = restricted_namespace, "guarded"
    with explained_by(lambda: cluster_state(kubectl, release, ns)):
        install(kube_cluster, release, images, "--set", "replicas=2", "--set", f"watchNamespaces={{{ns}}}",
                "--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true",
                "--set", "prometheusRule.enabled=true", "--set", "grafanaDashboard.enabled=true")  # fmt: skip
        pods = {p["metadata"]["name"] for p in wait_operator_available(kubectl, release, replicas=2)}
        holder = wait_for(lambda: lease_holder(kubectl, release), "a replica to take the lease", timeout=120)
        [leader] = [p for p in pods if holder.startswith(f"{p}-")]
        ops = release.namespace
        for kind in ("servicemonitor", "podmonitor", "prometheusrule", "poddisruptionbudget"):
            assert get(kubectl, kind, "-n", ops, "-l", release.selector)["items"], f"no {kind}"
        assert get(kubectl, "configmap", "-n", ops, "-l", "grafana_dashboard=1")["items"], "no dashboard ConfigMap"

        v1 = register_sklearn_model(mlflow, MODEL, seed=22)
        uri = mlflow.uri.replace("127.0.0.1", host_address)
        apply_model(kubectl, ns, name, uri, v1)
        wait_ready(kubectl, ns, name, v1)

        # The leader's pod dies at once (no clean hand-over): when the lease expires, a live replica takes it:
        # the standby, or the leader's replacement if it started in time and asked first.
        kubectl("delete", "pod", leader, "-n", ops, "--grace-period=0", "--force", check=True)
        killed = time.monotonic()
        new_holder = wait_for(lambda: (h := lease_holder(kubectl, release)) and not h.startswith(f"{leader}-") and h,
                              "a live replica to take the lease", timeout=120)  # fmt: skip
        handover = time.monotonic() - killed
        live = {p["metadata"]["name"] for p in get(kubectl, "pods", "-n", ops, "-l", release.selector)["items"]}
        assert any(new_holder.startswith(f"{p}-") for p in live - {leader}), (new_holder, live)
        # The new leader does the work: a new version rolls out under it.
        v2 = register_sklearn_model(mlflow, MODEL, seed=23)
        apply_model(kubectl, ns, name, uri, v2)
        wait_ready(kubectl, ns, name, v2)
        report_figure(f"in-cluster leader killed: a live replica held the lease after {handover:.1f} s")
        url = f"http://{get(kubectl, 'service', name, '-n', ns)['spec']['clusterIP']}/invocations"
        assert_answers(url, v2)
        uninstall(kube_cluster, kubectl, release)
