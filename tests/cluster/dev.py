"""`make dev`: a local cluster, a real MLflow server with a demo model, and the operator serving it.

Everything runs on this machine and stops on Ctrl-C. The example ModelDeployment from manifests/examples/
is applied with its MLflow address pointed at the local server. As root, its pods run for real on the
cluster's real node, from the runtime image built from operator/runtime.Dockerfile, and answer a curl
through their Service; otherwise they are placed on kwok's fake nodes and only the operator's side is real.

With a real node it then plays a scripted demo of metric analysis (pass --no-demo to skip it): a real
Prometheus finds and scrapes the pods, client traffic flows through the `scorer` example's Service, a
good version is promoted on passing measurements, then a version whose model raises on part of its
inputs is rolled back on its own. Watch it with `kubectl get mdep -n ml -w` and
`kubectl modelpilot status scorer -n ml --watch`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.cluster.launcher import KWOK_TOLERATION, LocalCluster, build_binaries
from tests.support.load import Load, post_once_routed
from tests.support.mlflow import mlflow_server, register_pyfunc_model, register_sklearn_model, set_alias
from tests.support.prometheus import pod_discovering_prometheus
from tests.support.processes import start_process, stop_process
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "manifests" / "examples" / "fraud-detector.yaml"
GUARDED = REPO / "manifests" / "examples" / "guarded-scorer.yaml"
CRD = REPO / "crds" / "modelpilot.io_modeldeployments.yaml"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]
# The demo's bad version raises on rows whose feature 0 is above 1.0: every second request carries one.
DEMO_BODIES = [{"inputs": ROWS}, {"inputs": [[2.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]}]
READY_TIMEOUT = 300
DEMO_STEP_TIMEOUT = 420


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local cluster, MLflow and the operator with demo models.")
    parser.add_argument("--no-demo", action="store_true", help="skip the scripted analysis demo")
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both unwind, so the MLflow server and the operator are stopped too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    say("building (or reusing) the control plane binaries")
    bin_dir = build_binaries()
    say("starting the local cluster")
    with LocalCluster(bin_dir=bin_dir) as cluster:
        # The cluster's own handler would stop it first, leaving the operator to wait on a gone apiserver:
        # unwind instead, so the operator and MLflow stop before the cluster does.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        if cluster.node is not None:
            from tests.cluster.images import ensure_images

            say("building (or reusing) the runtime image and loading it into the real node")
            cluster.node.load_image(ensure_images(["runtime"])["runtime"].path)
        else:
            say(f"pods will not run for real ({cluster.real_node_reason}): they go to kwok's fake nodes")
        demo = cluster.node is not None and not args.no_demo
        say("starting an MLflow server and registering the demo model fraud-detector")
        with mlflow_server() as mlflow, contextlib.ExitStack() as stack:
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
            if demo:
                say("starting Prometheus, discovering and scraping the pods (built with Kubernetes discovery, or reused)")
                prometheus = stack.enter_context(pod_discovering_prometheus(cluster.kubeconfig))
                env["MODELPILOT_PROMETHEUS_ADDRESS"] = prometheus.url
            operator = start_process([sys.executable, "-m", "modelpilot", "--liveness=", "--metrics="], env, log_path)
            try:
                _apply_example(kubectl, cluster, mlflow)
                _explain(cluster, mlflow, _wait_until_served(kubectl, cluster))
                if demo:
                    _play_demo(kubectl, cluster, mlflow, stack)
                while operator.poll() is None:
                    time.sleep(1)
                say(f"the operator exited with {operator.returncode}; see {log_path}")
                return 1
            except KeyboardInterrupt:
                say("stopping")
                return 0
            finally:
                stop_process(operator, timeout=10)


def _apply_example(kubectl: list[str], cluster: LocalCluster, mlflow, example: Path = EXAMPLE) -> None:
    docs = list(yaml.safe_load_all(example.read_text()))
    for doc in docs:
        if doc["kind"] == "ModelDeployment":
            doc["spec"]["mlflow"]["trackingUri"] = mlflow.uri
            if cluster.node is not None:
                # Pods reach this machine's loopback (where MLflow listens) at the host address.
                doc["spec"]["mlflow"]["trackingUri"] = mlflow.uri.replace("127.0.0.1", cluster.network.host_ip)
            else:
                doc["spec"]["pod"] = {"tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}}
    secret = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": "ml"},
        "stringData": mlflow.credentials_env(),
    }
    manifest = yaml.safe_dump_all([docs[0], secret, *docs[1:]] if docs[0]["kind"] == "Namespace" else [secret, *docs])
    subprocess.run([*kubectl, "apply", "-f", "-"], input=manifest, text=True, check=True)


def _wait_until_served(kubectl: list[str], cluster: LocalCluster) -> str | None:
    """Waits (bounded) for the example to be Ready; returns the curl that scores through its Service."""
    say("waiting for the ModelDeployment to be Ready (the first start fetches the model in each pod)")

    def ready():
        got = subprocess.run([*kubectl, "get", "mdep", "fraud", "-n", "ml", "-o", "json"], capture_output=True, text=True)
        status = json.loads(got.stdout).get("status", {}) if got.returncode == 0 else {}
        return status if status.get("phase") == "Ready" else None

    try:
        wait_for(ready, "ModelDeployment ml/fraud to be Ready", timeout=READY_TIMEOUT, interval=1)
    except AssertionError as exc:
        say(f"{exc}; see `kubectl describe mdep fraud -n ml`")
        return None
    if cluster.node is None:
        return None
    service = subprocess.run([*kubectl, "get", "service", "fraud", "-n", "ml", "-o", "json"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    url = f"http://{json.loads(service.stdout)['spec']['clusterIP']}/invocations"
    answer = post_once_routed(url, {"inputs": ROWS})
    say(f"scored through the Service: {answer.status_code} {answer.text.strip()} "
        f"(version {answer.headers.get('modelpilot-model-version')})")  # fmt: skip
    return f"curl -si {url} -H 'Content-Type: application/json' -d '{json.dumps({'inputs': ROWS})}'"


def _explain(cluster: LocalCluster, mlflow, curl: str | None) -> None:
    score = (
        f"Score through the model's Service (the modelpilot-model-version header says who answered):\n\n  {curl}\n"
        if curl else "Pods run on kwok's fake nodes here: nothing answers a request (run as root for a real node).\n"
    )
    print(
        f"""
