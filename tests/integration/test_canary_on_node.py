"""Canary rollouts on the real node, with live traffic through the ModelDeployment's Service: the share of
answers from each version follows the effective weight step by step, a killed operator resumes a pause
where it was, and promotion completes without a failed request."""

from __future__ import annotations

import time

import pytest

from modelpilot.rollout.records import moment

from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_sklearn_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow]

MODEL = "canary-model"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]
STEPS = [{"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50}, {"pause": {"duration": "15s"}}]
# kube-proxy picks a pod at random per connection, and each request is a new connection: over a few hundred
# answers the canary's share lies within this many points of its share of ready pods.
TOLERANCE = 10
# kube-proxy programs new endpoints a moment after the pods are ready: answers this soon after a step
# starts are not judged.
SETTLE = 3.0


def rollout(kubectl, ns: str) -> dict:
    return get(kubectl, "mdep", "canary", "-n", ns).get("status", {}).get("rollout") or {}


def share_of(answers, version: str, start: float, end: float) -> tuple[float, int]:
    window = [a for a in answers if start <= a.sent < end and a.ok]
    return 100 * sum(a.version == version for a in window) / max(1, len(window)), len(window)


def test_a_canary_follows_its_steps_survives_an_operator_kill_and_promotes_without_a_failed_request(
    kubectl, operator, mlflow, images, pod_mlflow_uri, restricted_namespace
):
    ns = restricted_namespace
    v1 = register_sklearn_model(mlflow, MODEL, alias="champion", seed=21)
    v2 = register_sklearn_model(mlflow, MODEL, seed=22)
    apply_model(kubectl, ns, "canary", pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=2,
                rollout={"steps": STEPS})  # fmt: skip
    wait_status(kubectl, operator, ns, "canary", serving(v1), "canary Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, 'canary')}/invocations"
    post_once_routed(url, {"inputs": ROWS})
    marks: dict[str, float] = {}

    def reached(step: int, phase: str) -> dict | None:
        state = rollout(kubectl, ns)
        return state if state.get("stepIndex") == step and state.get("phase") == phase else None

    with Load(url, {"inputs": ROWS}) as load:
        wait_for(lambda: len(load.answers) >= 20, "traffic to flow before the alias moves", timeout=30)
        set_alias(mlflow, MODEL, "champion", v2)
        # Step 1/4, setWeight 25: with 2 stable pods the closest share is 1 canary pod of 3 (33 %).
        paused = wait_for(lambda: reached(1, "Paused"), "the 20s pause after setWeight 25", timeout=300)
        marks["first"] = time.monotonic()
        st = get(kubectl, "mdep", "canary", "-n", ns)["status"]
        assert (st["canary"]["version"], st["canary"]["replicas"], st["canary"]["weight"]) == (v2, 1, 33)
        assert st["stable"]["version"] == v1 and st["phase"] == "Progressing"

        # Killed in the middle of the pause: the restarted operator resumes it where it was.
        time.sleep(5)
        operator.kill()
        try:
            time.sleep(3)
        finally:
            operator.start()
        second = wait_for(lambda: reached(2, "Progressing") or reached(3, "Paused"), "step 3 after the pause", timeout=120)
        marks["second"] = time.monotonic()
        resumed_after = moment(second["stepStartedAt"]) - moment(paused["stepStartedAt"])
        assert resumed_after >= 20, f"the pause ended {resumed_after:.1f}s after it began"

        # Step 3/4, setWeight 50: 2 canary pods beside 2 stable ones, held by the 15s pause.
        wait_for(lambda: reached(3, "Paused"), "the 15s pause after setWeight 50", timeout=300)
        marks["third"] = time.monotonic()
        wait_for(lambda: rollout(kubectl, ns).get("phase") in ("Promoting", "Completed"), "promotion", timeout=120)
        marks["promoting"] = time.monotonic()
        final = wait_status(kubectl, operator, ns, "canary", serving(v2), "canary Ready on version 2 after promotion")
        completed = time.monotonic()
        wait_for(lambda: sum(a.sent > completed for a in load.answers) >= 40, "traffic after the promotion", timeout=60)

    answers = load.answers
    assert load.failures() == [], f"{len(load.failures())} of {len(answers)} requests failed: {load.failures()[:5]}"
    first, n1 = share_of(answers, v2, marks["first"] + SETTLE, marks["second"])
    second, n2 = share_of(answers, v2, marks["third"] + SETTLE, marks["promoting"])
    print(f"version {v2} answered {first:.1f}% of {n1} at 33% effective weight, {second:.1f}% of {n2} at 50%")
    assert n1 >= 100 and n2 >= 50, (n1, n2)
    assert abs(first - 100 / 3) <= TOLERANCE, f"version {v2} answered {first:.1f}% of {n1} at 33% effective weight"
    assert abs(second - 50) <= TOLERANCE, f"version {v2} answered {second:.1f}% of {n2} at 50% effective weight"
    assert {a.version for a in answers if a.sent > completed} == {v2}

    assert final["stable"]["version"] == v2 and "canary" not in final
    assert final["rollout"]["phase"] == "Completed" and final["rollout"]["lastPromoted"] == v2
    assert kubectl("get", "deployment", "canary-canary", "-n", ns).returncode != 0, "the canary Deployment is gone"
    reasons = [e["reason"] for e in get(kubectl, "events", "-n", ns, "--field-selector", "involvedObject.name=canary")["items"]]
    assert {"RolloutStarted", "RolloutPromoting", "RolloutCompleted"} <= set(reasons), reasons
