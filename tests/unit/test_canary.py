"""The canary state machine: every transition, each one also after a restart (the state round-tripped
through JSON, as status stores it, and a later clock)."""

from __future__ import annotations

import json
from dataclasses import asdict

from modelpilot.rollout.canary import (
    MAX_HANDLED_REQUESTS,
    MAX_HISTORY,
    Analysis,
    CanaryState,
    Finished,
    Observed,
    Pause,
    Rejection,
    Request,
    SetWeight,
    advance,
)
from modelpilot.rollout.tracks import TrackObservation
from modelpilot.traffic.replica_ratio import ROUTER as REPLICA_RATIO

STEPS = (SetWeight(10), Pause(60), Analysis(), SetWeight(50), Pause())


def track(version="1", replicas=3, ready=None, updated=None, total=None, current=True) -> TrackObservation:
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    total = replicas if total is None else total
    return TrackObservation("m", version, replicas, ready, updated, ready, total, current)


def seen(desired="2", now=0.0, generation=1, replicas=3, stable="default", canary=None, requests=(), router=REPLICA_RATIO,
         analysis=None, measured=None, bake_seconds=0.0, promotion_blocked=None) -> Observed:  # fmt: skip
    stable = track() if stable == "default" else stable
    requests = tuple(Request(*r) for r in requests)
    return Observed(desired, generation, now, replicas, router, stable, canary, requests, analysis, measured,
                    bake_seconds, promotion_blocked)  # fmt: skip


def restart(state: CanaryState) -> CanaryState:
    """What a restarted operator reads back from status."""
    data = json.loads(json.dumps(asdict(state)))
    data["rejected"] = tuple(Rejection(**r) for r in data["rejected"])
    data["handled_requests"] = tuple(data["handled_requests"])
    data["history"] = tuple(Finished(**h) for h in data["history"])
    return CanaryState(**data)


def reasons(decision) -> list[str]:
    return [e.reason for e in decision.events]


def started(steps=STEPS, **kw):
    """A rollout of version 2 beside version 1, just begun."""
    return advance(steps, None, seen(**kw))


def at_step(index, steps=STEPS, now=0.0):
    """State of a rollout of version 2 sitting at step `index`, entered at `now`."""
    state = started(steps, now=now).state
    weights = [s for s in steps[: index + 1] if isinstance(s, SetWeight)]
    last = weights[-1] if weights else SetWeight(0)
    return CanaryState(
        **{
            **asdict(state),
            "step_index": index,
            "step_started_at": now,
            "requested_weight": last.weight,
            "canary_replicas_override": last.canary_replicas,
            "rejected": (),
            "handled_requests": (),
            "history": (),
        }
    )


# No rollout.


def test_no_rollout_when_the_desired_version_is_the_stable_one():
    d = advance(STEPS, None, seen(desired="1"))
    assert d.state.phase == "Completed" and d.state.canary_version is None
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas, d.stable_replicas) == ("1", None, 0, 3)
    assert d.events == () and d.requeue_after is None


def test_the_first_version_goes_straight_to_the_stable_track():
    d = advance(STEPS, None, seen(desired="1", stable=None))
    assert d.state.phase == "Completed"
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("1", None, 0)
    again = advance(STEPS, restart(d.state), seen(desired="1", stable=track(ready=0, updated=0)))
    assert again.state.phase == "Completed" and again.canary_version_to_run is None


# Start and setWeight.


def test_a_new_version_starts_a_canary_at_step_zero():
    d = started()
    s = d.state
    assert (s.phase, s.stable_version, s.canary_version, s.step_index, s.requested_weight) == ("Progressing", "1", "2", 0, 10)
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas, d.stable_replicas) == ("1", "2", 1, 3)
    assert reasons(d) == ["RolloutStarted", "RolloutStep"]
    assert "asked 10%, 25% with 1 of 4 pods" in d.events[1].message
    assert "waiting for canary pods" in s.message and s.generation == 1


def test_set_weight_waits_until_the_canary_pods_are_ready():
    s = started().state
    for canary in (None, track("2", 1, ready=0), track("2", 1, total=2), track("2", 1, current=False), track("3", 1)):
        d = advance(STEPS, restart(s), seen(now=5.0, canary=canary))
        assert (d.state.step_index, d.state.phase, d.events) == (0, "Progressing", ()), canary
    d = advance(STEPS, restart(s), seen(now=5.0, canary=track("2", 1)))
    assert (d.state.step_index, d.state.phase, d.state.step_started_at) == (1, "Paused", 5.0)
    assert d.requeue_after == 60 and d.canary_replicas == 1


