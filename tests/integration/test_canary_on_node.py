"""Canary rollouts on the real node, with live traffic through the ModelDeployment's Service: the share of
answers from each version follows the effective weight step by step, a killed operator resumes a pause
where it was, and promotion completes without a failed request; the kubectl plugin aborts (traffic back on
stable), retries and promotes, and a newer version replaces a waiting canary."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from modelpilot.rollout.records import moment

from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_sklearn_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, condition, get, plugin, serving, wait_status
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


MANUAL_MODEL = "manual-canary-model"
MANUAL_STEPS = [{"setWeight": 50}, {"pause": {}}]




# Three canaries come up and a promotion rolls the stable track: with the cluster's start (when it runs first) on
# a busy 2-core machine, more than the suite's 600s per test.
@pytest.mark.timeout(1200)
# The same requests on kwok (test_modeldeployment.py) and a rollback under live traffic
# (test_analysis_on_node.py) are in the default tier.
@pytest.mark.long
def test_kubectl_modelpilot_aborts_retries_and_promotes_a_canary_a_newer_version_replaced_under_live_traffic(
    kube_cluster, kubectl, operator, mlflow, images, pod_mlflow_uri, restricted_namespace
):
    ns, name = restricted_namespace, "manual"
    v1 = register_sklearn_model(mlflow, MANUAL_MODEL, alias="champion", seed=31)
    v2 = register_sklearn_model(mlflow, MANUAL_MODEL, seed=32)
    apply_model(kubectl, ns, name, pod_mlflow_uri, {"name": MANUAL_MODEL, "alias": "champion"}, replicas=2,
                rollout={"steps": MANUAL_STEPS})  # fmt: skip
    wait_status(kubectl, operator, ns, name, serving(v1), f"{name} Ready on version {v1}")
    url = f"http://{cluster_ip(kubectl, ns, name)}/invocations"
    post_once_routed(url, {"inputs": ROWS})

    def status() -> dict:
        return get(kubectl, "mdep", name, "-n", ns).get("status", {})

    def waiting_for_promote(version: str) -> dict | None:
        state = status().get("rollout") or {}
        if (state.get("phase"), state.get("stepIndex"), state.get("canaryVersion")) == ("Paused", 1, version):
            return state
        return None

    def canary_gone() -> bool:
        return kubectl("get", "deployment", f"{name}-canary", "-n", ns).returncode != 0

    def answered_since(load: Load, start: float, count: int, what: str) -> None:
        wait_for(lambda: sum(a.sent >= start for a in load.answers) >= count, what, timeout=90)

    marks: dict[str, float] = {}
    with Load(url, {"inputs": ROWS}, max_seconds=1500) as load:
        wait_for(lambda: len(load.answers) >= 20, "traffic to flow before the alias moves", timeout=30)

        # 2. Version 2 comes up on 2 canary pods beside the 2 stable ones and waits for a promote.
        set_alias(mlflow, MANUAL_MODEL, "champion", v2)
        wait_for(lambda: waiting_for_promote(v2), f"the canary of version {v2} to wait for a promote", timeout=300)
        marks["v2 paused"] = time.monotonic()
        st = status()
        assert (st["canary"]["version"], st["canary"]["replicas"], st["canary"]["weight"]) == (v2, 2, 50)
        assert st["stable"]["version"] == v1 and st["phase"] == "Progressing"
        answered_since(load, marks["v2 paused"] + SETTLE, 200, f"answers while version {v2} waits at 50%")

        # 3. Abort: all traffic back to version 1 at once, the canary Deployment goes.
        aborted = plugin(kube_cluster, "abort", name, "-n", ns)
        marks["aborted"] = time.monotonic()
        assert aborted.returncode == 0, aborted.stdout + aborted.stderr
        assert f"all traffic back to version {v1}" in aborted.stdout, aborted.stdout
        st = wait_status(kubectl, operator, ns, name, lambda s: s.get("phase") == "Degraded", "Degraded after the abort")
        assert condition(st, "Degraded")["reason"] == "RolloutAborted", st["conditions"]
        assert condition(st, "Ready")["status"] == "True", st["conditions"]
        assert [r["version"] for r in st["rollout"]["rejected"]] == [v2]
        assert st["stable"]["version"] == v1 and "canary" not in st
        wait_for(canary_gone, "the canary Deployment to go after the abort", timeout=60)
        answered_since(load, marks["aborted"] + SETTLE, 200, "answers after the abort")

        # 4. Retry: the canary of version 2 comes back and waits at the pause again.
        retried = plugin(kube_cluster, "retry", name, "-n", ns)
        marks["retried"] = time.monotonic()
        assert retried.returncode == 0, retried.stdout + retried.stderr
        wait_for(lambda: waiting_for_promote(v2), f"the retried canary of version {v2} to wait for a promote", timeout=300)
        marks["v2 paused again"] = time.monotonic()
        st = status()
        assert (st["phase"], st["canary"]["version"], st["stable"]["version"]) == ("Progressing", v2, v1)
        answered_since(load, marks["v2 paused again"] + SETTLE, 200, f"answers while the retried version {v2} waits")

        # 5. Version 3 comes while version 2 waits: it replaces the canary and the steps restart.
        v3 = register_sklearn_model(mlflow, MANUAL_MODEL, seed=33)
        set_alias(mlflow, MANUAL_MODEL, "champion", v3)
        marks["v3 wanted"] = time.monotonic()
        seen: list[dict] = []

        def where(st: dict) -> tuple:
            state = st.get("rollout") or {}
            return state.get("canaryVersion"), state.get("stepIndex"), state.get("phase")

        def replaced_and_waiting() -> dict | None:
            seen.append(status())
            return seen[-1] if where(seen[-1]) == (v3, 1, "Paused") else None

        st = wait_for(replaced_and_waiting, f"the canary of version {v3} to wait for a promote", timeout=300)
        marks["v3 paused"] = time.monotonic()
        assert {s["stable"]["version"] for s in seen} == {v1}, "the stable track serves version 1 all along"
        path = [where(s) for s in seen]
        assert any(version == v3 and step == 0 for version, step, _ in path), f"the steps restart for version {v3}: {path}"
        assert (st["canary"]["version"], st["canary"]["replicas"], st["canary"]["weight"]) == (v3, 2, 50)
        replaced = st["rollout"]["history"][-1]
        assert (replaced["version"], replaced["previousVersion"], replaced["outcome"]) == (v2, v1, "Replaced"), replaced
        answered_since(load, marks["v3 paused"] + SETTLE, 200, f"answers while version {v3} waits at 50%")

        # 6. Promote: the pause is the last step, so version 3 goes to the stable track.
        promoted = plugin(kube_cluster, "promote", name, "-n", ns)
        marks["promoted"] = time.monotonic()
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        final = wait_status(kubectl, operator, ns, name, serving(v3), f"Ready on version {v3} after promotion", timeout=300)
        completed = time.monotonic()
        answered_since(load, completed, 100, "traffic after the promotion")

    answers = load.answers
    assert load.failures() == [], f"{len(load.failures())} of {len(answers)} requests failed: {load.failures()[:5]}"
    first, n1 = share_of(answers, v2, marks["v2 paused"] + SETTLE, marks["aborted"])
    again, n2 = share_of(answers, v2, marks["v2 paused again"] + SETTLE, marks["v3 wanted"])
    third, n3 = share_of(answers, v3, marks["v3 paused"] + SETTLE, marks["promoted"])
    after_abort = [a.version for a in answers if marks["aborted"] + SETTLE <= a.sent < marks["retried"]]
    print(f"version {v2} answered {first:.1f}% of {n1} at 50% effective weight, {again:.1f}% of {n2} after the retry; "
          f"version {v3} answered {third:.1f}% of {n3} at 50%; version {v1} answered all {len(after_abort)} after the abort")  # fmt: skip
    assert n1 >= 200 and n2 >= 200 and n3 >= 200, (n1, n2, n3)
    assert abs(first - 50) <= TOLERANCE, f"version {v2} answered {first:.1f}% of {n1} at 50% effective weight"
    assert abs(again - 50) <= TOLERANCE, f"version {v2} answered {again:.1f}% of {n2} at 50% after the retry"
    assert abs(third - 50) <= TOLERANCE, f"version {v3} answered {third:.1f}% of {n3} at 50% effective weight"
    assert len(after_abort) >= 200 and set(after_abort) == {v1}, f"after the abort: {Counter(after_abort)}"
    during_replacement = [a.version for a in answers if marks["v3 wanted"] <= a.sent < marks["promoted"]]
    assert v1 in during_replacement and set(during_replacement) <= {v1, v2, v3}, Counter(during_replacement)
    late_v2 = [a for a in answers if a.sent >= marks["v3 paused"] + SETTLE and a.version == v2]
    assert late_v2 == [], f"{len(late_v2)} answers from version {v2} after version {v3} took the canary"
    assert {a.version for a in answers if a.sent > completed} == {v3}

    assert final["stable"]["version"] == v3 and "canary" not in final
    assert final["rollout"]["phase"] == "Completed" and final["rollout"]["lastPromoted"] == v3
    wait_for(canary_gone, "the canary Deployment to go after the promotion", timeout=60)
    outcomes = [(h["version"], h["previousVersion"], h["outcome"]) for h in final["rollout"]["history"]]
    assert outcomes == [(v2, v1, "Aborted"), (v2, v1, "Replaced"), (v3, v1, "Promoted")], final["rollout"]["history"]
    assert all(h["startedAt"] and h["finishedAt"] for h in final["rollout"]["history"])
    history = plugin(kube_cluster, "history", name, "-n", ns)
    assert history.returncode == 0, history.stderr
    header, *rows = history.stdout.splitlines()
    assert header.split()[:3] == ["VERSION", "FROM", "OUTCOME"], history.stdout
    listed = [row.split()[:3] for row in rows]
    assert listed == [[v3, v1, "Promoted"], [v2, v1, "Replaced"], [v2, v1, "Aborted"]], history.stdout
    reasons = {e["reason"] for e in get(kubectl, "events", "-n", ns, "--field-selector", f"involvedObject.name={name}")["items"]}
    expected = {"RolloutStarted", "RolloutAborted", "RetryRequested", "CanaryReplaced", "PromoteRequested", "RolloutCompleted"}
    assert expected <= reasons, reasons
