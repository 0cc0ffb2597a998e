"""Metric analysis inside a rollout: verdicts counted by the state machine (measurement due times, the
minimum sample, failure and inconclusive limits, analysis steps, rollback), each state read back from
status as a restarted operator would."""

from __future__ import annotations

from modelpilot.api.status import ModelDeploymentStatus
from modelpilot.rollout import records
from modelpilot.rollout.canary import Analysis, Pause, SetWeight, advance, measurement_due
from modelpilot.rollout.judging import AnalysisPlan, Measured
from modelpilot.analysis.verdict import Measurement

from tests.unit.test_canary import reasons, seen, track

PLAN = AnalysisPlan(interval=30, failure_limit=1, inconclusive_limit=1, background=True, min_sample_size=20)
STEPS = (SetWeight(25), Analysis(checks=("errors",), count=2), SetWeight(50), Pause())


def restart(state):
    """The state as a restarted operator reads it back from status (JSON, RFC 3339 times)."""
    wire = ModelDeploymentStatus(rollout=records.to_status(state)).to_wire()
    return records.from_status(ModelDeploymentStatus.model_validate(wire).rollout)


def ok(check="errors", value=0.0):
    return Measurement(check, "Pass", value, None, "max 0.05", "")


def bad(check="errors", value=0.31):
    return Measurement(check, "Fail", value, None, "max 0.05", f"{check} {value} > max 0.05")


def unsure(reason="Prometheus at http://p did not answer within 10 s"):
    return Measurement("errors", "Inconclusive", None, None, "max 0.05", reason)


def step(state, now, steps=STEPS, measured=None, **kw):
    return advance(steps, restart(state) if state else None, seen(now=now, analysis=PLAN, measured=measured, canary=track("2", 1), **kw))


def started(now=1000.0):
    return advance(STEPS, None, seen(now=now, analysis=PLAN, canary=track("2", 1)))


def test_the_first_measurement_is_due_one_interval_after_the_rollout_starts_and_wakes_the_object():
    d = started()
    assert d.state.analysis.next_at == 1030.0 and d.state.step_index == 1  # the setWeight's pod was ready
    assert d.requeue_after == 30
    assert not measurement_due(STEPS, d.state, PLAN, 1029.0) and measurement_due(STEPS, d.state, PLAN, 1030.0)
    assert not measurement_due(STEPS, d.state, None, 1030.0)


def test_an_analysis_step_is_done_after_its_count_of_passing_measurements():
    d = step(started().state, 1030.0, measured=Measured(1030.0, sample=40, measurements=(ok(),)))
    assert (d.state.step_index, d.state.analysis.passed, d.state.analysis.next_at) == (1, 1, 1060.0)
    assert "analysis, 1/2 measurements passed" in d.state.message and d.state.phase == "Progressing"
    d = step(d.state, 1060.0, measured=Measured(1060.0, sample=40, measurements=(ok(),)))
    assert d.state.step_index == 2 and "AnalysisPassed" in reasons(d)  # on to setWeight 50
    [kept] = d.state.analysis.measurements[-1:]
    assert (kept.at, kept.check, kept.verdict, kept.bound) == (1060.0, "errors", "Pass", "max 0.05")


def test_a_measurement_taken_twice_or_early_counts_once():
    first = step(started().state, 1030.0, measured=Measured(1030.0, sample=40, measurements=(ok(),)))
    again = step(first.state, 1031.0, measured=Measured(1030.0, sample=40, measurements=(ok(),)))
    assert again.state.analysis.passed == 1


def test_too_little_traffic_gets_no_verdict_and_holds_the_rollout():
    d = step(started().state, 1030.0, measured=Measured(1030.0, sample=5, measurements=(bad(),)))
    a = d.state.analysis
    assert (a.failures, a.inconclusive, a.passed, a.measurements) == (0, 0, 0, ())
    assert d.state.phase == "Paused" and "the canary answered 5 of the 20 requests a verdict needs" in d.state.message
    d = step(d.state, 1060.0, measured=Measured(1060.0, sample=25, measurements=(ok(),)))
    assert d.state.analysis.held is None and d.state.analysis.passed == 1