def test_set_weight_uses_the_steps_canary_replicas():
    d = started(steps=(SetWeight(10, canary_replicas=2), Pause()))
    assert d.canary_replicas == 2 and "2 of 5 pods" in d.events[1].message


def test_weight_100_gives_the_canary_as_many_pods_as_stable():
    d = started(steps=(SetWeight(100), Pause()))
    assert (d.canary_replicas, d.stable_replicas) == (3, 3)
    assert "asked 100%, 50% with 3 of 6 pods" in d.state.message


def test_with_autoscaling_the_canary_is_sized_from_the_stable_tracks_current_replicas():
    s = started(steps=(SetWeight(20), Pause())).state
    d = advance((SetWeight(20), Pause()), s, seen(replicas=8, stable=track(replicas=8)))
    assert (d.canary_replicas, d.stable_replicas) == (2, 8)


def test_weight_zero_needs_no_canary_pods_to_move_on():
    d = started(steps=(SetWeight(0), Pause()))
    assert d.canary_replicas == 0 and d.state.step_index == 1


# Pause.


def test_a_timed_pause_resumes_after_a_restart_without_repeating_or_skipping():
    d = advance(STEPS, at_step(0), seen(now=10.0, canary=track("2", 1)))
    assert (d.state.step_index, d.state.step_started_at, d.requeue_after) == (1, 10.0, 60)
    assert reasons(d) == ["RolloutStep"]
    d = advance(STEPS, restart(d.state), seen(now=40.0, canary=track("2", 1)))
    assert (d.state.step_index, d.state.phase, d.requeue_after, d.events) == (1, "Paused", 30, ())
    assert "30s left" in d.state.message
    d = advance(STEPS, restart(d.state), seen(now=69.5, canary=track("2", 1)))
    assert (d.state.step_index, d.requeue_after) == (1, 0.5)
    d = advance(STEPS, restart(d.state), seen(now=70.0, canary=track("2", 1)))
    # The pause ends, the analysis with no checks passes, the setWeight 50 step begins: once each.
    assert d.state.step_index == 3 and d.state.requested_weight == 50
    assert reasons(d) == ["RolloutStep", "AnalysisSkipped", "RolloutStep"]
    assert advance(STEPS, restart(d.state), seen(now=71.0, canary=track("2", 1))).events == ()


def test_an_indefinite_pause_waits_for_promote():
    s = at_step(4)
    d = advance(STEPS, s, seen(now=1e9, canary=track("2", 3)))
    assert (d.state.step_index, d.state.phase, d.requeue_after) == (4, "Paused", None)
    assert "paused until promoted" in d.state.message
    d = advance(STEPS, restart(d.state), seen(now=1e9, canary=track("2", 3), requests=[("r1", "promote")]))
    assert d.state.phase == "Promoting"


# Analysis.


def test_an_analysis_step_with_no_checks_passes_at_once_and_says_so():
    d = advance(STEPS, at_step(2), seen(now=5.0, canary=track("2", 1)))
    assert d.state.step_index == 3
    skipped = next(e for e in d.events if e.reason == "AnalysisSkipped")
    assert "step 3/5: analysis has no checks: passed" == skipped.message and not skipped.warning


# Promote.


def test_promote_moves_to_the_next_step_without_waiting():
    d = advance(STEPS, started().state, seen(now=3.0, canary=None, requests=[("p1", "promote")]))
    assert (d.state.step_index, d.state.phase, d.requeue_after) == (1, "Paused", 60)
    assert "PromoteRequested" in reasons(d)


def test_promote_full_skips_every_step_left():
    d = advance(STEPS, started().state, seen(now=3.0, requests=[("p1", "promote", True)]))
    assert d.state.phase == "Promoting"
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("2", "2", 1)


def test_promote_with_no_rollout_under_way_is_recorded_and_ignored():
    d = advance(STEPS, None, seen(desired="1", requests=[("p1", "promote")]))
    assert d.state.handled_requests == ("p1",) and reasons(d) == ["RequestIgnored"]
    # A stale request never acts on a later rollout.
    d = advance(STEPS, restart(d.state), seen(desired="2", requests=[("p1", "promote")]))
    assert d.state.step_index == 0 and "PromoteRequested" not in reasons(d)


# Promotion.


