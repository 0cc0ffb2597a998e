"""Soak: continuous scoring traffic for an hour, the alias flipped every few minutes between good and bad
versions, the operator's resync (registry resolve) running throughout.

Starts the local cluster with its real node (root), a real MLflow server, a Prometheus discovering the
pods, the runtime image and the operator (resolve interval `--resync` seconds). One ModelDeployment
serves a good version on one replica under steady traffic through its Service (4 clients, a new
connection per request, every second request carrying a row the bad versions' model raises on). Its steps
are [setWeight 50, pause, analysis]. Every `--flip-every` seconds the alias moves to a newly registered
version, good and bad in turn: a good one must be promoted, a bad one rolled back.

Every `--sample-every` seconds it records the resident memory and open file descriptors of the operator
and of every model-server process on the node. At the end, after `--idle` seconds without a rollout, it
counts the API server's writes in that window. It prints:

- the samples over time, and each process's memory trend (least-squares slope, MiB per hour, after the
  first tenth of the run) and growth from its second quarter to its last: flat memory is the bar;
- API writes per hour while idle (every write verb on the objects the operator owns or reads, from any
  client);
- rollouts promoted and rolled back against the number expected;
- failed requests: the bad versions' own 400s (expected while their canary takes traffic) and any other.

    make soak                                     # one hour
    .venv/bin/python bench/soak.py --minutes 10 --flip-every 120
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import apply_judged, leak_checked, memory_mib, node_stack  # noqa: E402
from tests.support.load import Load  # noqa: E402
from tests.support.mlflow import register_pyfunc_model, set_alias  # noqa: E402
from tests.support.processes import processes_running  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402

NAMESPACE, NAME, MODEL = "soak", "soaked", "soak-model"
BODIES = [{"inputs": [[0.5, -1.2, 0.3, 2.0]]}, {"inputs": [[2.5, -1.2, 0.3, 2.0]]}]
TIMEOUT = 300
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")
OWNED = ("modeldeployments", "deployments", "services", "events", "horizontalpodautoscalers",
         "poddisruptionbudgets", "configmaps", "secrets", "replicasets", "pods")  # fmt: skip
SERVER_COMMAND = "modelpilot.serving.server"


@dataclass
class Series:
    """Resident memory (MiB) and open descriptors of one process over time (seconds since start)."""

    what: str
    points: list[tuple[float, float, int]] = field(default_factory=list)

    def trend(self, skip: float) -> float | None:
        """Least-squares slope of memory in MiB per hour, after the first `skip` fraction of its life."""
        if len(self.points) < 3:
            return None
        start = self.points[0][0] + skip * (self.points[-1][0] - self.points[0][0])
        kept = [(t, m) for t, m, _ in self.points if t >= start]
        if len(kept) < 3 or kept[-1][0] == kept[0][0]:
            return None
        return statistics.linear_regression([t for t, _ in kept], [m for _, m in kept]).slope * 3600

    def quarters(self) -> tuple[float, float] | None:
        """Mean memory in the second and in the last quarter of its life."""
        n = len(self.points)
        if n < 8:
            return None
        return (statistics.fmean(m for _, m, _ in self.points[n // 4 : n // 2]),
                statistics.fmean(m for _, m, _ in self.points[3 * n // 4 :]))  # fmt: skip


def memory_and_fds(pid: int) -> tuple[float, int] | None:
    try:
        return memory_mib(pid)[0], len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, KeyError):
        return None  # gone between listing and reading


class Sampler(threading.Thread):
    def __init__(self, operator_pid: int, every: float) -> None:
        super().__init__(daemon=True)
        self.operator_pid, self.every = operator_pid, every
        self.t0 = time.monotonic()
        self.series: dict[str, Series] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.monotonic() - self.t0
            for key, pid in [("operator", self.operator_pid), *((f"model server {p}", p) for p in processes_running(SERVER_COMMAND))]:
                sample = memory_and_fds(pid)
                if sample is not None:
                    self.series.setdefault(key, Series(key)).points.append((now, *sample))
            self.stopped.wait(self.every)


def writes(kubectl: list[str]) -> Counter:
    """The API server's write requests so far on the kinds the operator owns or reads, from every client,
    by (verb, resource, subresource)."""
    text = subprocess.run([*kubectl, "get", "--raw", "/metrics"], capture_output=True, text=True, check=True).stdout
    total: Counter = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("verb") in WRITE_VERBS and labels.get("resource") in OWNED:
                total[(labels["verb"], labels["resource"], labels.get("subresource", ""))] += float(line.rsplit(" ", 1)[1])
    return total


def pods_settled(kubectl: list[str]) -> bool:
    """One pod, the stable one, and nothing terminating."""
    done = subprocess.run([*kubectl, "get", "pods", "-n", NAMESPACE, "-o", "yaml"], capture_output=True, text=True)
    pods = (yaml.safe_load(done.stdout) or {}).get("items", []) if done.returncode == 0 else []
    return len(pods) == 1 and not pods[0]["metadata"].get("deletionTimestamp")


def rollout(kubectl: list[str]) -> dict:
    done = subprocess.run([*kubectl, "get", "mdep", NAME, "-n", NAMESPACE, "-o", "yaml"], capture_output=True, text=True)
    return ((yaml.safe_load(done.stdout) or {}).get("status") or {}) if done.returncode == 0 else {}


def last_rollout(kubectl: list[str]) -> dict:
    """The last ended rollout in status, {} before any."""
    return ((rollout(kubectl).get("rollout") or {}).get("history") or [{}])[-1]


def flip(kubectl, mlflow, good: bool, seed: int) -> tuple[str, str]:
    """Move the alias to a new version; wait for its rollout to end; (version, outcome)."""
    version = register_pyfunc_model(mlflow, MODEL, "good" if good else "failing", seed=seed)
    set_alias(mlflow, MODEL, "champion", version)
    # The history keeps only the last rollouts, so its length stops growing: look at its last entry.
    ended = wait_for(lambda: (last := last_rollout(kubectl)).get("version") == version and last,
                     f"version {version}'s rollout to end", TIMEOUT, 1.0)
    return version, ended["outcome"]


def report(sampler: Sampler, outcomes: list[tuple[bool, str, str]], idle_writes: Counter, idle_seconds: float,
           traffic: Load, bad_versions: set[str]) -> None:  # fmt: skip
    print("\nmemory (MiB) and open descriptors over time:")
    operator = sampler.series.get("operator")
    if operator:
        step = max(1, len(operator.points) // 12)
        for t, mem, fds in operator.points[::step]:
            print(f"  t={t / 60:5.1f} min  operator {mem:7.1f} MiB {fds:4d} fds")
    print("\nper process: samples, first/last/peak MiB, fds first/last, trend after the first tenth, "
          "second-quarter -> last-quarter mean:")  # fmt: skip
    for series in sampler.series.values():
        if len(series.points) < 2:
            continue
        mems = [m for _, m, _ in series.points]
        trend, quarters = series.trend(0.1), series.quarters()
        lived = (series.points[-1][0] - series.points[0][0]) / 60
        print(f"  {series.what:24s} {len(series.points):4d} over {lived:5.1f} min  {mems[0]:6.1f}/{mems[-1]:6.1f}/"
              f"{max(mems):6.1f}  fds {series.points[0][2]}/{series.points[-1][2]}  "
              f"trend {'-' if trend is None else f'{trend:+.1f} MiB/h'}  "
              f"{'-' if quarters is None else f'{quarters[0]:.1f} -> {quarters[1]:.1f} ({quarters[1] / quarters[0]:.3f}x)'}")
    promoted = sum(good and outcome == "Promoted" for good, _, outcome in outcomes)
    rolled = sum(not good and outcome == "RolledBack" for good, _, outcome in outcomes)
    goods = sum(good for good, _, _ in outcomes)
    print(f"\nrollouts: {promoted}/{goods} good versions promoted, {rolled}/{len(outcomes) - goods} bad versions "
          f"rolled back; other outcomes: {[(v, o) for g, v, o in outcomes if o != ('Promoted' if g else 'RolledBack')]}")
    count = sum(idle_writes.values())
    print(f"API writes while idle: {count:.0f} in {idle_seconds:.0f} s = {count * 3600 / idle_seconds:.1f} per hour")
    for (verb, resource, subresource), n in idle_writes.most_common():
        print(f"  {n:4.0f} {verb} {resource}{'/' + subresource if subresource else ''}")
    answers = list(traffic.answers)
    expected = [a for a in answers if not a.ok and a.status == 400 and a.version in bad_versions]
    other = [a for a in answers if not a.ok and a not in expected]
    print(f"requests: {len(answers)}; failed: {len(expected)} by the bad versions' own 400s, {len(other)} other")
    for a in other[:10]:
        print(f"  {a.status} from version {a.version}: {a.error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60, help="how long the flips go on")
    parser.add_argument("--flip-every", type=float, default=180, help="seconds between alias flips")
    parser.add_argument("--resync", type=float, default=20, help="the operator's registry resolve interval, seconds")
    parser.add_argument("--sample-every", type=float, default=20, help="seconds between memory samples")
    parser.add_argument("--idle", type=float, default=300, help="seconds of the idle window at the end")
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with node_stack(resolve_interval=str(args.resync)) as stack:
        kubectl, mlflow = stack.kubectl, stack.mlflow
        sampler = Sampler(stack.operator.pid, args.sample_every)
        try:
            register_pyfunc_model(mlflow, MODEL, "good", alias="champion", seed=1)
            analysis = {
                "interval": "10s", "count": 3, "minSampleSize": 10, "failureLimit": 1, "inconclusiveLimit": 20,
                "checks": [{"name": "prediction-errors", "metric": "predictionErrorRate", "max": 0.05},
                           {"name": "errors", "metric": "errorRate", "max": 0.05}],
            }  # fmt: skip
            apply_judged(stack, NAMESPACE, NAME, MODEL, [{"setWeight": 50}, {"pause": {"duration": "20s"}}, {"analysis": {}}], analysis)
            wait_for(lambda: rollout(kubectl).get("phase") == "Ready", "the first version to be Ready", TIMEOUT, 1.0)
            ip = yaml.safe_load(subprocess.run([*kubectl, "get", "service", NAME, "-n", NAMESPACE, "-o", "yaml"],
                                               capture_output=True, text=True, check=True).stdout)["spec"]["clusterIP"]  # fmt: skip
            outcomes: list[tuple[bool, str, str]] = []
            bad_versions: set[str] = set()
            sampler.start()
            with Load(f"http://{ip}/invocations", BODIES, workers=4, max_seconds=24 * 3600) as traffic:
                end = time.monotonic() + args.minutes * 60
                while time.monotonic() < end:
                    started = time.monotonic()
                    good = len(outcomes) % 2 == 0
                    version, outcome = flip(kubectl, mlflow, good, seed=10 + len(outcomes))
                    if not good:
                        bad_versions.add(version)
                    outcomes.append((good, version, outcome))
                    print(f"t={(time.monotonic() - sampler.t0) / 60:5.1f} min: version {version} "
                          f"({'good' if good else 'bad'}): {outcome}", flush=True)  # fmt: skip
                    time.sleep(max(0.0, started + args.flip_every - time.monotonic()))
                wait_for(lambda: rollout(kubectl).get("phase") in ("Ready", "Degraded") and not rollout(kubectl).get("canary")
                         and pods_settled(kubectl), "the last rollout to settle", TIMEOUT, 1.0)  # fmt: skip
                time.sleep(10)  # the last status writes and Events of the settling
                before, idle_start = writes(kubectl), time.monotonic()
                time.sleep(args.idle)
                idle_writes, idle_seconds = writes(kubectl) - before, time.monotonic() - idle_start
            sampler.stopped.set()
            report(sampler, outcomes, idle_writes, idle_seconds, traffic, bad_versions)
        finally:
            sampler.stopped.set()
    return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
