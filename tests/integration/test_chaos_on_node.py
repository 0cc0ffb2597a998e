"""Chaos during canaries, on the real node under live traffic through the Service: the operator is
SIGKILLed, and started again, at points a seeded schedule picks in every step kind (setWeight, pause,
analysis), while a good version is promoted and while a bad one is rolled back.

After every restart the rollout goes on from where it was, and each canary ends as an undisturbed one
does (the analysis tests show those: a good version promoted, one that fails requests rolled back):
- no step repeated or skipped: each step seen under way in status with one start time, and its
  `RolloutStep` Event posted at most once;
- no pause lost: the analysis step starts no sooner than the pause's full duration after the pause did;
- the bound on failed requests: none, except the bad version's own 400s (its model raises on half the
  requests); never a connection error or a 5xx, and never a failure from the stable version.

It runs in the long tier: canaries until at least 50 kills landed (MODELPILOT_CHAOS_KILLS; the seed is
MODELPILOT_CHAOS_SEED). The kill counts per point are printed."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from kubernetes import client

from modelpilot.rollout.records import moment
from tests.integration.test_analysis_on_node import CHECKS, GOOD_ROWS, RAISING_ROWS
from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_pyfunc_model, set_alias
from tests.support.modeldeployments import POINTS, STEP_KINDS, apply_model, cluster_ip, get, rollout_point, serving, wait_status
from tests.support.figures import report_figure

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow, pytest.mark.prometheus]

MODEL, NAME = "chaos-model", "chaos"
PAUSE_S = 8
STEPS = [{"setWeight": 50}, {"pause": {"duration": f"{PAUSE_S}s"}}, {"analysis": {}}]
ROUND_TIMEOUT = 300


@dataclass
class Round:
    """One canary: its version, whether it is good, and where the schedule kills the operator."""

    version: str
    good: bool
    targets: list[tuple[str, float]]  # (point, seconds after it is first seen)
    samples: list[dict] = field(default_factory=list)  # the rollout status, as polled
    kills: list[str] = field(default_factory=list)  # the point each kill landed at


def schedule(rng: random.Random, good: bool) -> list[tuple[str, float]]:
    """Kill points for one canary, in rollout order: each step kind, then promotion or rollback, each none,
    once or twice so that canaries differ; each a random delay after the point is reached (again: after
    the restart)."""
    points = [*STEP_KINDS, "promotion" if good else "rollback"]
    chosen = [p for p in points for _ in range(rng.choice((0, 1, 1, 2)))] or [rng.choice(points)]
    delays = {"setWeight": 3.0, "pause": PAUSE_S - 2, "analysis": 4.0, "promotion": 2.0, "rollback": 0.5}
    return [(p, round(rng.uniform(0, delays[p]), 2)) for p in chosen]


def read_rollout(custom: client.CustomObjectsApi, ns: str) -> dict:
    obj = custom.get_namespaced_custom_object("modelpilot.io", "v1alpha1", ns, "modeldeployments", NAME)
    return (obj.get("status") or {}).get("rollout") or {}


def step_events(kubectl, ns: str) -> dict[str, dict]:
    # The ModelDeployment's own: its Deployment has the same name, and the Deployment controller counts
    # a repeated Event of its own up (a ReplicaSet scaled up again when a version comes back).
    selector = f"involvedObject.kind=ModelDeployment,involvedObject.name={NAME}"
    found = get(kubectl, "events", "-n", ns, "--field-selector", selector)["items"]
    return {e["metadata"]["name"]: e for e in found}


def run_round(kubectl, operator, custom, ns: str, mlflow, current: Round) -> None:
    """Flip the alias to the round's version and drive the kills until the rollout has ended."""
    set_alias(mlflow, MODEL, "champion", current.version)
    pending = list(current.targets)
    seen_at: float | None = None
    deadline = time.monotonic() + ROUND_TIMEOUT
    while time.monotonic() < deadline:
        rollout = read_rollout(custom, ns)
        current.samples.append(rollout)
        # The history keeps only the last rollouts, so its length stops growing: look at its last entry.
        last = (rollout.get("history") or [{}])[-1]
        if last.get("version") == current.version and rollout.get("phase") in ("Completed", "Aborted"):
            return
        point = rollout_point(rollout, current.version, STEP_KINDS)
        # A point the rollout already went past is not waited for.
        while pending and point is not None and POINTS.index(pending[0][0]) < POINTS.index(point):
            pending.pop(0)
            seen_at = None
        if pending and point == pending[0][0]:
            seen_at = seen_at or time.monotonic()
            if time.monotonic() >= seen_at + pending[0][1]:
                operator.kill()
                current.kills.append(point)
                operator.start()
                pending.pop(0)
                seen_at = None
                continue
        time.sleep(0.2)
    raise AssertionError(f"version {current.version}'s rollout did not end in {ROUND_TIMEOUT}s: {current.samples[-1:]}")


