"""How the operator's cost grows with the number of ModelDeployments.

Starts the local control plane (with enough kwok nodes for every pod), a real MLflow server with one
registered model and the operator, then runs two rounds in fresh namespaces: a baseline of SMALL
ModelDeployments and a round of LARGE ones. Each round creates its objects through the API with a few
client threads, and measures the time until every one is Ready and the API requests the cluster served
while converging; then, over three idle resolve intervals, the reads and the writes. Throughout, it reads
the CPU time of the operator, kube-apiserver, etcd and the controllers from /proc, and the operator's
resident memory. With every LARGE object present, it then times APPLIES `kubectl apply`s of one more
ModelDeployment until its Deployment and Service exist. It prints the per-ModelDeployment figures of both
rounds and their ratios (large / small): near 1.0 means the cost per object does not grow with the count.

    .venv/bin/python bench/operator_scale.py [--small 20] [--large 200] [--applies 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import cpu_seconds, install_crd, leak_checked, memory_mib, start_operator  # noqa: E402
from tests.cluster.launcher import KWOK_TOLERATION, NODE_CAPACITY, LocalCluster, build_binaries  # noqa: E402
from tests.support.mlflow import mlflow_server, register_sklearn_model  # noqa: E402
from tests.support.processes import stop_process  # noqa: E402

RESOLVE_INTERVAL = 20
GROUP, VERSION, PLURAL = "modelpilot.io", "v1alpha1", "modeldeployments"
# What the operator reads and writes; the idle bar is no write to any of them, by any client.
OPERATOR_KINDS = {"modeldeployments", "deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets",
                  "secrets", "events"}  # fmt: skip
WRITES = {"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION"}
CONTROL_PLANE = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok")
CREATORS = 4


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


def operator_requests(delta: Counter, verbs: set[str] | None = None) -> int:
    """Requests to the kinds the operator reads and writes, lists left out; only `verbs` if given."""
    return sum(n for (verb, resource), n in delta.items()
               if resource in OPERATOR_KINDS and verb != "LIST" and (verbs is None or verb in verbs))  # fmt: skip


class CpuClock:
    """CPU seconds of the operator and of each control-plane process, read together."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids

    def read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    @staticmethod
    def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: after[name] - before[name] for name in before}


class Watch:
    """`kubectl get -w` of one kind in one namespace: the latest value of a column per name, and when each
    name was first seen, so that waiting costs the API server one watch rather than repeated lists."""

    def __init__(self, kubectl: list[str], kind: str, namespace: str, column: str = ".metadata.name"):
        argv = [*kubectl, "get", kind, "-n", namespace, "-w", "--no-headers",
                "-o", f"custom-columns=N:.metadata.name,V:{column}"]  # fmt: skip
        self.values: dict[str, str] = {}
        self.counts: Counter = Counter()  # names per value, kept as they change: thousands of rows
        self.first_seen: dict[str, float] = {}
        self.changed = threading.Condition()
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            parts = line.split()
            if len(parts) != 2:
                continue
            with self.changed:
                self.first_seen.setdefault(parts[0], time.monotonic())
                self.counts[self.values.get(parts[0])] -= 1
                self.counts[parts[1]] += 1
                self.values[parts[0]] = parts[1]
                self.changed.notify_all()

    def wait(self, predicate, timeout: float, what: str) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self), timeout):
                raise TimeoutError(f"{what} after {timeout:.0f}s")

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def modeldeployment(namespace: str, name: str, mlflow) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {"name": "scale-model", "version": "1"},
            "mlflow": {"trackingUri": mlflow.uri, "credentialsSecret": "mlflow-creds"},
            "replicas": 1,
            # The operator's cost is measured, not serving: kwok's nodes hold the pods.
            "pod": {"tolerations": [KWOK_TOLERATION], "nodeSelector": {"type": "kwok"}},
        },
    }


def prepare_namespace(kubectl: list[str], namespace: str, mlflow) -> None:
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mlflow-creds", "namespace": namespace},
              "stringData": mlflow.credentials_env()}  # fmt: skip
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(secret), text=True, check=True, capture_output=True)


def create_all(api: kubernetes.client.CustomObjectsApi, bodies: list[dict]) -> None:
    """Create the objects with a few client threads: kubectl sends one object at a time under a client rate
    limit, which at thousands would be the figure measured instead of the operator."""

    def create(body: dict) -> None:
        api.create_namespaced_custom_object(GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body)

    with ThreadPoolExecutor(CREATORS) as pool:
        list(pool.map(create, bodies))


