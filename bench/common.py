"""What every benchmark on the local cluster does before it measures: the CRD, and the operator as a
process of this machine."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml

from tests.cluster.images import ensure_images
from tests.cluster.launcher import LocalCluster, build_binaries
from tests.support import leaks
from tests.support.mlflow import MlflowServer, mlflow_server
from tests.support.processes import start_process, stop_process
from tests.support.prometheus import Prometheus, pod_discovering_prometheus

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"


def install_crd(kubectl: list[str]) -> None:
    subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRD)], check=True, capture_output=True)
    # kubectl's default 30 s is short for an API server that has just started on a busy machine.
    waited = subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=180s",
                             "crd/modeldeployments.modelpilot.io"], capture_output=True, text=True)  # fmt: skip
    if waited.returncode != 0:
        raise RuntimeError(f"the CRD was not established: {waited.stderr.strip()}")


def start_operator(kubeconfig: Path, log_path: Path, **env: str) -> subprocess.Popen:
    """The operator, cluster-wide with the admin kubeconfig, its log in `log_path`; `env` adds settings."""
    environment = {**os.environ, "KUBECONFIG": str(kubeconfig), **env}
    return start_process([sys.executable, "-m", "modelpilot", "--liveness=", "--metrics="], environment, log_path)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time the process has used, from /proc."""
    # The command name may hold spaces: the fields that follow it start after its closing parenthesis.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory of the process now and at its peak (VmRSS, VmHWM), in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class _Tee(io.TextIOBase):
    def __init__(self, stream, kept: io.StringIO) -> None:
        self.stream, self.kept = stream, kept

    def write(self, text: str) -> int:
        self.kept.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def leak_checked(main: Callable[[], int]) -> int:
    """Run a benchmark's `main`, its output printed and kept: a secret value in it (the MLflow password,
    index credentials, URL credentials) fails the run, as it fails the test suite."""
    kept = io.StringIO()
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(stdout, kept), _Tee(stderr, kept)
    try:
        code = main()
    finally:
        sys.stdout, sys.stderr = stdout, stderr
    found = leaks.find(kept.getvalue())
    if found:
        print(f"leak scan: {', '.join(found)} in the benchmark's output", file=sys.stderr)
        return code or 1
    return code


@dataclass
class NodeStack:
    cluster: LocalCluster
    mlflow: MlflowServer
    prometheus: Prometheus
    kubectl: list[str]
    operator: subprocess.Popen


@contextmanager
def node_stack(resolve_interval: str) -> Iterator[NodeStack]:
    """What the benchmarks of canaries on the real node share: the local cluster with its real node (root),
    a real MLflow server, a Prometheus discovering the pods, the runtime image loaded, and the operator
    (its resolve interval `resolve_interval` seconds), stopped in reverse on exit."""
    bin_dir = build_binaries()
    image = ensure_images(["runtime"])["runtime"]
    with LocalCluster(bin_dir=bin_dir, nodes=1, real=True) as cluster, mlflow_server() as mlflow, \
            pod_discovering_prometheus(cluster.kubeconfig) as prometheus:  # fmt: skip
        assert cluster.node is not None
        cluster.node.load_image(image.path)
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        install_crd(kubectl)
        operator = start_operator(cluster.kubeconfig, cluster.workdir / "operator.log", MODELPILOT_RUNTIME_IMAGE=image.name,
                                  MODELPILOT_RESOLVE_INTERVAL=resolve_interval)  # fmt: skip
        try:
            yield NodeStack(cluster, mlflow, prometheus, kubectl, operator)
        finally:
            stop_process(operator, timeout=15)


def apply_served(stack: NodeStack, namespace: str, name: str, model: dict, **spec) -> None:
    """A namespace with the MLflow credentials Secret, and one ModelDeployment (one replica unless `spec`
    says otherwise) of `model` (a name with a version or an alias), its pods reaching MLflow from the node."""
    subprocess.run([*stack.kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": namespace},
              "stringData": stack.mlflow.credentials_env()}  # fmt: skip
    doc = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name, "namespace": namespace},
           "spec": {"model": model, "replicas": 1,
                    "mlflow": {"trackingUri": stack.mlflow.uri.replace("127.0.0.1", stack.cluster.network.host_ip),
                               "credentialsSecret": "mlflow-creds"}, **spec}}  # fmt: skip
    for body in (secret, doc):
        subprocess.run([*stack.kubectl, "apply", "-f", "-"], input=yaml.safe_dump(body), text=True, check=True, capture_output=True)


def apply_judged(stack: NodeStack, namespace: str, name: str, model: str, steps: list[dict], analysis: dict) -> None:
    """`apply_served` of `model`'s alias `champion`, its canaries judged on Prometheus."""
    rollout = {"steps": steps, "analysis": {"prometheus": {"address": stack.prometheus.url}, **analysis}}
    apply_served(stack, namespace, name, {"name": model, "alias": "champion"}, rollout=rollout)