modelpilot is running against a local cluster with the demo model.

  export KUBECONFIG={cluster.kubeconfig}
  export PATH={cluster.bin}:{Path(sys.executable).parent}:$PATH

  kubectl get mdep -n ml -w                 # phase, resolved version, canary weight, ready replicas
  kubectl describe mdep fraud -n ml         # conditions and Events
  kubectl get deploy,svc,pods -n ml -l modelpilot.io/deployment=fraud

{score}
Move the alias in MLflow ({mlflow.uri}, user admin) and version 3 goes out as a canary: 25 % of the
traffic for 30 s, then 50 % until you promote it. Watch it, and promote (or abort) it:

  MLFLOW_TRACKING_USERNAME={mlflow.credentials_env()['MLFLOW_TRACKING_USERNAME']} \\
  MLFLOW_TRACKING_PASSWORD={mlflow.credentials_env()['MLFLOW_TRACKING_PASSWORD']} \\
  .venv/bin/python -c "import mlflow; mlflow.set_tracking_uri('{mlflow.uri}'); \\
mlflow.MlflowClient().set_registered_model_alias('fraud-detector', 'champion', '3')"

  kubectl modelpilot status fraud -n ml --watch
  kubectl modelpilot promote fraud -n ml    # or: abort, pause, resume

The same curl answers with version 3 from more and more of its requests, then from all of them.

Press Ctrl-C to stop everything.
""",
        flush=True,
    )


def _play_demo(kubectl: list[str], cluster: LocalCluster, mlflow, stack: contextlib.ExitStack) -> None:
    """A good version promoted by its measurements, then a bad one rolled back, on the `scorer` example."""

    def status() -> dict:
        got = subprocess.run([*kubectl, "get", "mdep", "scorer", "-n", "ml", "-o", "json"], capture_output=True, text=True)
        return json.loads(got.stdout).get("status", {}) if got.returncode == 0 else {}

    def step(what: str, reached) -> dict | None:
        try:
            return wait_for(lambda: (st := status()) and reached(st) and st, what, timeout=DEMO_STEP_TIMEOUT, interval=1)
        except AssertionError as exc:
            say(f"demo: {exc}; see `kubectl describe mdep scorer -n ml`")
            return None

    say("demo: registering scorer version 1 and applying manifests/examples/guarded-scorer.yaml")
    v1 = register_pyfunc_model(mlflow, "scorer", "good", alias="champion", seed=11)
    _apply_example(kubectl, cluster, mlflow, GUARDED)
    if step("scorer to be Ready", lambda st: st.get("phase") == "Ready") is None:
        return
    service = subprocess.run([*kubectl, "get", "service", "scorer", "-n", "ml", "-o", "json"], capture_output=True, text=True, check=True)
    url = f"http://{json.loads(service.stdout)['spec']['clusterIP']}/invocations"
    post_once_routed(url, DEMO_BODIES[0])
    stack.enter_context(Load(url, DEMO_BODIES, workers=2, max_seconds=24 * 3600))
    say(f"""demo: client traffic flows to {url}. Watch in another terminal (same exports as above):

  kubectl get mdep -n ml -w
  kubectl modelpilot status scorer -n ml --watch

demo: in 20 s a good version 2 goes out as a canary, measured every 10 s""")
    time.sleep(20)
    v2 = register_pyfunc_model(mlflow, "scorer", "good", seed=12)
    set_alias(mlflow, "scorer", "champion", v2)
    say(f"demo: alias champion -> version {v2} (good); it needs three passing measurements")
    if step(f"version {v2} to be promoted", lambda st: (st.get("stable") or {}).get("version") == v2) is None:
        return
    say(f"demo: version {v2} promoted; it bakes for a minute, still measured, version {v1} kept to go back to")
    time.sleep(15)
    v3 = register_pyfunc_model(mlflow, "scorer", "failing", seed=13)
    set_alias(mlflow, "scorer", "champion", v3)
    say(f"demo: alias champion -> version {v3}, whose model raises on half of the requests")
    rolled = step(f"version {v3} to be rolled back", lambda st: st.get("phase") == "Degraded")
    if rolled is not None:
        say(f"demo: {rolled.get('message')}")
        say(f"demo: `kubectl modelpilot history scorer -n ml` lists the rollouts; the MLflow version {v3} carries "
            "the tag modelpilot.io/rolled-back. Traffic keeps flowing until Ctrl-C.")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
