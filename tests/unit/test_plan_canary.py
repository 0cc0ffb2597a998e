"""The reconcile decision with rollout steps: the canary state machine's answer turned into what each track
runs, status and Events. The state machine's own transitions: test_canary.py."""

from __future__ import annotations

import pytest

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.conditions import get_condition
from modelpilot.rollout.plan import Observations, plan
from modelpilot.rollout.canary import Request
from modelpilot.rollout.tracks import TrackObservation
from modelpilot.traffic import router_for

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


def observe(model, clock, stable=None, canary=None, generation=1, spec=SPEC) -> Observations:
    return Observations(
        generation=generation, now="t", clock=clock, resolution=Resolution(model=model), stable=stable, canary=canary,
        router=router_for(spec),
    )  # fmt: skip


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
        requests=(Request("r1", "abort"),), router=router_for(SPEC),
    )
    aborted = plan(SPEC, ModelDeploymentStatus.model_validate(promoting.status.to_wire()), aborting)
    assert aborted.status.rollout.phase == "Aborted"
    assert aborted.serve == V1  # rendered from the model kept in status, source and run included
    assert aborted.remove_canary and aborted.status.phase == "Degraded"


# The Gateway API router.

GATEWAY_SPEC = ModelDeploymentSpec.model_validate({
    **SPEC.to_wire(), "replicas": 4,
    "rollout": {"steps": STEPS, "trafficRouting": {"gatewayAPI": {"parentRefs": [{"name": "gw"}]}}},
})  # fmt: skip


