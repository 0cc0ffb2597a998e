"""Integration fixtures: real registered models, the CRD, and the operator as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.launcher import default_bin_dir
from tests.conftest import fresh_namespace
from tests.support.mlflow import register_sklearn_model
from tests.support.processes import free_port, start_process, stop_process, wait_http_ok


@pytest.fixture(scope="session")
def registered_model(mlflow):
    """A registered model with versions 1 and 2, alias `champion` on version 1."""
    name = "fraud-detector"
    register_sklearn_model(mlflow, name, alias="champion", seed=1)
    register_sklearn_model(mlflow, name, seed=2)
    return name


@pytest.fixture(scope="session")
def pod_mlflow_uri(mlflow, host_address) -> str:
    """The MLflow server as the model's pods (and the operator) reach it."""
    return mlflow.uri.replace("127.0.0.1", host_address)


REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"
OPERATOR_NAMESPACE = "modelpilot-system"


@pytest.fixture(scope="session")
def crds(kubectl):
    kubectl("apply", "--server-side", "-f", str(CRD_FILE), check=True)
    kubectl("wait", "--for=condition=Established", "crd/modeldeployments.modelpilot.io", "--timeout=60s", check=True)


@pytest.fixture(scope="module")
def operator(kube_cluster, kubectl, crds, tmp_path_factory):
    """The operator as a real process, under the ServiceAccount and RBAC rules the Helm chart installs.

    One per test module: a module that installs the operator into the cluster with Helm runs with no
    other operator watching."""
    rbac = subprocess.run(
        [str(default_bin_dir() / "helm"), "template", "modelpilot", str(REPO / "helm" / "modelpilot"),
         "--namespace", OPERATOR_NAMESPACE, "--kube-version", "v1.35.4", "--show-only", "templates/rbac.yaml"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kubectl("apply", "-f", "-", input=rbac, check=True)
    kubeconfig = kube_cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, "modelpilot")
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    port = free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MODELPILOT_RESOLVE_INTERVAL": "3",
        # Long enough that a hung registry stays hung while the test watches the others go on.
        "MODELPILOT_REGISTRY_TIMEOUT": "90",
    }
    proc = start_process([sys.executable, "-m", "modelpilot", f"--liveness=http://127.0.0.1:{port}/healthz"], env, log_path)
    handle = OperatorProcess(proc, log_path)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc, log_path, timeout=60)
        yield handle
    finally:
        stop_process(proc, timeout=20)


class OperatorProcess:
    def __init__(self, proc: subprocess.Popen, log_path: Path):
        self.proc, self.log_path = proc, log_path

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def restricted_namespace(namespace, kubectl, mlflow):
    """A test namespace enforcing Pod Security "restricted", holding the MLflow credentials Secret."""
    return _restrict(namespace, kubectl, mlflow)


@pytest.fixture(scope="module")
def module_namespace(kube_api, kubectl, mlflow):
    """Like restricted_namespace, shared by the tests of one module."""
    for name in fresh_namespace(kube_api):
        yield _restrict(name, kubectl, mlflow)


def _restrict(namespace: str, kubectl, mlflow) -> str:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", check=True)
    kubectl(
        "create", "secret", "generic", "mlflow-creds", "-n", namespace,
        *(f"--from-literal={k}={v}" for k, v in mlflow.credentials_env().items()), check=True,
    )
    return namespace
