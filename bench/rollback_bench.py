"""Detection-to-safety: how long a bad canary answers requests before the operator has rolled it back.

Starts the local cluster with its real node, a real MLflow server, a real Prometheus that discovers and
scrapes the pods every second, the runtime image and the operator. One ModelDeployment serves a good
version (one replica) under steady client traffic through its Service; the canary steps are
[setWeight 50, analysis], judged every `--interval` on the built-in predictionErrorRate and errorRate
with no failure tolerated and a minimum sample of 5 requests. Rounds alternate between:

- measured: a version whose model raises on half of the requests (the pyfunc of the tests) becomes the
  alias target. Detection-to-safety runs from the first answer of that version to the last one: after
  it, all traffic is back on the stable version. It is split at the first failing measurement (as status
  records it) into detection (first bad answer -> failing measurement) and reaction (measurement -> last
  bad answer). The target: within one analysis interval plus one scrape interval plus 5 s;
- baseline: a good version's canary, aborted by a request (`kubectl modelpilot abort`) as soon as it has
  answered: the request to the last canary answer, the floor any rollback pays (status write, Deployment
  delete, endpoints, kube-proxy).

It prints every round, the distribution of each figure, and the ratios measured/target and
reaction/baseline.

    .venv/bin/python bench/rollback_bench.py [--rounds 10] [--interval 10]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import apply_judged, leak_checked, node_stack  # noqa: E402
from modelpilot.rollout.requests import REQUEST_ANNOTATION, encode  # noqa: E402
from tests.support.load import Load  # noqa: E402
from tests.support.mlflow import register_pyfunc_model, set_alias  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from tests.support.prometheus import SCRAPE_INTERVAL  # noqa: E402

NAMESPACE, NAME, MODEL = "rollback-bench", "judged", "bench-judged"
# The failing model raises on rows with feature 0 above 1.0: every second request carries one.
BODIES = [{"inputs": [[0.5, -1.2, 0.3, 2.0]]}, {"inputs": [[2.5, -1.2, 0.3, 2.0]]}]
TIMEOUT = 300


class Traffic(Load):
    """The clients, with the wall-clock arrival of each answer, to compare with the measurements' times."""

    def __init__(self, url: str):
        super().__init__(url, BODIES, workers=4, max_seconds=24 * 3600)
        self._epoch = time.time() - time.monotonic()

    def answered_by(self, version: str, since: float) -> list[float]:
        return [self._epoch + a.received for a in list(self.answers) if a.version == version and self._epoch + a.received >= since]


