"""Suite-wide fixtures: a real Kubernetes cluster (local, or the one MODELPILOT_KUBECONFIG points at), a
real MLflow server and a real Prometheus."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cluster import launcher
from tests.support import leaks
from tests.support.figures import reported
from tests.support.leak_sources import scan_cluster, scan_namespace, scan_series


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# A terminated test run unwinds like Ctrl-C, so every server fixture is stopped by its own teardown.
signal.signal(signal.SIGTERM, _interrupt)


class ExistingCluster:
    """A cluster someone else runs, reached through the kubeconfig in MODELPILOT_KUBECONFIG."""

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = Path(kubeconfig).expanduser().resolve()
        self.bin = launcher.default_bin_dir()
        self._dir = Path(tempfile.mkdtemp(prefix="modelpilot-sa-"))
        self._count = 0

    def kubeconfig_for_service_account(self, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        self._count += 1
        path = self._dir / f"{namespace}.{name}.{self._count}.kubeconfig"
        return launcher.mint_service_account_kubeconfig(self.kubeconfig, namespace, name, path, expiration_seconds)

    def stop(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture(scope="session")
def _termination_log(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("termination") / "termination-log"
    path.touch()  # as the kubelet's mount is there before the container starts
    return str(path)


@pytest.fixture(autouse=True)
def _no_termination_log_on_this_machine(_termination_log, monkeypatch) -> None:
    """In-process usage errors of the model server or the fetch step write their termination message here,
    not to this machine's /dev/termination-log."""
    from modelpilot.serving import termination

    monkeypatch.setattr(termination, "TERMINATION_LOG", _termination_log)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[launcher.LocalCluster | ExistingCluster]:
    """The cluster under test: ``.kubeconfig`` (admin) and ``kubeconfig_for_service_account(ns, name)``."""
    existing = os.environ.get("MODELPILOT_KUBECONFIG")
    if existing:
        cluster = ExistingCluster(existing)
        try:
            yield cluster
        finally:
            cluster.stop()
        return
    missing = launcher.missing_binaries(launcher.default_bin_dir())
    if missing:
        pytest.fail(
            f"cluster binaries missing ({', '.join(missing)}): run `make cluster-bins` "
            "or set MODELPILOT_KUBECONFIG to an existing cluster's kubeconfig"
        )
    with launcher.LocalCluster() as cluster:
        yield cluster
        try:
            _scan_what_the_cluster_kept(cluster)
        except Exception as e:
            leaks.unsearched("the cluster at the end", repr(e)[:200])


def _scan_what_the_cluster_kept(cluster: launcher.LocalCluster) -> None:
    from kubernetes import config

    metrics = subprocess.run([str(cluster.bin / "kubectl"), f"--kubeconfig={cluster.kubeconfig}", "get", "--raw", "/metrics"],
                             capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        scan_cluster(api_client, metrics)
    finally:
        api_client.close()
    leaks.scan_files(cluster.workdir / "logs")


@pytest.fixture(scope="session")
def real_node(kube_cluster):
    """The cluster's real node, where pods run for real; tests that need one are skipped (with the
    reason) where there is none: not root, packages missing, or someone else's cluster."""
    if isinstance(kube_cluster, ExistingCluster):
        pytest.skip("real-node tests load images into the suite's own node; they do not run on MODELPILOT_KUBECONFIG")
    if not kube_cluster.has_real_node:
        pytest.skip(kube_cluster.real_node_reason)
    return kube_cluster.node


@pytest.fixture(scope="session")
def images(real_node) -> dict[str, str]:
    """The project's images, built from its Dockerfiles (cached by their inputs) and loaded into the real
    node's containerd: {"runtime": reference, "operator": reference}."""
    from tests.cluster.images import ensure_images

    built = ensure_images()
    for image in built.values():
        real_node.load_image(image.path)
    return {name: image.name for name, image in built.items()}


@pytest.fixture(scope="session")
def host_address(real_node) -> str:
    """Where pods reach servers listening on this machine's loopback (MLflow, Prometheus, the apiserver)."""
    return real_node.network.host_ip


@pytest.fixture(scope="session")
def mlflow():
    """A real MLflow tracking server (SQLite, proxied artifact store, basic auth) for the whole session."""
    from tests.support.mlflow import mlflow_server

    with mlflow_server() as server:
        yield server


@pytest.fixture(scope="session")
def prometheus():
    """A real Prometheus (Debian's package) scraping every second; tests add their targets."""
    from tests.support.prometheus import prometheus_server

    with prometheus_server() as server:
        yield server
        scan_series(server.url)


@pytest.fixture(scope="session")
def kube_api(kube_cluster):
    """A ``kubernetes.client.ApiClient`` authenticated as the cluster admin."""
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(kube_cluster.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def namespace(kube_api) -> Iterator[str]:
    """A fresh namespace for one test (ready for pods: its default ServiceAccount exists), deleted
    (without waiting for it to finish) afterwards."""
    yield from fresh_namespace(kube_api)


def fresh_namespace(kube_api) -> Iterator[str]:
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(name, field_selector="metadata.name=default").items:
        if time.monotonic() > deadline:
            pytest.fail(f"ServiceAccount {name}/default was not created within 30s")
        time.sleep(0.1)
    yield name
    try:
        scan_namespace(kube_api, name)
    except Exception as e:  # an API server a test left unreachable: the scan says so, the test stands
        leaks.unsearched(f"namespace {name}", repr(e)[:200])
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except client.ApiException as e:
        if e.status != 404:
            raise


@pytest.fixture(scope="session")
def kubectl(kube_cluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl("get", "pods", "-n", ns, check=True)``: the real kubectl against the admin kubeconfig.

    Keyword arguments go to ``subprocess.run`` (defaults: ``capture_output=True, text=True, timeout=60``).
    """
    binary = launcher.default_bin_dir() / "kubectl"
    if not os.access(binary, os.X_OK):
        found = shutil.which("kubectl") if os.environ.get("MODELPILOT_KUBECONFIG") else None
        if not found:
            pytest.fail(f"kubectl not found at {binary}: run `make cluster-bins`")
        binary = Path(found)

    def run(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 60)
        return subprocess.run([str(binary), f"--kubeconfig={kube_cluster.kubeconfig}", *args], **kwargs)

    return run


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The leak scan's verdict: everything the run's processes logged (operator, model servers, fetch
    steps) is searched last; any secret value found anywhere fails the run."""
    basetemp = getattr(session.config, "_tmp_path_factory", None)
    if basetemp is not None and basetemp._basetemp is not None:  # only what this run wrote
        leaks.scan_files(basetemp._basetemp)
    if leaks.findings():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if reported():
        terminalreporter.write_sep("=", "figures")
        for test, line in reported():
            terminalreporter.write_line(f"  {test}: {line}")
    found = leaks.findings()
    if leaks.places_scanned():
        terminalreporter.write_sep("=", f"leak scan: {len(found)} secret(s) found in {leaks.places_scanned()} places searched",
                                   red=bool(found), green=not found)  # fmt: skip
        for where, what in found:
            terminalreporter.write_line(f"  {what} in {where}")
        for where, why in leaks.gaps():
            terminalreporter.write_line(f"  not searched: {where}: {why}")
