"""The pure reconcile decision: phases, conditions and what to serve, for each observation."""

from __future__ import annotations

from datetime import datetime, timezone

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.rollout.conditions import Notice, get_condition, notices
from modelpilot.rollout.health import StartFailure
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.plan import Observations, plan
from modelpilot.rollout.tracks import TrackObservation

SPEC = ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": "http://mlflow:5000"}})
V1 = ResolvedModel(name="m", version="1", source="s")
V2 = ResolvedModel(name="m", version="2", source="s", alias="champion")


def track(version="1", replicas=2, ready=2, updated=2, current=True, total=None) -> TrackObservation:
    total = replicas if total is None else total
    return TrackObservation("m", version, replicas, ready, updated, ready, total, current)


def seen(now="2026-01-01T00:00:00Z", generation=1, **kw) -> Observations:
    return Observations(generation=generation, now=now, **kw)


def cond(status, type_):
    c = get_condition(status.conditions, type_)
    return (c.status, c.reason)


def test_first_resolution_rolls_out_and_reports_progressing():
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1)))
    assert result.serve == V1
    assert result.status.phase == "Progressing"
    assert cond(result.status, "ModelResolved") == ("True", "Resolved")
    assert cond(result.status, "Ready") == ("False", "ReplicasNotReady")
    assert result.status.observed_generation == 1


def test_all_replicas_of_the_resolved_version_ready_means_ready():
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track()))
    assert result.status.phase == "Ready"
    assert cond(result.status, "Ready") == ("True", "Serving")
    assert cond(result.status, "Progressing") == ("False", "RolloutComplete")
    assert (result.status.ready_replicas, result.status.stable.version) == (2, "1")


def test_old_version_still_ready_while_new_one_rolls_out_is_progressing():
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V2), stable=track(version="1")))
    assert result.serve == V2
    assert result.status.phase == "Progressing"
    assert "alias 'champion' -> version 2" in get_condition(result.status.conditions, "ModelResolved").message


def test_an_old_pod_still_counted_as_ready_does_not_finish_the_rollout():
    # Two new pods exist, one of them ready, plus one old ready pod: ready == replicas, yet not done.
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(ready=2, updated=2, total=3)))
    assert result.status.phase == "Progressing"


def test_old_pods_still_stopping_do_not_finish_the_rollout():
    # The Deployment counts only pods that are not terminating; a stopping old pod may still answer.
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(), lingering_pods=2))
    assert result.status.phase == "Progressing"
    assert "waiting for 2 pods of the previous version to stop" in result.status.message
    assert plan(SPEC, result.status, seen(resolution=Resolution(model=V1), stable=track(), lingering_pods=0)).status.phase == "Ready"


def test_template_not_yet_observed_is_not_ready():
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(current=False)))
    assert result.status.phase == "Progressing"


def test_failure_with_nothing_serving_fails_or_waits_depending_on_retryability():
    fatal = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution.failed("ModelNotFound", "no model", False)))
    assert (fatal.status.phase, fatal.serve) == ("Failed", None)
    assert cond(fatal.status, "ModelResolved") == ("False", "ModelNotFound")
    waiting = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution.failed("RegistryUnreachable", "down", True)))
    assert waiting.status.phase == "Pending"


def test_failure_while_serving_keeps_serving_and_reports_degraded():
    good = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track())).status
    bad = plan(SPEC, good, seen(generation=2, resolution=Resolution.failed("VersionNotFound", "no version 9", False), stable=track()))
    assert bad.serve is None  # nothing already serving is touched
    assert bad.status.phase == "Degraded"
    assert bad.status.model == V1  # the last good resolution is kept
    assert cond(bad.status, "Degraded") == ("True", "VersionNotFound")
    assert cond(bad.status, "Ready") == ("True", "Serving")
    assert "still serving version 1" in bad.status.message


def test_transition_time_moves_only_when_status_changes():
    first = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track())).status
    again = plan(SPEC, first, seen(now="2026-01-02T00:00:00Z", resolution=Resolution(model=V1), stable=track())).status
    assert again == first  # an unchanged world gives an identical status: no write
    lost = plan(SPEC, again, seen(now="2026-01-03T00:00:00Z", resolution=Resolution(model=V1), stable=track(ready=1))).status
    ready = get_condition(lost.conditions, "Ready")
    resolved = get_condition(lost.conditions, "ModelResolved")
    assert ready.last_transition_time == "2026-01-03T00:00:00Z"
    assert resolved.last_transition_time == "2026-01-01T00:00:00Z"


