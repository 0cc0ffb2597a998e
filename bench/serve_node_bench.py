"""Serving through the Service on the real node: the whole path a client's request takes.

    .venv/bin/python bench/serve_node_bench.py [--seconds 10] [--rounds 3] [--rows 10] [--batch-size 32] [--workers 1]

Starts the local cluster with its real node (as root), a real MLflow server, Prometheus and the operator,
registers the model bench/serve_bench.py uses, and serves it three ways, each one pod on the real node
behind a ClusterIP Service, each with ``--workers`` worker processes (default 1):

- baseline: ``mlflow models serve`` in a pod of the runtime image, on the model the operator's own fetch
  step downloaded (the operator's Deployment with only the server's command changed);
- modelpilot: a ModelDeployment of the model (metrics and drift on, the defaults);
- modelpilot, batching: the same with ``spec.runtime.args: [--max-batch-size, <batch-size>]``.

The load comes from this machine to each Service's cluster IP (kube-proxy's rules, the node's bridge,
the pod), with bench/serve_bench.py's load generator, scenarios and report: 4 connections, baseline
against ours; 32 connections, baseline against ours with batching; rounds alternate the servers.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import apply_served, leak_checked, node_stack  # noqa: E402
from bench.serve_bench import MODEL_NAME, PYTHON, TRAIN, load_arguments, report, run_rounds  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NAMESPACE = "serve-bench"
BASELINE = "mlflow-serve"
START_TIMEOUT = 300


def kubectl_json(kubectl: list[str], *args: str) -> dict:
    return json.loads(subprocess.run([*kubectl, *args, "-o", "json"], check=True, capture_output=True, text=True).stdout)


def ready(kubectl: list[str], name: str) -> bool:
    status = kubectl_json(kubectl, "get", "modeldeployment", name, "-n", NAMESPACE).get("status", {})
    return status.get("phase") == "Ready"


def baseline_objects(served: dict, workers: int) -> list[dict]:
    """`mlflow models serve` in the pod the operator rendered for `served` (same image, fetch step, volumes,
    security and resources), under labels of its own, and a Service in front of it."""
    labels = {"app.kubernetes.io/name": BASELINE}
    template = copy.deepcopy(served["spec"]["template"])
    template["metadata"] = {"labels": labels}
    [server] = template["spec"]["containers"]
    model_dir = server["args"][server["args"].index("--model-dir") + 1]
    server["command"] = ["mlflow", "models", "serve"]
    server["args"] = ["-m", model_dir, "--env-manager", "local", "--host", "0.0.0.0", "--port", "8080", "--workers", str(workers)]
    server["env"] = [e for e in server["env"] if not e["name"].startswith("MODELPILOT_")]
    probe = {"httpGet": {"path": "/ping", "port": 8080}, "periodSeconds": 2}
    server["readinessProbe"], server["startupProbe"], server["livenessProbe"] = probe, {**probe, "failureThreshold": 300}, None
    server = {k: v for k, v in server.items() if v is not None}
    server["securityContext"] = {**server.get("securityContext", {}), "readOnlyRootFilesystem": False}  # MLflow writes in $HOME
    template["spec"]["containers"] = [server]
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": BASELINE, "namespace": NAMESPACE},
                  "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template}}  # fmt: skip
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": BASELINE, "namespace": NAMESPACE},
               "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}  # fmt: skip
    return [deployment, service]


def main() -> int:
    parser = load_arguments(__doc__.splitlines()[0])
    args = parser.parse_args()

    with node_stack(resolve_interval="60") as stack, tempfile.TemporaryDirectory(prefix="modelpilot-bench-") as tmp:
        kubectl = stack.kubectl
        print("training and registering the model", flush=True)
        rows_file = Path(tmp) / "rows.json"
        env = {**os.environ, **stack.mlflow.env}
        trained = subprocess.run([PYTHON, "-c", TRAIN, MODEL_NAME, str(rows_file)], env=env, capture_output=True, text=True, timeout=300)
        if trained.returncode != 0:
            raise RuntimeError(trained.stderr[-3000:])
        version = trained.stdout.strip().splitlines()[-1]
        rows = json.loads(rows_file.read_text())
        payload_file = Path(tmp) / "payload.json"
        payload_file.write_text(json.dumps({"dataframe_split": {"columns": rows["columns"], "data": rows["data"][: args.rows]}}))

        model = {"name": MODEL_NAME, "version": version}
        workers = ["--workers", str(args.workers)]
        apply_served(stack, NAMESPACE, "modelpilot", model, runtime={"args": workers})
        body = {"apiVersion": "modelpilot.io/v1alpha1", "kind": "ModelDeployment",
                "metadata": {"name": "modelpilot-batching", "namespace": NAMESPACE},
                "spec": {**kubectl_json(kubectl, "get", "modeldeployment", "modelpilot", "-n", NAMESPACE)["spec"],
                         "runtime": {"args": [*workers, "--max-batch-size", str(args.batch_size)]}}}  # fmt: skip
        subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump(body), text=True, check=True, capture_output=True)
        for name in ("modelpilot", "modelpilot-batching"):
            wait_for(lambda: ready(kubectl, name), f"{name} Ready", timeout=START_TIMEOUT, interval=2)
        served = kubectl_json(kubectl, "get", "deployment", "modelpilot", "-n", NAMESPACE)
        for obj in baseline_objects(served, args.workers):
            subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump(obj), text=True, check=True, capture_output=True)
        subprocess.run([*kubectl, "rollout", "status", f"deployment/{BASELINE}", "-n", NAMESPACE, f"--timeout={START_TIMEOUT}s"],
                       check=True, capture_output=True)  # fmt: skip

        services = {"mlflow models serve": BASELINE, "modelpilot": "modelpilot", "modelpilot, batching": "modelpilot-batching"}
        urls = {label: f"http://{kubectl_json(kubectl, 'get', 'service', svc, '-n', NAMESPACE)['spec']['clusterIP']}:80"
                for label, svc in services.items()}  # fmt: skip
        baseline = "mlflow models serve"
        scenarios = [(4, [baseline, "modelpilot"], 1.5), (32, [baseline, "modelpilot, batching"], 3.0)]
        print(f"through each Service on the real node: {args.rows} rows/request, {args.warmup:g}s warm-up + "
              f"{args.seconds:g}s measured per run, {args.rounds} rounds, --workers {args.workers}", flush=True)  # fmt: skip
        results = run_rounds(urls, scenarios, payload_file, args)
        met_all = report(results, scenarios, args.seconds, None, args.batch_size)
        print(f"all targets: {'met' if met_all else 'MISSED'}")
        return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