def check_round(current: Round, events: dict[str, dict], stable_before: str, status: dict) -> None:
    v = current.version
    ours = [s for s in current.samples if s.get("canaryVersion") == v and s.get("phase") in ("Progressing", "Paused")]
    starts: dict[int, set[str]] = {}
    for s in ours:
        starts.setdefault(s["stepIndex"], set()).add(s["stepStartedAt"])
    # One start per step: a step entered again after a restart would start anew.
    assert all(len(times) == 1 for times in starts.values()), (v, starts)
    indexes = [s["stepIndex"] for s in ours]
    assert indexes == sorted(indexes), f"version {v}: steps went backwards: {indexes}"
    if 1 in starts and 2 in starts:
        (pause,), (analysis,) = starts[1], starts[2]
        assert moment(analysis) - moment(pause) >= PAUSE_S, f"version {v}: the pause was cut short"
    # Every step up to where it ended seen under way (each lasts seconds; status is read five times a
    # second), none skipped; a good version goes through them all, a bad one is judged from its first.
    reached = len(STEPS) if current.good else max(starts, default=-1) + 1
    assert sorted(starts) == list(range(reached)) and reached > 0, f"version {v}: steps seen {sorted(starts)}"
    # A step entered twice posts its Event twice. (A kill between the status write and the Event's post
    # loses that Event: at most one each.)
    entered = Counter(e["message"].split(":")[0] for e in events.values() if e["reason"] == "RolloutStep")
    assert all(n == 1 for n in entered.values()) and all(e.get("count", 1) == 1 for e in events.values()), (v, entered)
    assert sum(e["reason"] == "RolloutStarted" for e in events.values()) <= 1, (v, sorted(e["reason"] for e in events.values()))
    last = status["rollout"]["history"][-1]
    if current.good:
        assert (last["version"], last["outcome"], status["stable"]["version"]) == (v, "Promoted", v), last
    else:
        assert (last["version"], last["outcome"], status["stable"]["version"]) == (v, "RolledBack", stable_before), last


def chaos(kubectl, operator, kube_api, mlflow, pod_mlflow_uri, prometheus_url: str, ns: str, seed: int, min_kills: int,
          max_rounds: int) -> None:  # fmt: skip
    rng = random.Random(seed)
    custom = client.CustomObjectsApi(kube_api)
    spec = {
        "steps": STEPS,
        "analysis": {
            "prometheus": {"address": prometheus_url}, "interval": "4s", "count": 2, "minSampleSize": 10,
            "failureLimit": 1, "inconclusiveLimit": 20, "checks": CHECKS[:2],
        },
    }  # fmt: skip
    stable = register_pyfunc_model(mlflow, MODEL, "good", alias="champion", seed=seed)
    apply_model(kubectl, ns, NAME, pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=1, rollout=spec)
    wait_status(kubectl, operator, ns, NAME, serving(stable), f"Ready on version {stable}")
    url = f"http://{cluster_ip(kubectl, ns, NAME)}/invocations"
    post_once_routed(url, GOOD_ROWS)

    rounds: list[Round] = []
    with Load(url, [GOOD_ROWS, RAISING_ROWS], max_seconds=3600) as load:
        while len(rounds) < max_rounds and (sum(len(r.kills) for r in rounds) < min_kills or len(rounds) < 2):
            good = len(rounds) % 2 == 0
            version = register_pyfunc_model(mlflow, MODEL, "good" if good else "failing", seed=seed + len(rounds) + 1)
            current = Round(version, good, schedule(rng, good))
            before_events = set(step_events(kubectl, ns))
            run_round(kubectl, operator, custom, ns, mlflow, current)
            status = wait_status(kubectl, operator, ns, NAME, lambda st: st.get("phase") in ("Ready", "Degraded")
                                 and not st.get("canary") and not (st.get("stable") or {}).get("updatingTo"),
                                 f"version {version}'s rollout to settle")  # fmt: skip
            events = {n: e for n, e in step_events(kubectl, ns).items() if n not in before_events}
            check_round(current, events, stable, status)
            stable = version if good else stable
            rounds.append(current)
    kills = Counter(k for r in rounds for k in r.kills)
    report_figure(f"chaos (seed {seed}): {len(rounds)} canaries, {sum(kills.values())} kills: "
          + ", ".join(f"{p} {kills[p]}" for p in POINTS))  # fmt: skip
    bad = {r.version for r in rounds if not r.good}
    unexpected = [a for a in load.failures() if not (a.status == 400 and a.version in bad)]
    assert unexpected == [], unexpected[:5]
    assert sum(kills.values()) >= min_kills, kills


@pytest.mark.long
@pytest.mark.timeout(3600)  # about 4 kills a canary of ~40 s: 50 kills take half an hour
def test_fifty_operator_kills_across_canaries_change_nothing(
    kubectl, operator, kube_api, mlflow, images, pod_mlflow_uri, discovering_prometheus, restricted_namespace
):
    chaos(kubectl, operator, kube_api, mlflow, pod_mlflow_uri, discovering_prometheus.url, restricted_namespace,
          seed=int(os.environ.get("MODELPILOT_CHAOS_SEED", "1302")), min_kills=int(os.environ.get("MODELPILOT_CHAOS_KILLS", "50")),
          max_rounds=40)  # fmt: skip