def test_notices_fire_once_per_change():
    start = ModelDeploymentStatus()
    failed = plan(SPEC, start, seen(resolution=Resolution.failed("ModelNotFound", "no model", False))).status
    (notice,) = [n for n in notices(start.conditions, failed.conditions) if n.reason == "ModelNotFound"]
    assert notice.warning
    again = plan(SPEC, failed, seen(resolution=Resolution.failed("ModelNotFound", "no model", False))).status
    assert notices(failed.conditions, again.conditions) == []


def test_a_newly_resolved_version_is_news():
    first = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track())).status
    moved = plan(SPEC, first, seen(resolution=Resolution(model=V2), stable=track())).status
    assert [n.reason for n in notices(first.conditions, moved.conditions)] == ["Resolved"]


REFUSED = StartFailure("RequirementsRefused", "fetch-model exited 6: requirements mismatch (policy Refuse)", "fetch-model", 6)


def rolling(version="2", ready=2) -> TrackObservation:
    """Version `version` rolling out on 2 replicas: its new pod is not ready, old ready pods keep serving."""
    return track(version=version, replicas=2, ready=ready, updated=1, total=3)


def test_new_pods_that_cannot_start_while_the_old_version_serves_is_degraded():
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V2), stable=rolling(), start_failure=REFUSED, ready_versions=("1",)))
    assert result.serve == V2  # the Deployment keeps what the spec says; old pods keep serving meanwhile
    st = result.status
    assert st.phase == "Degraded"
    assert st.message == (
        "version 2 cannot start: fetch-model exited 6: requirements mismatch (policy Refuse); still serving version 1"
    )
    assert cond(st, "Degraded") == ("True", "RequirementsRefused")
    assert cond(st, "Progressing") == ("False", "RequirementsRefused")
    assert cond(st, "Ready") == ("True", "Serving")
    assert get_condition(st.conditions, "Degraded").message == st.message


def test_new_pods_that_cannot_start_with_nothing_serving_is_failed():
    st = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(ready=0, updated=2), start_failure=REFUSED)).status
    assert st.phase == "Failed"
    assert st.message.startswith("version 1 cannot start: fetch-model exited 6")
    assert cond(st, "Ready") == ("False", "RequirementsRefused")
    assert cond(st, "Progressing") == ("False", "RequirementsRefused")
    assert cond(st, "Degraded") == ("False", "NothingServing")


def test_a_failure_of_the_pods_of_another_version_is_not_this_rollouts():
    # The live template still runs version 1; version 2 is about to be applied.
    result = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V2), stable=rolling(version="1"), start_failure=REFUSED))
    assert result.status.phase == "Progressing"


def test_the_report_clears_when_the_pods_start():
    stuck = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V2), stable=rolling(), start_failure=REFUSED, ready_versions=("1",)))
    starting = plan(SPEC, stuck.status, seen(now="2026-01-01T00:01:00Z", resolution=Resolution(model=V2), stable=rolling(), ready_versions=("1",)))
    assert starting.status.phase == "Progressing"
    assert cond(starting.status, "Degraded") == ("False", "Healthy")
    assert cond(starting.status, "Progressing") == ("True", "RollingOut")
    done = plan(SPEC, starting.status, seen(resolution=Resolution(model=V2), stable=track(version="2"), ready_versions=("2",)))
    assert done.status.phase == "Ready"


def test_a_stuck_rollout_is_one_warning_event_however_many_conditions_say_it():
    start = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V2), stable=rolling(), ready_versions=("1",))).status
    degraded = plan(SPEC, start, seen(resolution=Resolution(model=V2), stable=rolling(), start_failure=REFUSED, ready_versions=("1",))).status
    assert notices(start.conditions, degraded.conditions) == [
        Notice(warning=True, reason="RequirementsRefused", message=degraded.message),
        Notice(warning=False, reason="Serving", message="still serving version 1"),
    ]
    first = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(ready=0))).status
    failed = plan(SPEC, first, seen(resolution=Resolution(model=V1), stable=track(ready=0), start_failure=REFUSED)).status
    assert [(n.warning, n.reason) for n in notices(first.conditions, failed.conditions)] == [(True, "RequirementsRefused")]
    # The kubelet retrying changes nothing worth another Event.
    again = plan(SPEC, degraded, seen(now="2026-01-01T00:05:00Z", resolution=Resolution(model=V2), stable=rolling(), start_failure=REFUSED,
                                ready_versions=("1",))).status
    assert notices(degraded.conditions, again.conditions) == []


