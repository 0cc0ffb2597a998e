"""How the operator's cost grows with the number of ModelDeployments.

Starts the local control plane, a real MLflow server with one registered model and the operator, then
runs two rounds in fresh namespaces: a baseline of SMALL ModelDeployments and a round of LARGE ones. For
each round it measures the time until every one is Ready and the API requests the cluster served, while
converging and over three idle resolve intervals. It prints the per-ModelDeployment figures of both rounds
and their ratios (large / small): near 1.0 means the cost per object does not grow with the count.

    .venv/bin/python bench/operator_scale.py [--small 20] [--large 200]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import install_crd, start_operator  # noqa: E402
from tests.cluster.launcher import KWOK_TOLERATION, LocalCluster, build_binaries  # noqa: E402
from tests.support.mlflow import mlflow_server, register_sklearn_model  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402

RESOLVE_INTERVAL = 20


def api_requests(kubectl: list[str]) -> Counter:
    """apiserver_request_total summed by (verb, resource), watches excluded (they are long-lived)."""
    counts: Counter = Counter()
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(
            pair.split("=", 1) for pair in line[line.index("{") + 1 : line.rindex("}")].replace('"', "").split(",")
        )
        if labels.get("verb") != "WATCH":
            counts[(labels.get("verb"), labels.get("resource"))] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def operator_requests(delta: Counter) -> int:
    """Requests to the kinds the operator reads and writes (ModelDeployments, owned objects, Secrets)."""
    kinds = {"modeldeployments", "deployments", "services", "horizontalpodautoscalers", "secrets", "events"}
    return sum(n for (verb, resource), n in delta.items() if resource in kinds and verb != "LIST")


def run_round(kubectl: list[str], mlflow, count: int, tag: str, existing: int) -> dict:
    """One round of `count` new ModelDeployments; `existing` others are already there (and resync too)."""
    namespace = f"scale-{tag}"
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": namespace},
              "stringData": mlflow.credentials_env()}  # fmt: skip
    docs = [secret] + [
        {
            "apiVersion": "modelpilot.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": f"m{i}", "namespace": namespace},
            "spec": {
                "model": {"name": "scale-model", "version": "1"},
                "mlflow": {"trackingUri": mlflow.uri, "credentialsSecret": "mlflow-creds"},
                "replicas": 1,
                # The operator's cost is measured, not serving: kwok's nodes hold the pods.
                "pod": {"tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}},
            },
        }
        for i in range(count)
    ]
    before = api_requests(kubectl)
    start = time.monotonic()
    subprocess.run([*kubectl, "apply", "-f", "-"], input=yaml.safe_dump_all(docs), text=True, check=True,
                   capture_output=True)  # fmt: skip
    deadline = start + 600
    while True:
        listed = json.loads(subprocess.run([*kubectl, "get", "mdep", "-n", namespace, "-o", "json"],
                                           capture_output=True, text=True, check=True).stdout)  # fmt: skip
        ready = sum(1 for item in listed["items"] if item.get("status", {}).get("phase") == "Ready")
        if ready == count:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready}/{count} Ready after 600s")
        time.sleep(1)
    converge_seconds = time.monotonic() - start
    converged = api_requests(kubectl)
    idle_window = 3 * RESOLVE_INTERVAL  # three resync passes of an unchanged world
    time.sleep(idle_window)
    idle = api_requests(kubectl)
    return {
        "count": count,
        "converge_s": converge_seconds,
        "converge_requests": operator_requests(converged - before),
        # Per minute and per ModelDeployment present, this round's and earlier ones alike.
        "idle_requests_per_min": operator_requests(idle - converged) * 60 / idle_window * count / (count + existing),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20, help="ModelDeployments in the baseline round")
    parser.add_argument("--large", type=int, default=200, help="ModelDeployments in the measured round")
    parser.add_argument("--operator-log", help="keep a copy of the operator's log here")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so the cluster, MLflow and the operator are all stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bin_dir = build_binaries()
    with LocalCluster(bin_dir=bin_dir, nodes=3, real=False) as cluster, mlflow_server() as mlflow:
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        register_sklearn_model(mlflow, "scale-model")
        install_crd(kubectl)
        operator = start_operator(cluster.kubeconfig, cluster.workdir / "operator.log",
                                  MODELPILOT_RESOLVE_INTERVAL=str(RESOLVE_INTERVAL))  # fmt: skip
        try:
            time.sleep(5)
            rounds = [
                run_round(kubectl, mlflow, args.small, "small", existing=0),
                run_round(kubectl, mlflow, args.large, "large", existing=args.small),
            ]
        finally:
            stop_process(operator, timeout=15)
            if args.operator_log:
                Path(args.operator_log).write_bytes((cluster.workdir / "operator.log").read_bytes())

    small, large = rounds
    print(f"\nModelDeployments per round: baseline {small['count']}, measured {large['count']}")
    print(f"{'per ModelDeployment':42} {'baseline':>10} {'measured':>10} {'ratio':>7}")
    for key, label in (
        ("converge_s", "seconds to Ready (wall / count)"),
        ("converge_requests", "API requests while converging"),
        ("idle_requests_per_min", "API requests per minute, idle"),
    ):
        a, b = small[key] / small["count"], large[key] / large["count"]
        ratio = f"{b / a:7.2f}" if a else "    n/a"
        print(f"{label:42} {a:10.3f} {b:10.3f} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
