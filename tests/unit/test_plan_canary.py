"""The reconcile decision with rollout steps: the canary state machine's answer turned into what each track
runs, status and Events. The state machine's own transitions: test_canary.py."""

from __future__ import annotations

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.conditions import get_condition
from modelpilot.rollout.plan import Observations, plan
from modelpilot.rollout.canary import Request
from modelpilot.rollout.tracks import TrackObservation

STEPS = [{"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50}]
SPEC = ModelDeploymentSpec.model_validate({
    "model": {"name": "m", "alias": "champion"}, "mlflow": {"trackingUri": "http://mlflow"},
    "replicas": 3, "rollout": {"steps": STEPS},
})  # fmt: skip
V1 = ResolvedModel(name="m", version="1", source="s1", alias="champion")
V2 = ResolvedModel(name="m", version="2", source="s2", alias="champion")
T0 = 1_790_000_000.0


def track(name, version, replicas, ready=None) -> TrackObservation:
    ready = replicas if ready is None else ready
    return TrackObservation(name, version, replicas, ready, replicas, ready, replicas, True)


def observe(model, clock, stable=None, canary=None, generation=1) -> Observations:
    return Observations(
        generation=generation, now="t", clock=clock, resolution=Resolution(model=model), stable=stable, canary=canary
    )


def reason(status, type_):
    return get_condition(status.conditions, type_).reason


def test_the_first_version_goes_straight_to_the_stable_track():
    result = plan(SPEC, ModelDeploymentStatus(), observe(V1, T0))
    assert result.serve == V1 and result.canary is None and not result.remove_canary
    assert result.status.rollout.phase == "Completed" and result.status.canary is None


def serving_v1() -> ModelDeploymentStatus:
    return plan(SPEC, ModelDeploymentStatus(), observe(V1, T0, stable=track("m", "1", 3))).status


def test_a_new_version_starts_a_canary_beside_an_untouched_stable_track():
    result = plan(SPEC, serving_v1(), observe(V2, T0 + 1, stable=track("m", "1", 3)))
    assert result.serve == V1  # the stable Deployment keeps version 1
    assert (result.canary, result.canary_replicas) == (V2, 1)  # 1 of 4 pods: 25 %
    st = result.status
    assert st.phase == "Progressing" and reason(st, "Progressing") == "CanaryProgressing"
    assert reason(st, "Ready") == "CanaryInProgress"
    assert (st.canary.version, st.canary.weight, st.canary.deployment) == ("2", 25, "m-canary")
    assert st.rollout.requested_weight == 25 and st.rollout.canary_version == "2"
    assert ("RolloutStarted" in {r for _, r, _ in result.events}) and st.model == V2


def test_a_timed_pause_asks_to_be_woken_when_it_ends_and_resumes_from_status():
    started = plan(SPEC, serving_v1(), observe(V2, T0 + 1, stable=track("m", "1", 3))).status
    canary = track("m-canary", "2", 1)
    paused = plan(SPEC, started, observe(V2, T0 + 2, stable=track("m", "1", 3), canary=canary))
    assert paused.status.rollout.phase == "Paused" and paused.requeue_after == 20
    assert reason(paused.status, "Progressing") == "CanaryPaused"
    # Read back as an operator restarted 15 s later would: 5 s are left.
    reread = ModelDeploymentStatus.model_validate(paused.status.to_wire())
    later = plan(SPEC, reread, observe(V2, T0 + 17, stable=track("m", "1", 3), canary=canary))
    assert later.status.rollout.step_index == 1 and abs(later.requeue_after - 5) < 0.01
    done = plan(SPEC, later.status, observe(V2, T0 + 22, stable=track("m", "1", 3), canary=canary))
    assert done.status.rollout.step_index == 2 and done.canary_replicas == 3  # 50 %: 3 of 6 pods


def test_promotion_moves_the_stable_track_then_removes_the_canary():
    status = serving_v1()
    stable, clock = track("m", "1", 3), T0
    canary = None
    for replicas in (1, 1, 3):  # through both setWeight steps and the pause
        result = plan(SPEC, status, observe(V2, clock, stable=stable, canary=canary))
        status, clock = result.status, clock + 21
        canary = track("m-canary", "2", result.canary_replicas)
    result = plan(SPEC, status, observe(V2, clock, stable=stable, canary=canary))
    assert result.status.rollout.phase == "Promoting"
    assert result.serve == V2 and result.canary == V2 and result.canary_replicas == 3
    done = plan(SPEC, result.status, observe(V2, clock + 1, stable=track("m", "2", 3), canary=canary))
    assert done.status.rollout.phase == "Completed" and done.status.rollout.last_promoted == "2"
    assert done.remove_canary and done.canary is None and done.status.canary is None
    assert done.status.phase == "Ready" and done.status.stable.version == "2"


def test_steps_removed_mid_rollout_leave_no_canary_behind():
    plain = ModelDeploymentSpec.model_validate({**SPEC.to_wire(), "rollout": {}})
    result = plan(plain, serving_v1(), observe(V2, T0, stable=track("m", "1", 3), canary=track("m-canary", "2", 1)))
    assert result.serve == V2 and result.remove_canary


def test_an_abort_during_promotion_puts_the_stable_version_back_on_the_stable_track():
    status = serving_v1()
    stable, clock, canary = track("m", "1", 3), T0, None
    for _ in range(3):
        result = plan(SPEC, status, observe(V2, clock, stable=stable, canary=canary))
        status, clock = result.status, clock + 21
        canary = track("m-canary", "2", result.canary_replicas)
    promoting = plan(SPEC, status, observe(V2, clock, stable=stable, canary=canary))
    assert promoting.status.rollout.phase == "Promoting" and promoting.serve == V2
    half_way = track("m", "2", 3, ready=1)
    aborting = Observations(
        generation=1, now="t", clock=clock + 1, resolution=Resolution(model=V2), stable=half_way, canary=canary,
        requests=(Request("r1", "abort"),),
    )
    aborted = plan(SPEC, ModelDeploymentStatus.model_validate(promoting.status.to_wire()), aborting)
    assert aborted.status.rollout.phase == "Aborted"
    assert aborted.serve == V1  # rendered from the model kept in status, source and run included
    assert aborted.remove_canary and aborted.status.phase == "Degraded"