def test_a_finished_rollout_is_not_an_event():
    rolling_out = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=rolling(version="1"))).status
    done = plan(SPEC, rolling_out, seen(resolution=Resolution(model=V1), stable=track())).status
    assert [n.reason for n in notices(rolling_out.conditions, done.conditions)] == ["Serving"]


def test_a_registry_outage_while_serving_stays_ready_with_the_resolution_unknown():
    good = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track())).status
    outage = plan(SPEC, good, seen(resolution=Resolution.failed("RegistryUnreachable", "cannot reach MLflow", True), stable=track()))
    assert outage.serve is None  # what serves is left alone
    assert outage.status.phase == "Ready"
    assert cond(outage.status, "ModelResolved") == ("Unknown", "RegistryUnreachable")
    assert cond(outage.status, "Ready") == ("True", "Serving")
    assert cond(outage.status, "Degraded") == ("False", "Healthy")
    assert outage.status.model == V1
    # One Warning Event says it; Ready did not move, so nothing says the model stopped serving.
    assert [(n.warning, n.reason) for n in notices(good.conditions, outage.status.conditions)] == [
        (True, "RegistryUnreachable")
    ]
    back = plan(SPEC, outage.status, seen(resolution=Resolution(model=V1), stable=track())).status
    assert back.phase == "Ready" and cond(back, "ModelResolved") == ("True", "Resolved")


def test_a_model_gone_from_the_registry_while_serving_is_still_degraded():
    good = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track())).status
    gone = plan(SPEC, good, seen(resolution=Resolution.failed("ModelNotFound", "no model m", False), stable=track())).status
    assert gone.phase == "Degraded" and cond(gone, "ModelResolved") == ("False", "ModelNotFound")


def test_status_names_the_last_version_that_finished_rolling_out_and_the_one_under_way():
    first = plan(SPEC, ModelDeploymentStatus(), seen(resolution=Resolution(model=V1), stable=track(ready=0))).status
    assert (first.stable.version, first.stable.updating_to) == (None, "1")
    done = plan(SPEC, first, seen(resolution=Resolution(model=V1), stable=track())).status
    assert (done.stable.version, done.stable.updating_to) == ("1", None)
    # The template says version 2 before any of its pods serves: version 1 is still the one that serves.
    rolling_out = plan(SPEC, done, seen(resolution=Resolution(model=V2), stable=rolling(ready=1))).status
    assert (rolling_out.stable.version, rolling_out.stable.updating_to) == ("1", "2")
    stuck = plan(SPEC, rolling_out, seen(resolution=Resolution(model=V2), stable=rolling(), start_failure=REFUSED, ready_versions=("1",))).status
    assert (stuck.stable.version, stuck.stable.updating_to) == ("1", "2")
    finished = plan(SPEC, rolling_out, seen(resolution=Resolution(model=V2), stable=track(version="2"))).status
    assert (finished.stable.version, finished.stable.updating_to) == ("2", None)


def test_nothing_serving_past_the_progress_deadline_is_flagged_and_still_retried():
    spec = ModelDeploymentSpec.model_validate({"model": {"name": "m", "alias": "a"}, "mlflow": {"trackingUri": "http://x"},
                                               "progressDeadline": "5m"})  # fmt: skip
    t0 = 1_790_000_000.0
    now = lambda t: datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    down = Resolution.failed("RegistryUnreachable", "cannot reach MLflow at http://x", retryable=True)
    first = plan(spec, ModelDeploymentStatus(), Observations(generation=1, now=now(t0), clock=t0, resolution=down))
    assert first.status.phase == "Pending" and first.requeue_after == 300
    assert get_condition(first.status.conditions, "Progressing").reason == "RegistryUnreachable"
    later = plan(spec, first.status, Observations(generation=1, now=now(t0 + 200), clock=t0 + 200, resolution=down))
    assert abs(later.requeue_after - 100) < 0.01
    past = plan(spec, later.status, Observations(generation=1, now=now(t0 + 301), clock=t0 + 301, resolution=down))
    progressing = get_condition(past.status.conditions, "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert past.status.phase == "Pending" and past.status.message == "nothing serves after 300s: cannot reach MLflow at http://x"
