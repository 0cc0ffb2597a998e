"""Apply-to-Ready of a ModelDeployment on the real node, against a bare Deployment of the same image.

Starts the local cluster with its real node, a real MLflow server with one registered model, the runtime
image (built or reused) and the operator. Each round, in a fresh namespace and in alternating order:

- baseline: a plain Deployment of the runtime image running a one-line HTTP server, Ready when its
  readiness probe passes (pod scheduling, sandbox, container start: what any pod pays);
- measured: a ModelDeployment of the model, Ready when its status says so (the operator's reconcile,
  the fetch from MLflow, the server's imports and model load, readiness, and the status write).

It prints every round, then the median and spread of each and the ratio of the medians.

    .venv/bin/python bench/node_ready.py [--rounds 5] [--replicas 1]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import install_crd, leak_checked, start_operator  # noqa: E402
from tests.cluster.images import ensure_images  # noqa: E402
from tests.cluster.launcher import LocalCluster, build_binaries  # noqa: E402
from tests.support.mlflow import mlflow_server, register_sklearn_model  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402

TIMEOUT = 600
RESTRICTED = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
SERVER = "import http.server as h; h.ThreadingHTTPServer(('0.0.0.0', 8080), h.SimpleHTTPRequestHandler).serve_forever()"


def bare_deployment(namespace: str, image: str, replicas: int) -> dict:
    labels = {"app": "bare"}
    container = {"name": "web", "image": image, "command": ["python", "-c", SERVER], "workingDir": "/tmp",
                 "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                 "securityContext": RESTRICTED}  # fmt: skip
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bare", "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container], "volumes": []}}}}  # fmt: skip


def model_deployment(namespace: str, uri: str, replicas: int) -> dict:
    return {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "model", "namespace": namespace},
            "spec": {"model": {"name": "bench-model", "version": "1"}, "replicas": replicas,
                     "mlflow": {"trackingUri": uri, "credentialsSecret": "mlflow-creds"}}}  # fmt: skip


def timed_apply(kubectl: list[str], doc: dict, ready) -> float:
    start = time.monotonic()
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(doc), text=True, check=True, capture_output=True)
    while not ready():
        if time.monotonic() - start > TIMEOUT:
            raise TimeoutError(f"{doc['kind']} not Ready after {TIMEOUT}s")
        time.sleep(0.2)
    return time.monotonic() - start


def get(kubectl: list[str], *args: str) -> dict:
    done = subprocess.run([*kubectl, "get", *args, "-o", "json"], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def run_round(kubectl: list[str], mlflow, uri: str, image: str, index: int, replicas: int) -> dict[str, float]:
    namespace = f"ready-{index}"
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": namespace},
              "stringData": mlflow.credentials_env()}  # fmt: skip
    subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump(secret), text=True, check=True, capture_output=True)

    def bare_ready() -> bool:
        return get(kubectl, "deployment", "bare", "-n", namespace).get("status", {}).get("readyReplicas") == replicas

    def model_ready() -> bool:
        return get(kubectl, "mdep", "model", "-n", namespace).get("status", {}).get("phase") == "Ready"

    kinds = [("baseline", bare_deployment(namespace, image, replicas), bare_ready),
             ("measured", model_deployment(namespace, uri, replicas), model_ready)]  # fmt: skip
    if index % 2:
        kinds.reverse()  # alternate, so neither always starts on a machine the other just loaded
    result = {name: timed_apply(kubectl, doc, ready) for name, doc, ready in kinds}
    subprocess.run([*kubectl, "delete", "namespace", namespace, "--wait=true", "--timeout=120s"], capture_output=True)
    return result


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f} s  (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bin_dir = build_binaries()
    image = ensure_images(["runtime"])["runtime"]
    with LocalCluster(bin_dir=bin_dir, nodes=1, real=True) as cluster, mlflow_server() as mlflow:
        assert cluster.node is not None
        cluster.node.load_image(image.path)
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        register_sklearn_model(mlflow, "bench-model")
        install_crd(kubectl)
        operator = start_operator(cluster.kubeconfig, cluster.workdir / "operator.log", MODELPILOT_RUNTIME_IMAGE=image.name)
        uri = mlflow.uri.replace("127.0.0.1", cluster.network.host_ip)
        try:
            rounds = []
            for index in range(args.rounds):
                rounds.append(run_round(kubectl, mlflow, uri, image.name, index, args.replicas))
                print(f"round {index + 1}: baseline {rounds[-1]['baseline']:.2f} s, "
                      f"ModelDeployment {rounds[-1]['measured']:.2f} s", flush=True)  # fmt: skip
        finally:
            stop_process(operator, timeout=15)

    base = [r["baseline"] for r in rounds]
    measured = [r["measured"] for r in rounds]
    print(f"\napply to Ready on the real node, {args.replicas} replica(s), {args.rounds} rounds")
    print(f"  baseline, a bare Deployment of the runtime image: {spread(base)}")
    print(f"  ModelDeployment (fetch from MLflow, model load):  {spread(measured)}")
    print(f"  ratio of medians: {statistics.median(measured) / statistics.median(base):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