def test_after_the_last_step_the_stable_track_runs_the_new_version_while_the_canary_keeps_its_share():
    d = advance(STEPS, at_step(4), seen(now=9.0, replicas=4, stable=track(replicas=4), requests=[("p", "promote")]))
    assert d.state.phase == "Promoting" and reasons(d)[-1] == "RolloutPromoting"
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas, d.stable_replicas) == ("2", "2", 4, 4)
    # Half the stable pods updated: still promoting, the canary still serves.
    halfway = track("2", 4, ready=4, updated=2, total=6)
    d = advance(STEPS, restart(d.state), seen(now=20.0, replicas=4, stable=halfway))
    assert d.state.phase == "Promoting" and d.canary_replicas == 4
    assert "2/4 stable pods updated" in d.state.message


def test_a_stale_deployment_status_does_not_complete_the_promotion():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, s, seen(stable=track("2", current=False)))
    assert d.state.phase == "Promoting"
    assert "waiting for the Deployment controller" in d.state.message
    d = advance(STEPS, s, seen(stable=track("1")))
    assert d.state.phase == "Promoting" and "waiting for the stable Deployment to take it" in d.state.message


def test_once_the_stable_track_is_rolled_out_the_canary_goes_to_zero_and_the_rollout_completes():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, restart(s), seen(now=30.0, stable=track("2")))
    assert (d.state.phase, d.state.stable_version, d.state.last_promoted, d.state.canary_version) == ("Completed", "2", "2", None)
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("2", None, 0)
    assert reasons(d) == ["RolloutCompleted"]
    quiet = advance(STEPS, restart(d.state), seen(now=31.0, stable=track("2")))
    assert quiet.events == () and quiet.state.phase == "Completed"


def test_no_steps_promotes_at_once():
    d = advance((), None, seen())
    assert d.state.phase == "Promoting" and (d.stable_version_to_run, d.canary_replicas) == ("2", 0)


def test_steps_removed_under_a_new_generation_promote():
    d = advance(STEPS[:2], at_step(3), seen(generation=2, canary=track("2", 1)))
    assert d.state.phase == "Promoting"


# Abort, rejection and retry.


def aborted():
    return advance(STEPS, started().state, seen(now=5.0, requests=[("a1", "abort")]))


def test_abort_sends_all_traffic_back_to_stable_and_rejects_the_version():
    d = aborted()
    assert d.state.phase == "Aborted"
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("1", None, 0)
    assert d.state.rejected == (Rejection("2", "aborted by request a1", 1),)
    (event,) = d.events
    assert event.warning and event.reason == "RolloutAborted" and "all traffic back to version 1" in event.message


def test_an_aborted_version_is_not_tried_again_while_the_spec_resolves_to_it():
    s = aborted().state
    for now in (6.0, 600.0):
        d = advance(STEPS, restart(s), seen(now=now))
        assert (d.state.phase, d.canary_version_to_run, d.canary_replicas, d.events) == ("Aborted", None, 0, ())


def test_an_aborted_version_is_tried_again_on_a_retry_request():
    d = advance(STEPS, restart(aborted().state), seen(now=7.0, requests=[("r1", "retry")]))
    assert (d.state.phase, d.state.canary_version, d.state.step_index, d.state.rejected) == ("Progressing", "2", 0, ())
    assert reasons(d)[:2] == ["RetryRequested", "RolloutStarted"]


def test_an_aborted_version_is_tried_again_under_a_new_generation():
    d = advance(STEPS, restart(aborted().state), seen(now=7.0, generation=2))
    assert (d.state.phase, d.state.canary_version, d.state.generation, d.state.rejected) == ("Progressing", "2", 2, ())


def test_a_move_to_another_version_starts_its_canary():
    d = advance(STEPS, restart(aborted().state), seen(desired="3", now=7.0))
    assert (d.state.phase, d.state.canary_version, d.state.stable_version) == ("Progressing", "3", "1")
    assert d.state.rejected == (Rejection("2", "aborted by request a1", 1),)


def test_a_rejected_version_moved_away_from_and_back_to_stays_rejected_until_the_spec_changes():
    s = advance(STEPS, restart(aborted().state), seen(desired="3", now=7.0)).state
    d = advance(STEPS, s, seen(desired="2", now=8.0))
    assert d.state.phase == "Completed" and d.canary_version_to_run is None and d.stable_version_to_run == "1"
    assert reasons(d) == ["RolloutAbandoned", "VersionRejected"]
    assert "version 2 was rejected (aborted by request a1)" in d.state.message
    assert advance(STEPS, d.state, seen(desired="2", now=9.0)).events == ()


def test_retry_of_a_version_that_is_not_rejected_is_ignored():
    d = advance(STEPS, started().state, seen(requests=[("r1", "retry")]))
    assert d.state.step_index == 0 and reasons(d) == ["RequestIgnored"]