def event_reasons(kubectl: list[str], namespace: str) -> Counter:
    """The Events the operator has posted in `namespace`, by reason."""
    listed = subprocess.run([*kubectl, "get", "events", "-n", namespace, "-o", "json"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    return Counter(e["reason"] for e in json.loads(listed)["items"] if e.get("reportingComponent") == "modelpilot")


def run_round(kubectl, api, mlflow, clock: CpuClock, operator_pid: int, count: int, tag: str, existing: int) -> dict:
    """One round of `count` new ModelDeployments; `existing` others are already there (and resync too)."""
    namespace = f"scale-{tag}"
    prepare_namespace(kubectl, namespace, mlflow)
    bodies = [modeldeployment(namespace, f"m{i}", mlflow) for i in range(count)]
    phases = Watch(kubectl, PLURAL, namespace, ".status.phase")
    try:
        before, cpu_before = api_requests(kubectl), clock.read()
        start = time.monotonic()
        create_all(api, bodies)
        created_s = time.monotonic() - start
        phases.wait(lambda w: w.counts["Ready"] == count, max(600.0, count * 0.5),
                    f"not every one of {count} Ready")  # fmt: skip
        converge_s = time.monotonic() - start
    finally:
        phases.close()
    reasons = event_reasons(kubectl, namespace)
    converged, cpu_converged = api_requests(kubectl), clock.read()
    idle_window = 3 * RESOLVE_INTERVAL  # three resync passes of an unchanged world
    time.sleep(idle_window)
    idle, cpu_idle = api_requests(kubectl), clock.read()
    idle_events = event_reasons(kubectl, namespace) - reasons
    idle_delta = idle - converged
    present = count + existing
    rss, peak = memory_mib(operator_pid)
    return {
        "count": count,
        "present": present,
        "create_s": created_s,
        "converge_s": converge_s,
        "converge_requests": operator_requests(converged - before),
        "converge_cpu_s": CpuClock.spent(cpu_before, cpu_converged),
        # Per minute and per ModelDeployment present, this round's and earlier ones alike.
        "idle_reads_per_min": operator_requests(idle_delta, {"GET"}) * 60 / idle_window / present,
        "idle_writes": {f"{verb} {resource}": n for (verb, resource), n in idle_delta.items()
                        if resource in OPERATOR_KINDS and verb in WRITES and n},  # fmt: skip
        "idle_events_by_reason": dict(idle_events),
        "idle_cpu_percent": {name: 100 * s / idle_window for name, s in CpuClock.spent(cpu_converged, cpu_idle).items()},
        "operator_rss_mib": rss,
        "operator_peak_rss_mib": peak,
    }


def apply_latencies(kubectl: list[str], mlflow, applies: int) -> list[dict]:
    """`kubectl apply` of one ModelDeployment at a time until its Deployment and Service exist."""
    namespace = "scale-apply"
    prepare_namespace(kubectl, namespace, mlflow)
    deployments, services = Watch(kubectl, "deployments", namespace), Watch(kubectl, "services", namespace)
    samples = []
    try:
        for i in range(applies):
            name = f"a{i}"
            started = time.monotonic()
            subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(modeldeployment(namespace, name, mlflow)),
                           text=True, check=True, capture_output=True)  # fmt: skip
            returned = time.monotonic()
            for watch in (deployments, services):
                watch.wait(lambda w: name in w.first_seen, 120, f"no {name} in {namespace}")
            samples.append({"kubectl_s": returned - started,
                            "objects_s": max(deployments.first_seen[name], services.first_seen[name]) - started})  # fmt: skip
    finally:
        deployments.close()
        services.close()
    return samples


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: of 50 values, p50 is the 25th and p99 the 50th (the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def busy(r: dict) -> str:
    """How much of the machine's CPU the control plane and the operator took while a round converged: near
    all of it, and the seconds to Ready are the machine's limit, not one component's."""
    cores, cpu = os.cpu_count() or 1, r["converge_cpu_s"]
    plane = sum(seconds for name, seconds in cpu.items() if name != "operator")

    def share(seconds: float) -> str:
        return f"{100 * seconds / (cores * r['converge_s']):.0f} %"

    return f"of {cores} cores: control plane {share(plane)}, operator {share(cpu['operator'])}"


def report(small: dict, large: dict, applies: list[dict]) -> None:
    print(f"\nModelDeployments per round: baseline {small['count']}, measured {large['count']}")
    print(f"{'per ModelDeployment':44} {'baseline':>10} {'measured':>10} {'ratio':>7}")

    def row(label: str, a: float, b: float) -> None:
        ratio = f"{b / a:7.2f}" if a else "    n/a"
        print(f"{label:44} {a:10.4f} {b:10.4f} {ratio}")

    row("seconds to Ready (wall / count)", small["converge_s"] / small["count"], large["converge_s"] / large["count"])
    row("API requests while converging", small["converge_requests"] / small["count"],
        large["converge_requests"] / large["count"])  # fmt: skip
    row("API reads per minute, idle", small["idle_reads_per_min"], large["idle_reads_per_min"])
    for name in small["converge_cpu_s"]:
        row(f"CPU ms while converging: {name}", 1000 * small["converge_cpu_s"][name] / small["count"],
            1000 * large["converge_cpu_s"][name] / large["count"])  # fmt: skip
    for r in (small, large):
        print(f"\n{r['count']} created in {r['create_s']:.1f} s, all Ready after {r['converge_s']:.1f} s; "
              f"with {r['present']} present, idle over {3 * RESOLVE_INTERVAL} s:")  # fmt: skip
        print(f"  writes to {', '.join(sorted(OPERATOR_KINDS))}: {r['idle_writes'] or 'none'}")
        print(f"  the operator's Events in this round's namespace, by reason: {r['idle_events_by_reason'] or 'none'}")
        print("  CPU % of one core: " + ", ".join(f"{n} {p:.1f}" for n, p in r["idle_cpu_percent"].items()))
        print(f"  operator resident memory {r['operator_rss_mib']:.0f} MiB (peak {r['operator_peak_rss_mib']:.0f} MiB)")
        print("  while converging, " + busy(r))
    if applies:
        objects, by_kubectl = [s["objects_s"] for s in applies], [s["kubectl_s"] for s in applies]
        print(f"\nkubectl apply of one ModelDeployment with {large['present']} present, to its Deployment and Service "
              f"existing, over {len(applies)} applies: p50 {percentile(objects, 50):.3f} s, "
              f"p99 {percentile(objects, 99):.3f} s (kubectl itself: p50 {percentile(by_kubectl, 50):.3f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20, help="ModelDeployments in the baseline round")
    parser.add_argument("--large", type=int, default=200, help="ModelDeployments in the measured round")
    parser.add_argument("--applies", type=int, default=50, help="single applies timed with every LARGE one present")
    parser.add_argument("--json", help="write the figures here too")
    parser.add_argument("--operator-log", help="keep a copy of the operator's log here")
    args = parser.parse_args()

    # SIGTERM unwinds like Ctrl-C, so the cluster, MLflow and the operator are all stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    bin_dir = build_binaries()
    # Every pod needs a place on a kwok node (110 each), with room to spare.
    nodes = max(3, math.ceil((args.small + args.large + args.applies) / (int(NODE_CAPACITY["pods"]) - 10)))
    with LocalCluster(bin_dir=bin_dir, nodes=nodes, real=False) as cluster, mlflow_server() as mlflow:
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={cluster.kubeconfig}"]
        register_sklearn_model(mlflow, "scale-model")
        install_crd(kubectl)
        api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(cluster.kubeconfig)))
        operator = start_operator(cluster.kubeconfig, cluster.workdir / "operator.log",
                                  MODELPILOT_RESOLVE_INTERVAL=str(RESOLVE_INTERVAL))  # fmt: skip
        pids = {"operator": operator.pid, **{name: cluster.components[name].proc.pid for name in CONTROL_PLANE}}
        clock = CpuClock(pids)
        try:
            time.sleep(5)
            small = run_round(kubectl, api, mlflow, clock, operator.pid, args.small, "small", existing=0)
            large = run_round(kubectl, api, mlflow, clock, operator.pid, args.large, "large", existing=args.small)
            applies = apply_latencies(kubectl, mlflow, args.applies)
        finally:
            stop_process(operator, timeout=15)
            if args.operator_log:
                Path(args.operator_log).write_bytes((cluster.workdir / "operator.log").read_bytes())

    report(small, large, applies)
    if args.json:
        Path(args.json).write_text(json.dumps({"small": small, "large": large, "applies": applies}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
