"""Integration fixtures: real registered models, the CRD, and the operator as a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from tests.cluster.launcher import default_bin_dir
from tests.conftest import fresh_namespace
from tests.support.leak_sources import scan_series, scan_url
from tests.support.mlflow import register_sklearn_model
from tests.support.monitoring_crds import KINDS, monitoring_crd_files
from tests.support.processes import free_port, start_process, stop_process, wait_http_ok
from tests.support.prometheus import pod_discovering_prometheus
from tests.support.proxy import CuttableProxy

@pytest.fixture(scope="session")
def discovering_prometheus(kube_cluster, real_node):
    """Prometheus on the host, watching the cluster's pods with the documented scrape config; it reaches
    pod IPs through the node's routes."""
    with pod_discovering_prometheus(kube_cluster.kubeconfig) as server:
        yield server
        scan_series(server.url)


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


@pytest.fixture(scope="session")
def monitoring_crds(kubectl, crds):
    """The Prometheus Operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs, as its module publishes them."""
    for path in monitoring_crd_files():
        kubectl("apply", "--server-side", "-f", str(path), check=True)
    names = [f"crd/{kind}.monitoring.coreos.com" for kind in KINDS]
    kubectl("wait", "--for=condition=Established", *names, "--timeout=60s", check=True)


@pytest.fixture(scope="module")
def operator(kube_cluster, kubectl, crds, tmp_path_factory):
    """The operator as a real process, under the ServiceAccount and RBAC rules the Helm chart installs.

    One per test module: a module that installs the operator into the cluster with Helm runs with no
    other operator watching."""
    with running_operator(operator_kubeconfig(kube_cluster, kubectl), tmp_path_factory.mktemp("operator")) as handle:
        yield handle


@pytest.fixture(scope="module")
def apiserver_proxy(kube_cluster):
    """A proxy to the API server that a test can cut."""
    server = urlparse(kube_cluster.server)
    with CuttableProxy(server.hostname, server.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def operator_behind_proxy(kube_cluster, kubectl, crds, tmp_path_factory, apiserver_proxy):
    """The operator, reaching the API server only through `apiserver_proxy`."""
    kubeconfig = operator_kubeconfig(kube_cluster, kubectl)
    proxied = kubeconfig.with_name("proxied." + kubeconfig.name)
    proxied.write_text(kubeconfig.read_text().replace(kube_cluster.server, f"https://127.0.0.1:{apiserver_proxy.port}"))
    with running_operator(proxied, tmp_path_factory.mktemp("operator")) as handle:
        yield handle


def operator_kubeconfig(kube_cluster, kubectl, *helm_args: str) -> Path:
    """A kubeconfig of the operator's ServiceAccount, bound by the RBAC rules the Helm chart renders (with
    `helm_args`, such as --set leaderElection.enabled=true)."""
    rbac = subprocess.run(
        [str(default_bin_dir() / "helm"), "template", "modelpilot", str(REPO / "helm" / "modelpilot"),
         "--namespace", OPERATOR_NAMESPACE, "--kube-version", "v1.35.4", "--show-only", "templates/rbac.yaml", *helm_args],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    kubectl("create", "namespace", OPERATOR_NAMESPACE)
    kubectl("apply", "-f", "-", input=rbac, check=True)
    return kube_cluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, "modelpilot")


@contextmanager
def running_operator(kubeconfig: Path, log_dir: Path, **settings: str) -> Iterator[OperatorProcess]:
    """The operator under `kubeconfig`; `settings` add environment variables."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "MODELPILOT_RESOLVE_INTERVAL": "3",
        # Long enough that a hung registry stays hung while the test watches the others go on.
        "MODELPILOT_REGISTRY_TIMEOUT": "20",
        **settings,
    }
    handle = OperatorProcess(env, log_dir)
    try:
        handle.start()
        yield handle
    finally:
        handle.stop()


class OperatorProcess:
    """The operator as a real process that a test may also kill and start again."""

    def __init__(self, env: dict[str, str], log_dir: Path):
        self.env, self.log_dir = env, log_dir
        self.starts = 0
        self.proc: subprocess.Popen | None = None

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        health, metrics = free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.proc = start_process(
            [sys.executable, "-m", "modelpilot", f"--liveness=http://127.0.0.1:{health}/healthz",
             f"--metrics=127.0.0.1:{metrics}"],
            self.env, self.log_path,
        )  # fmt: skip
        wait_http_ok(f"http://127.0.0.1:{health}/healthz", self.proc, self.log_path, timeout=60)

    def kill(self) -> None:
        """SIGKILL: no cleanup handler runs, as when a node dies under the operator."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None:
            scan_url(f"metrics of the operator (run {self.starts})", self.metrics_url)
            stop_process(self.proc, timeout=20)

    def reconciles(self, trigger: str) -> float:
        """How many reconciles the operator has started for `trigger` (its modelpilot_reconciles_total)."""
        return self.counter("modelpilot_reconciles_total", "trigger", trigger)

    def counter(self, name: str, label: str, value: str) -> float:
        """The value of one labelled counter this run of the operator exports; 0 when absent."""
        text = httpx.get(self.metrics_url, timeout=10).text
        found = re.search(rf'^{name}{{{label}="{value}"}} (\S+)$', text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def total(self, name: str) -> float:
        """A metric summed over all its labels, as this run of the operator exports it; 0 when absent."""
        text = httpx.get(self.metrics_url, timeout=10).text
        return sum(float(v) for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE))

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        """Everything every run of the operator has logged."""
        return "".join((self.log_dir / f"operator-{n}.log").read_text(errors="replace") for n in range(1, self.starts + 1))


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