def test_abort_while_promoting_rolls_the_stable_track_back():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, s, seen(stable=track("2", updated=1), requests=[("a", "abort")]))
    assert d.state.phase == "Aborted" and (d.stable_version_to_run, d.canary_replicas) == ("1", 0)
    assert "the stable track rolls back to version 1" in d.state.message


def test_abort_with_no_rollout_under_way_is_ignored():
    d = advance(STEPS, restart(aborted().state), seen(requests=[("a2", "abort")]))
    assert reasons(d) == ["RequestIgnored"] and len(d.state.rejected) == 1


# Pause and resume requests.


def test_a_pause_request_freezes_the_pause_clock_and_resume_keeps_the_time_left():
    s = advance(STEPS, at_step(1, now=0.0), seen(now=10.0, requests=[("p", "pause")])).state
    assert (s.phase, s.paused_manually, s.pause_started_at) == ("Paused", True, 10.0)
    held = advance(STEPS, restart(s), seen(now=500.0))
    assert (held.state.step_index, held.requeue_after, held.events) == (1, None, ())
    assert "resume to go on" in held.state.message
    d = advance(STEPS, restart(held.state), seen(now=1000.0, requests=[("r", "resume")]))
    assert (d.state.step_index, d.state.paused_manually, d.requeue_after) == (1, False, 50)
    assert d.state.step_started_at == 990.0


def test_a_pause_request_holds_a_set_weight_step_with_its_pods_ready():
    s = advance(STEPS, started().state, seen(requests=[("p", "pause")])).state
    d = advance(STEPS, s, seen(now=5.0, canary=track("2", 1)))
    assert d.state.step_index == 0 and d.canary_replicas == 1
    d = advance(STEPS, d.state, seen(now=6.0, canary=track("2", 1), requests=[("r", "resume")]))
    assert d.state.step_index == 1


def test_resume_does_not_end_an_indefinite_pause_step():
    d = advance(STEPS, at_step(4), seen(requests=[("p", "pause"), ("r", "resume")]))
    assert (d.state.step_index, d.state.phase) == (4, "Paused")
    assert "paused until promoted" in d.state.message


def test_promote_lifts_a_pause_request():
    s = advance(STEPS, started().state, seen(requests=[("p", "pause")])).state
    d = advance(STEPS, s, seen(now=5.0, requests=[("q", "promote")]))
    assert (d.state.step_index, d.state.paused_manually) == (1, False)


def test_pause_while_promoting_and_resume_while_running_are_ignored():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, s, seen(requests=[("x", "pause")]))
    assert d.state.phase == "Promoting" and reasons(d) == ["RequestIgnored"]
    d = advance(STEPS, started().state, seen(requests=[("y", "resume")]))
    assert reasons(d) == ["RequestIgnored"]


def test_an_unknown_action_is_a_warning():
    d = advance(STEPS, started().state, seen(requests=[("z", "explode")]))
    assert d.events[0].warning and "unknown action 'explode'" in d.events[0].message


# A newer version, or the old one again, mid-rollout.


def test_a_newer_version_replaces_the_canary_and_restarts_the_steps():
    s = advance(STEPS, at_step(3), seen(now=1.0, requests=[("p", "pause")])).state
    d = advance(STEPS, restart(s), seen(desired="3", now=50.0, canary=track("2", 3)))
    st = d.state
    assert (st.phase, st.canary_version, st.stable_version) == ("Progressing", "3", "1")
    assert (st.step_index, st.step_started_at) == (0, 50.0)
    assert (st.requested_weight, st.paused_manually) == (10, False)
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("1", "3", 1)
    assert reasons(d)[0] == "CanaryReplaced"


def test_a_newer_version_while_promoting_lets_the_stable_track_finish_the_promoted_one():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, s, seen(desired="3", stable=track("2", updated=1)))
    st = d.state
    assert (st.phase, st.stable_version, st.last_promoted, st.canary_version, st.step_index) == ("Progressing", "2", "2", "3", 0)
    assert (d.stable_version_to_run, d.canary_version_to_run) == ("2", "3")


def test_the_stable_version_wanted_again_abandons_the_rollout():
    d = advance(STEPS, started().state, seen(desired="1", now=5.0))
    assert (d.state.phase, d.state.rejected, d.canary_version_to_run, d.canary_replicas) == ("Completed", (), None, 0)
    assert reasons(d) == ["RolloutAbandoned"]
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    d = advance(STEPS, s, seen(desired="1", stable=track("2", updated=2)))
    assert d.state.phase == "Completed" and d.stable_version_to_run == "1"