def kubectl_json(kubectl: list[str], *args: str) -> dict:
    done = subprocess.run([*kubectl, "get", *args, "-o", "json"], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


def status(kubectl: list[str]) -> dict:
    return kubectl_json(kubectl, "mdep", NAME, "-n", NAMESPACE).get("status", {})


def canary_gone_and_quiet(kubectl: list[str], traffic: Traffic, version: str) -> float:
    """When all traffic is back on stable: the canary's Deployment is gone and no answer of `version` has
    come for 5 s; returns the arrival of its last answer."""
    wait_for(lambda: not kubectl_json(kubectl, "deployment", f"{NAME}-canary", "-n", NAMESPACE), "the canary Deployment to go", TIMEOUT, 0.2)
    time.sleep(5)
    return max(traffic.answered_by(version, 0))


def bad_round(kubectl, mlflow, traffic: Traffic, seed: int) -> dict[str, float]:
    version = register_pyfunc_model(mlflow, MODEL, "failing", seed=seed)
    set_alias(mlflow, MODEL, "champion", version)
    first = wait_for(lambda: min(traffic.answered_by(version, 0), default=None), f"version {version} to answer", TIMEOUT, 0.2)
    wait_for(lambda: (r := status(kubectl).get("rollout") or {}).get("phase") == "Aborted" and r.get("canaryVersion") == version,
             f"version {version} to be rolled back", TIMEOUT, 0.2)
    last = canary_gone_and_quiet(kubectl, traffic, version)
    measurements = status(kubectl)["rollout"]["analysis"]["measurements"]
    failed = min(datetime.fromisoformat(m["at"].replace("Z", "+00:00")).timestamp() for m in measurements if m["verdict"] == "Fail")
    return {"safety": last - first, "detection": failed - first, "reaction": last - failed}


def abort_round(kubectl, mlflow, traffic: Traffic, seed: int) -> float:
    version = register_pyfunc_model(mlflow, MODEL, "good", seed=seed)
    set_alias(mlflow, MODEL, "champion", version)
    wait_for(lambda: traffic.answered_by(version, 0), f"version {version} to answer", TIMEOUT, 0.2)
    asked = time.time()
    value = encode(uuid.uuid4().hex[:12], "abort")
    subprocess.run([*kubectl, "annotate", "--overwrite", "mdep", NAME, "-n", NAMESPACE, f"{REQUEST_ANNOTATION}={value}"],
                   check=True, capture_output=True)  # fmt: skip
    return canary_gone_and_quiet(kubectl, traffic, version) - asked


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10) if len(values) > 1 else values * 9
    return (f"median {statistics.median(values):5.2f} s  p90 {q[-1]:5.2f}  min {min(values):5.2f}  "
            f"max {max(values):5.2f}  (n={len(values)})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each kind")
    parser.add_argument("--interval", type=int, default=10, help="the analysis interval, seconds")
    args = parser.parse_args()
    scrape = float(SCRAPE_INTERVAL.removesuffix("s"))
    target = args.interval + scrape + 5

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with node_stack(resolve_interval="2") as stack:
        kubectl, mlflow = stack.kubectl, stack.mlflow
        stable = register_pyfunc_model(mlflow, MODEL, "good", alias="champion", seed=1)
        analysis = {
            "interval": f"{args.interval}s", "count": 100, "minSampleSize": 5, "failureLimit": 0, "inconclusiveLimit": 100,
            "checks": [{"name": "prediction-errors", "metric": "predictionErrorRate", "max": 0.05},
                       {"name": "errors", "metric": "errorRate", "max": 0.05}],
        }  # fmt: skip
        apply_judged(stack, NAMESPACE, NAME, MODEL, [{"setWeight": 50}, {"analysis": {}}], analysis)
        wait_for(lambda: status(kubectl).get("phase") == "Ready", "the stable version to be Ready", TIMEOUT, 0.2)
        ip = kubectl_json(kubectl, "service", NAME, "-n", NAMESPACE)["spec"]["clusterIP"]
        measured, baseline = [], []
        with Traffic(f"http://{ip}/invocations") as traffic:
            wait_for(lambda: traffic.answered_by(stable, 0), "traffic through the Service", TIMEOUT, 0.2)
            for index in range(args.rounds):
                kinds = ["measured", "baseline"] if index % 2 == 0 else ["baseline", "measured"]
                for kind in kinds:
                    seed = 100 + 2 * index + (kind == "baseline")
                    if kind == "measured":
                        measured.append(bad_round(kubectl, mlflow, traffic, seed))
                        m = measured[-1]
                        print(f"round {index + 1}: bad canary answered {m['safety']:5.2f} s (detection "
                              f"{m['detection']:5.2f} s, reaction {m['reaction']:5.2f} s)", flush=True)  # fmt: skip
                    else:
                        baseline.append(abort_round(kubectl, mlflow, traffic, seed))
                        print(f"round {index + 1}: abort request to safety {baseline[-1]:5.2f} s", flush=True)

    safety = [m["safety"] for m in measured]
    reaction = [m["reaction"] for m in measured]
    print(f"\ndetection to safety on the real node: interval {args.interval} s, scrape {scrape:g} s, "
          f"target {target:g} s (interval + scrape + 5 s)")  # fmt: skip
    print(f"  first bad answer -> all traffic on stable:   {spread(safety)}")
    print(f"  first bad answer -> failing measurement:     {spread([m['detection'] for m in measured])}")
    print(f"  failing measurement -> all traffic on stable: {spread(reaction)}")
    print(f"  baseline, abort request -> all on stable:    {spread(baseline)}")
    print(f"  ratio max(safety) / target: {max(safety) / target:.2f}; within target: "
          f"{sum(s <= target for s in safety)}/{len(safety)}")  # fmt: skip
    print(f"  ratio median reaction / median baseline: {statistics.median(reaction) / statistics.median(baseline):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