def test_with_a_gateway_the_canary_gets_the_exact_weight_once_its_pods_are_ready():
    stable = track("m", "1", 4)
    status = plan(GATEWAY_SPEC, ModelDeploymentStatus(), observe(V1, T0, stable=stable, spec=GATEWAY_SPEC)).status
    assert status.traffic_router == "GatewayAPI"
    started = plan(GATEWAY_SPEC, status, observe(V2, T0, stable=stable, spec=GATEWAY_SPEC))
    # 25% of 4 stable pods is one canary pod; no traffic goes to it before it is ready.
    assert (started.canary_replicas, started.canary_weight, started.status.canary.weight) == (1, 0, 0)
    ready = plan(GATEWAY_SPEC, started.status, observe(V2, T0 + 1, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    assert (ready.canary_replicas, ready.canary_weight, ready.status.canary.weight) == (1, 25, 25)
    assert ready.status.rollout.step_index == 1  # the pause began with the weight in place
    later = plan(GATEWAY_SPEC, ready.status, observe(V2, T0 + 22, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    # 50%: two pods, one ready so far, so half the weight.
    assert (later.canary_replicas, later.canary_weight) == (2, 25)
    both = plan(GATEWAY_SPEC, later.status, observe(V2, T0 + 23, stable=stable, canary=track("m-canary", "2", 2), spec=GATEWAY_SPEC))
    assert both.status.rollout.phase == "Promoting" and both.canary_weight == 50


def test_a_canary_pod_of_the_replaced_version_gets_no_gateway_traffic():
    stable = track("m", "1", 4)
    status = plan(GATEWAY_SPEC, ModelDeploymentStatus(), observe(V1, T0, stable=stable, spec=GATEWAY_SPEC)).status
    status = plan(GATEWAY_SPEC, status, observe(V2, T0, stable=stable, spec=GATEWAY_SPEC)).status
    v3 = ResolvedModel(name="m", version="3", source="s3", alias="champion")
    replaced = plan(GATEWAY_SPEC, status, observe(v3, T0 + 1, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    assert replaced.canary == v3 and replaced.canary_weight == 0


def test_switching_routers_retires_the_objects_of_the_old_one():
    stable = track("m", "1", 4)
    on_gateway = plan(GATEWAY_SPEC, ModelDeploymentStatus(), observe(V1, T0, stable=stable, spec=GATEWAY_SPEC))
    assert on_gateway.retire_router is None
    back = plan(SPEC, on_gateway.status, observe(V1, T0, stable=stable))
    assert (back.retire_router, back.status.traffic_router) == ("GatewayAPI", "ReplicaRatio")
    again = plan(SPEC, back.status, observe(V1, T0, stable=stable))
    assert again.retire_router is None


def test_with_a_gateway_an_ended_rollout_keeps_the_canary_pods_for_the_scale_down_delay():
    stable = track("m", "1", 4)
    status = plan(GATEWAY_SPEC, ModelDeploymentStatus(), observe(V1, T0, stable=stable, spec=GATEWAY_SPEC)).status
    running = plan(GATEWAY_SPEC, status, observe(V2, T0, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    aborting = Observations(
        generation=1, now="t", clock=T0 + 5, resolution=Resolution(model=V2), stable=stable,
        canary=track("m-canary", "2", 1), requests=(Request("a1", "abort"),), router=router_for(GATEWAY_SPEC),
    )  # fmt: skip
    aborted = plan(GATEWAY_SPEC, running.status, aborting)
    # The route sends nothing to the canary at once; its pods go 10 s later (the default delay).
    assert aborted.status.rollout.phase == "Aborted" and aborted.canary_weight == 0
    assert not aborted.remove_canary and aborted.canary is None and aborted.requeue_after == 10
    later = plan(GATEWAY_SPEC, aborted.status, observe(V2, T0 + 9, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    assert not later.remove_canary and later.requeue_after == pytest.approx(6)
    gone = plan(GATEWAY_SPEC, later.status, observe(V2, T0 + 15, stable=stable, canary=track("m-canary", "2", 1), spec=GATEWAY_SPEC))
    assert gone.remove_canary and gone.requeue_after is None


def test_with_replica_ratio_an_aborted_canary_goes_at_once():
    stable = track("m", "1", 3)
    running = plan(SPEC, serving_v1(), observe(V2, T0, stable=stable, canary=track("m-canary", "2", 1)))
    aborting = Observations(
        generation=1, now="t", clock=T0 + 5, resolution=Resolution(model=V2), stable=stable,
        canary=track("m-canary", "2", 1), requests=(Request("a1", "abort"),), router=router_for(SPEC),
    )  # fmt: skip
    assert plan(SPEC, running.status, aborting).remove_canary


def test_a_canary_that_cannot_start_holds_the_rollout_and_says_why_while_stable_serves():
    from modelpilot.rollout.health import StartFailure

    stable = track("m", "1", 3)
    started = plan(SPEC, serving_v1(), observe(V2, T0, stable=stable))
    crashing = StartFailure("CrashLoopBackOff", "container model-server exited with code 1: boom")
    seen = Observations(
        generation=1, now="t", clock=T0 + 30, resolution=Resolution(model=V2), stable=stable,
        canary=track("m-canary", "2", 1, ready=0), canary_start_failure=crashing, router=router_for(SPEC),
    )  # fmt: skip
    stuck = plan(SPEC, started.status, seen)
    assert stuck.status.rollout.phase == "Progressing" and stuck.status.rollout.step_index == 0
    assert stuck.status.phase == "Degraded" and reason(stuck.status, "Degraded") == "CrashLoopBackOff"
    assert get_condition(stuck.status.conditions, "Ready").status == "True"  # version 1 still serves
    assert stuck.status.message.startswith("canary version 2 cannot start: container model-server exited with code 1: boom")
    assert stuck.canary == V2 and stuck.serve == V1  # nothing promoted or torn down
    recovered = plan(SPEC, stuck.status, observe(V2, T0 + 40, stable=stable, canary=track("m-canary", "2", 1)))
    assert recovered.status.phase == "Progressing" and reason(recovered.status, "Degraded") == "Healthy"


# Bake after promotion, and a registry outage mid-rollout.

BAKE_SPEC = ModelDeploymentSpec.model_validate({**SPEC.to_wire(), "rollout": {"steps": STEPS, "bakeTime": "5m"}})


def promoted(spec=SPEC):
    """Status of a rollout of version 2 that passed its steps, its stable track now running version 2."""
    status, stable, clock, canary = serving_v1(), track("m", "1", 3), T0, None
    for _ in range(4):
        result = plan(spec, status, observe(V2, clock, stable=stable, canary=canary, spec=spec))
        status, clock = result.status, clock + 21
        canary = track("m-canary", "2", result.canary_replicas)
    assert status.rollout.phase == "Promoting"
    return plan(spec, status, observe(V2, clock, stable=track("m", "2", 3), canary=canary, spec=spec)), clock


def test_a_baking_version_serves_and_says_so_then_a_rollback_puts_the_kept_version_back():
    baking, clock = promoted(BAKE_SPEC)
    st = baking.status
    assert st.rollout.phase == "Baking" and baking.serve == V2 and baking.remove_canary
    assert st.phase == "Progressing" and reason(st, "Progressing") == "Baking" and reason(st, "Ready") == "Serving"
    assert st.rollout.stable_model == V1  # kept in status: a rollback needs no registry
    aborting = Observations(
        generation=1, now="t", clock=clock + 5, resolution=Resolution(model=V2), stable=track("m", "2", 3),
        requests=(Request("r1", "abort"),), router=router_for(BAKE_SPEC),
    )
    rolled = plan(BAKE_SPEC, ModelDeploymentStatus.model_validate(st.to_wire()), aborting)
    assert rolled.serve == V1 and rolled.status.phase == "Degraded" and rolled.status.rollout.phase == "Aborted"


def test_without_a_bake_time_promotion_completes_as_soon_as_the_stable_track_runs_it():
    done, _ = promoted()
    assert done.status.rollout.phase == "Completed" and done.status.phase == "Ready"


def registry_down(clock, stable, canary=None) -> Observations:
    outage = Resolution.failed("RegistryUnreachable", "MLflow at http://mlflow is unreachable", retryable=True)
    return Observations(generation=1, now="t", clock=clock, resolution=outage, stable=stable, canary=canary, router=router_for(SPEC))


def test_a_registry_outage_mid_rollout_goes_on_with_the_recorded_version_but_never_promotes():
    status, stable, clock, canary = serving_v1(), track("m", "1", 3), T0, None
    for _ in range(2):  # setWeight 25, then into the pause
        result = plan(SPEC, status, observe(V2, clock, stable=stable, canary=canary))
        status, clock, canary = result.status, clock + 1, track("m-canary", "2", result.canary_replicas)
    down = plan(SPEC, status, registry_down(clock + 30, stable, canary))
    st = down.status
    assert down.serve == V1 and down.canary == V2 and st.model == V2
    assert get_condition(st.conditions, "ModelResolved").status == "Unknown"
    assert "MLflow at http://mlflow is unreachable" in st.message
    # Reconciles that do not ask the registry plan with the recorded outage, up to the last step and no further.
    status = st
    for _ in range(3):
        result = plan(SPEC, status, Observations(generation=1, now="t", clock=clock + 60, stable=stable,
                                                  canary=track("m-canary", "2", 3), router=router_for(SPEC)))  # fmt: skip
        status = result.status
    assert status.rollout.phase == "Paused" and status.rollout.step_index == 3 and result.serve == V1
    assert "promotion waits until the registry answers" in status.rollout.message
    back = plan(SPEC, status, observe(V2, clock + 61, stable=stable, canary=track("m-canary", "2", 3)))
    assert back.status.rollout.phase == "Promoting" and back.serve == V2


def test_a_registry_outage_with_no_rollout_under_way_keeps_serving_and_stays_ready():
    status = plan(SPEC, serving_v1(), observe(V1, T0 + 1, stable=track("m", "1", 3))).status
    down = plan(SPEC, status, registry_down(T0 + 2, track("m", "1", 3)))
    assert down.apply is False and down.status.phase == "Ready"