def test_failures_beyond_the_limit_roll_back_naming_the_check_its_value_and_bound():
    d = step(started().state, 1030.0, measured=Measured(1030.0, sample=40, measurements=(bad(),)))
    assert d.state.phase != "Aborted" and d.state.analysis.failures == 1  # one failure is tolerated
    assert "AnalysisFailed" in reasons(d)
    d = step(d.state, 1060.0, measured=Measured(1060.0, sample=40, measurements=(bad(value=0.4),)))
    assert d.state.phase == "Aborted" and d.canary_version_to_run is None and d.stable_version_to_run == "1"
    rolled = next(e for e in d.events if e.reason == "RolledBack")
    assert rolled.warning and "failed analysis: errors 0.4 > max 0.05" in rolled.message
    assert d.state.rejected[-1].reason == "failed analysis: errors 0.4 > max 0.05"
    assert (d.state.history[-1].outcome, d.state.history[-1].version) == ("RolledBack", "2")
    # Rejected: not tried again on its own.
    assert step(d.state, 2000.0).state.phase == "Aborted"


def test_an_inconclusive_measurement_holds_the_rollout_and_says_why_then_the_limit_rolls_back():
    steps = (SetWeight(25), Pause(10), SetWeight(50))
    d = advance(steps, None, seen(now=1000.0, analysis=PLAN, canary=track("2", 1)))
    d = step(d.state, 1030.0, steps=steps, measured=Measured(1030.0, sample=40, measurements=(unsure(),)))
    # The 10 s pause is over, but the rollout waits on the analysis.
    assert (d.state.phase, d.state.step_index) == ("Paused", 1)
    assert "analysis inconclusive: errors: Prometheus at http://p did not answer within 10 s" in d.state.message
    lifted = step(d.state, 1060.0, steps=steps, measured=Measured(1060.0, sample=40, measurements=(ok(),)))
    assert lifted.state.step_index == 2 and lifted.state.analysis.held is None
    d = step(d.state, 1060.0, steps=steps, measured=Measured(1060.0, error="Prometheus at http://p is unreachable: ConnectError"))
    assert d.state.phase == "Aborted" and "analysis inconclusive 2 times" in d.state.rejected[-1].reason


def test_background_analysis_off_measures_only_at_analysis_steps():
    plan = AnalysisPlan(interval=30, background=False)
    d = advance(STEPS, None, seen(now=1000.0, analysis=plan, canary=None))
    assert d.state.step_index == 0 and not measurement_due(STEPS, d.state, plan, 5000.0)
    d = advance(STEPS, d.state, seen(now=1001.0, analysis=plan, canary=track("2", 1)))
    assert d.state.step_index == 1 and measurement_due(STEPS, d.state, plan, 1030.0)


def test_promote_skips_an_analysis_step_and_nothing_is_measured_once_promoting():
    d = step(started().state, 1001.0, requests=[("p", "promote", True)])
    assert d.state.phase == "Promoting" and not measurement_due(STEPS, d.state, PLAN, 5000.0)


def test_checks_added_to_a_rollout_under_way_start_its_analysis():
    d = advance(STEPS, None, seen(now=1000.0, analysis=None, canary=track("2", 1)))
    assert d.state.analysis is None and d.state.step_index == 1
    d = step(d.state, 1010.0)
    assert d.state.analysis.next_at == 1040.0 and measurement_due(STEPS, d.state, PLAN, 1040.0)


# Bake after promotion.

BAKE_STEPS = (SetWeight(25), Analysis(checks=("errors",), count=1))


def promoted_and_rolled_out(bake_seconds=120.0):
    """A rollout of version 2 whose analysis step passed and whose stable track then took it."""
    d = advance(BAKE_STEPS, None, seen(now=1000.0, analysis=PLAN, canary=track("2", 1)))
    d = step(d.state, 1030.0, steps=BAKE_STEPS, measured=Measured(1030.0, sample=40, measurements=(ok(),)))
    assert d.state.phase == "Promoting"
    return step(d.state, 1040.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=bake_seconds)


def test_a_promoted_version_bakes_alone_on_the_stable_track_and_is_measured_throughout():
    d = promoted_and_rolled_out()
    assert d.state.phase == "Baking" and "RolloutBaking" in reasons(d)
    assert (d.stable_version_to_run, d.canary_version_to_run, d.canary_replicas) == ("2", None, 0)
    assert d.state.stable_version == "1"  # what a rollback goes back to
    assert "version 1 is kept to roll back to" in d.state.message
    # The bake is judged afresh, every interval, background analysis or not.
    assert (d.state.analysis.failures, d.state.analysis.next_at) == (0, 1070.0) and d.requeue_after == 30
    assert measurement_due(BAKE_STEPS, d.state, AnalysisPlan(interval=30, background=False), 1070.0)


def test_a_bake_that_passes_completes_once_its_time_is_up():
    d = promoted_and_rolled_out(bake_seconds=50.0)
    d = step(d.state, 1070.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=50.0,
             measured=Measured(1070.0, sample=40, measurements=(ok(),)))  # fmt: skip
    assert d.state.phase == "Baking" and abs(d.requeue_after - 20) < 0.01
    d = step(d.state, 1090.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=50.0)
    assert d.state.phase == "Completed" and d.state.stable_version == "2"
    assert (d.state.history[-1].outcome, d.state.history[-1].reason) == ("Promoted", "baked 50s")


