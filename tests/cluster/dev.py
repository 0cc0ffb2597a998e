"""`make dev`: a local control plane, a real MLflow server with a demo model, and the operator serving it.

Everything runs on loopback and stops on Ctrl-C. The example ModelDeployment from manifests/examples/ is
applied with its MLflow address pointed at the local server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.cluster.launcher import LocalCluster, build_binaries
from tests.support.mlflow import mlflow_server, register_sklearn_model
from tests.support.processes import start_process, stop_process

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "fraud-detector.yaml"
CRD = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def main() -> int:
    # Ctrl-C and SIGTERM both unwind, so the MLflow server and the operator are stopped too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    say("building (or reusing) the control plane binaries")
    bin_dir = build_binaries()
    say("starting the local control plane")
    with LocalCluster(bin_dir=bin_dir) as cluster:
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        say("starting an MLflow server and registering the demo model fraud-detector")
        with mlflow_server() as mlflow:
            register_sklearn_model(mlflow, "fraud-detector", seed=1)
            register_sklearn_model(mlflow, "fraud-detector", alias="champion", seed=2)
            register_sklearn_model(mlflow, "fraud-detector", seed=3)
            subprocess.run([*kubectl, "apply", "--server-side", "-f", str(CRD)], check=True)
            subprocess.run(
                [*kubectl, "wait", "--for=condition=Established", "crd/modeldeployments.modelpilot.io"], check=True
            )
            log_path = cluster.workdir / "operator.log"
            say(f"starting the operator (log: {log_path})")
            env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "MODELPILOT_RESOLVE_INTERVAL": "10"}
            operator = start_process([sys.executable, "-m", "modelpilot", "--liveness="], env, log_path)
            try:
                _apply_example(kubectl, mlflow)
                _explain(cluster, mlflow)
                while operator.poll() is None:
                    time.sleep(1)
                say(f"the operator exited with {operator.returncode}; see {log_path}")
                return 1
            except KeyboardInterrupt:
                say("stopping")
                return 0
            finally:
                stop_process(operator, timeout=10)


def _apply_example(kubectl: list[str], mlflow) -> None:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] == "ModelDeployment":
            doc["spec"]["mlflow"]["trackingUri"] = mlflow.uri
    secret = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": "ml"},
        "stringData": mlflow.credentials_env(),
    }
    manifest = yaml.safe_dump_all([docs[0], secret, *docs[1:]])
    subprocess.run([*kubectl, "apply", "-f", "-"], input=manifest, text=True, check=True)


def _explain(cluster: LocalCluster, mlflow) -> None:
    print(
        f"""
modelpilot is running against a local cluster with the demo model.

  export KUBECONFIG={cluster.kubeconfig}
  export PATH={cluster.bin}:$PATH

  kubectl get mdep -n ml -w                 # phase, resolved version, ready replicas
  kubectl describe mdep fraud -n ml         # conditions and Events
  kubectl get deploy,svc,pods -n ml -l modelpilot.io/deployment=fraud

Move the alias in MLflow ({mlflow.uri}, user admin) and watch version 3 roll out:

  MLFLOW_TRACKING_USERNAME={mlflow.credentials_env()['MLFLOW_TRACKING_USERNAME']} \\
  MLFLOW_TRACKING_PASSWORD={mlflow.credentials_env()['MLFLOW_TRACKING_PASSWORD']} \\
  .venv/bin/python -c "import mlflow; mlflow.set_tracking_uri('{mlflow.uri}'); \\
mlflow.MlflowClient().set_registered_model_alias('fraud-detector', 'champion', '3')"

Press Ctrl-C to stop everything.
""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