def test_a_new_generation_does_not_restart_a_rollout_under_way():
    d = advance(STEPS, at_step(1, now=0.0), seen(now=10.0, generation=5))
    assert (d.state.step_index, d.state.generation, d.requeue_after) == (1, 1, 50)


# Requests act once.


def test_a_request_acts_once_even_when_replayed_after_a_restart():
    d = advance(STEPS, started().state, seen(now=1.0, requests=[("p1", "promote")]))
    assert d.state.step_index == 1
    d = advance(STEPS, restart(d.state), seen(now=2.0, requests=[("p1", "promote")]))
    assert d.state.step_index == 1 and d.events == ()


def test_requests_act_in_order_before_a_new_version_is_followed():
    d = advance(STEPS, started().state, seen(desired="3", requests=[("a", "abort")]))
    assert d.state.rejected[0].version == "2" and d.state.canary_version == "3"


def test_handled_request_ids_are_bounded_and_keep_the_latest():
    s = started().state
    for i in range(MAX_HANDLED_REQUESTS + 10):
        s = advance(STEPS, s, seen(requests=[(f"id-{i}", "resume")])).state
    assert len(s.handled_requests) == MAX_HANDLED_REQUESTS
    assert s.handled_requests[-1] == f"id-{MAX_HANDLED_REQUESTS + 9}" and "id-0" not in s.handled_requests


# A whole rollout against tracks that do what they are told.


def test_a_whole_rollout_converges_with_a_restart_at_every_turn():
    state, now, stable, canary = None, 0.0, track("1", 4), None
    seen_counts = []
    for _ in range(40):
        requests = [("go", "promote")] if state is not None and state.step_index == 4 else []
        d = advance(STEPS, state and restart(state), seen(now=now, replicas=4, stable=stable, canary=canary, requests=requests))
        state = d.state
        seen_counts.append(d.canary_replicas)
        stable = track(d.stable_version_to_run, d.stable_replicas)
        canary = track(d.canary_version_to_run, d.canary_replicas) if d.canary_version_to_run else None
        if state.phase == "Completed" and state.last_promoted == "2":
            break
        now += d.requeue_after or 1.0
    assert (state.stable_version, state.canary_version, d.canary_replicas) == ("2", None, 0)
    assert seen_counts[0] == 1 and 4 in seen_counts and seen_counts[-1] == 0
    assert len(state.handled_requests) == 1


# History: every rollout that ends leaves one entry.


def test_a_promoted_rollout_is_recorded_with_its_start_and_end():
    s = advance(STEPS, started(now=100.0).state, seen(now=110.0, requests=[("p", "promote", True)])).state
    d = advance(STEPS, restart(s), seen(now=130.0, stable=track("2")))
    assert d.state.history == (Finished("2", "1", "Promoted", "every stable pod runs it", 100.0, 130.0),)
    again = advance(STEPS, restart(d.state), seen(now=131.0, stable=track("2")))
    assert again.state.history == d.state.history


def test_an_abort_is_recorded_with_its_reason():
    (entry,) = aborted().state.history
    assert (entry.version, entry.previous_version, entry.outcome, entry.reason) == ("2", "1", "Aborted", "aborted by request a1")
    assert (entry.started_at, entry.finished_at) == (0.0, 5.0)


def test_a_replaced_and_an_abandoned_rollout_are_recorded():
    replaced = advance(STEPS, started(now=1.0).state, seen(desired="3", now=7.0))
    assert replaced.state.history == (Finished("2", "1", "Replaced", "version 3 replaced it at step 1", 1.0, 7.0),)
    assert replaced.state.started_at == 7.0
    abandoned = advance(STEPS, replaced.state, seen(desired="1", now=9.0)).state
    assert [(h.version, h.outcome) for h in abandoned.history] == [("2", "Replaced"), ("3", "Abandoned")]


def test_a_version_overtaken_while_promoting_is_recorded_as_promoted():
    s = advance(STEPS, at_step(4), seen(requests=[("p", "promote")])).state
    (entry,) = advance(STEPS, s, seen(desired="3", now=4.0, stable=track("2", updated=1))).state.history
    assert (entry.version, entry.outcome) == ("2", "Promoted")


def test_history_is_bounded_and_keeps_the_latest():
    state = started().state
    for version in range(3, MAX_HISTORY + 8):
        state = advance(STEPS, state, seen(desired=str(version), now=float(version))).state
    assert len(state.history) == MAX_HISTORY
    assert state.history[-1].version == str(MAX_HISTORY + 6) and state.history[0].version == str(MAX_HISTORY - 3)