def test_a_bake_without_a_verdict_does_not_end_on_time():
    d = promoted_and_rolled_out(bake_seconds=50.0)
    d = step(d.state, 1070.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=50.0, measured=Measured(1070.0, sample=3))
    d = step(d.state, 1095.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=50.0)
    assert d.state.phase == "Baking" and "the bake ends on a verdict: waiting for traffic" in d.state.message


def test_a_failed_check_while_baking_rolls_the_stable_track_back_to_the_previous_version():
    d = promoted_and_rolled_out()
    for at in (1070.0, 1100.0):  # the failure limit is 1
        d = step(d.state, at, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=120.0,
                 measured=Measured(at, sample=40, measurements=(bad(check="drift", value=0.9),)))  # fmt: skip
    assert d.state.phase == "Aborted" and d.stable_version_to_run == "1" and d.canary_version_to_run is None
    rolled = next(e for e in d.events if e.reason == "RolledBack")
    assert "the stable track rolls back to version 1" in rolled.message and "drift 0.9 > max 0.05" in rolled.message
    assert d.state.history[-1].outcome == "RolledBack" and d.state.rejected[-1].version == "2"
    assert any("promoted version 2" in e.message for e in d.events if e.reason == "AnalysisFailed")


def test_promote_ends_a_bake_and_abort_rolls_it_back():
    d = promoted_and_rolled_out()
    ended = step(d.state, 1050.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=120.0, requests=[("p", "promote")])
    assert ended.state.phase == "Completed" and ended.state.history[-1].reason == "baked until a promote request"
    aborted = step(d.state, 1050.0, steps=BAKE_STEPS, stable=track("2", 3), bake_seconds=120.0, requests=[("a", "abort")])
    assert aborted.state.phase == "Aborted" and aborted.stable_version_to_run == "1"


def test_a_newer_version_while_baking_keeps_the_baked_one_and_starts_its_own_canary():
    d = promoted_and_rolled_out()
    d = step(d.state, 1050.0, steps=BAKE_STEPS, desired="3", stable=track("2", 3), bake_seconds=120.0)
    assert d.state.history[-1].outcome == "Promoted" and d.state.stable_version == "2"
    assert d.state.canary_version == "3" and d.stable_version_to_run == "2"


# A registry outage mid-rollout.


def test_while_promotion_is_blocked_a_canary_that_passed_its_steps_waits_and_a_bad_one_still_rolls_back():
    blocked = "MLflow at http://mlflow is unreachable"
    d = advance(BAKE_STEPS, None, seen(now=1000.0, analysis=PLAN, canary=track("2", 1)))
    waiting = step(d.state, 1030.0, steps=BAKE_STEPS, promotion_blocked=blocked,
                   measured=Measured(1030.0, sample=40, measurements=(ok(),)))  # fmt: skip
    assert waiting.state.phase == "Paused" and waiting.state.step_index == 2 and waiting.canary_replicas == 1
    assert "promotion waits until the registry answers: " + blocked in waiting.state.message
    # Still measured: failures roll back without the registry.
    d = waiting
    for at in (1060.0, 1090.0):
        d = step(d.state, at, steps=BAKE_STEPS, promotion_blocked=blocked, measured=Measured(at, sample=40, measurements=(bad(),)))
    assert d.state.phase == "Aborted" and d.stable_version_to_run == "1"
    # The registry back and the analysis passing: promoted.
    back = step(waiting.state, 1060.0, steps=BAKE_STEPS, measured=Measured(1060.0, sample=40, measurements=(ok(),)))
    assert back.state.phase == "Promoting"


def test_an_inconclusive_measurement_while_promotion_was_blocked_still_holds_promotion():
    blocked = "MLflow at http://mlflow is unreachable"
    d = advance(BAKE_STEPS, None, seen(now=1000.0, analysis=PLAN, canary=track("2", 1)))
    d = step(d.state, 1030.0, steps=BAKE_STEPS, promotion_blocked=blocked, measured=Measured(1030.0, sample=40, measurements=(ok(),)))
    d = step(d.state, 1060.0, steps=BAKE_STEPS, promotion_blocked=blocked, measured=Measured(1060.0, error="unreachable"))
    d = step(d.state, 1061.0, steps=BAKE_STEPS)  # the registry is back, Prometheus not yet
    assert d.state.phase == "Paused" and "analysis inconclusive" in d.state.message
