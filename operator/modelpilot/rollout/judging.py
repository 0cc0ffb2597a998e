"""Metric analysis inside a rollout, pure: when the next measurement is due, and what a measurement does
to the rollout (counts, a hold, a rollback). The measurements themselves come from `analysis/`; this
module only counts their verdicts, so the rules read in one place:

- Measurements are taken every interval from the start of the rollout (background analysis), or only
  at analysis steps when background analysis is off.
- Until the canary answered the minimum sample of requests in the window there is no verdict: the
  rollout waits and says so, and nothing is counted, so low traffic neither passes nor fails a release.
- A failed measurement counts against the failure limit; beyond it the rollout is rolled back, naming
  the check, its value and its bound.
- An inconclusive one (a provider error, no data) holds the rollout where it is and says why; beyond the
  inconclusive limit the rollout is rolled back. The next passing measurement lifts the hold.
- An analysis step is done after `count` passing measurements taken at it, with no hold.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PASS, FAIL, INCONCLUSIVE = "Pass", "Fail", "Inconclusive"
# Measurements kept in status, newest last.
MAX_MEASUREMENTS = 20


@dataclass(frozen=True)
class AnalysisPlan:
    """The spec's analysis settings, in seconds."""

    interval: float
    failure_limit: int = 0
    inconclusive_limit: int = 2
    background: bool = True
    min_sample_size: int = 0


@dataclass(frozen=True)
class Recorded:
    """One check's verdict in one measurement, as status keeps it."""

    at: float
    check: str
    verdict: str
    value: float | None
    stable_value: float | None
    bound: str
    reason: str


@dataclass(frozen=True)
class Measured:
    """One measurement: every check's verdict (objects with check, verdict, value, stable_value, bound and
    reason attributes, as analysis/verdict.py makes them), or why there is none."""

    at: float
    sample: float | None = None
    measurements: tuple = ()
    # The sample could not be read: the provider's error.
    error: str | None = None


@dataclass(frozen=True)
class AnalysisState:
    next_at: float
    passed: int = 0
    failures: int = 0
    inconclusive: int = 0
    # Why the rollout waits on analysis (inconclusive, too little traffic); None when it does not.
    held: str | None = None
    measurements: tuple[Recorded, ...] = ()


@dataclass(frozen=True)
class Outcome:
    state: AnalysisState
    # Why the rollout must be rolled back now; None when it goes on.
    rollback: str | None = None
    # (warning, reason, message) for Events.
    events: tuple = ()


def start(plan: AnalysisPlan, now: float) -> AnalysisState:
    """A rollout's analysis: the first measurement one interval after the canary starts taking traffic."""
    return AnalysisState(next_at=now + plan.interval)


def due(state: AnalysisState | None, plan: AnalysisPlan | None, at_analysis_step: bool, now: float) -> bool:
    if state is None or plan is None or not (plan.background or at_analysis_step):
        return False
    return now >= state.next_at


def record(state: AnalysisState, plan: AnalysisPlan, measured: Measured, at_analysis_step: bool) -> Outcome:
    """`state` after `measured`, and whether that ends the rollout."""
    state = replace(state, next_at=measured.at + plan.interval)
    if measured.error is not None:
        return _inconclusive(state, plan, f"the canary's request count could not be read: {measured.error}")
    if (measured.sample or 0) < plan.min_sample_size:
        held = f"waiting for traffic: the canary answered {measured.sample or 0:.0f} of the {plan.min_sample_size} requests a verdict needs"
        return Outcome(replace(state, held=held))
    kept = tuple(
        Recorded(measured.at, m.check, m.verdict, m.value, m.stable_value, m.bound, m.reason) for m in measured.measurements
    )
    state = replace(state, measurements=(*state.measurements, *kept)[-MAX_MEASUREMENTS:])
    failed = [m for m in measured.measurements if m.verdict == FAIL]
    unsure = [m for m in measured.measurements if m.verdict == INCONCLUSIVE]
    if failed:
        why = "; ".join(m.reason for m in failed)
        state = replace(state, failures=state.failures + 1)
        events = ((True, "AnalysisFailed", f"measurement failed ({state.failures} failed, {plan.failure_limit} tolerated): {why}"),)
        if state.failures > plan.failure_limit:
            return Outcome(state, rollback=f"failed analysis: {why}", events=events)
        return Outcome(state, events=events)
    if unsure:
        return _inconclusive(state, plan, "; ".join(f"{m.check}: {m.reason}" for m in unsure))
    passed = state.passed + 1 if at_analysis_step else state.passed
    return Outcome(replace(state, held=None, passed=passed))


def _inconclusive(state: AnalysisState, plan: AnalysisPlan, why: str) -> Outcome:
    state = replace(state, inconclusive=state.inconclusive + 1, held=f"analysis inconclusive: {why}")
    events = ((True, "AnalysisInconclusive", f"measurement inconclusive ({state.inconclusive} of {plan.inconclusive_limit} tolerated): {why}"),)
    if state.inconclusive > plan.inconclusive_limit:
        return Outcome(state, rollback=f"analysis inconclusive {state.inconclusive} times: {why}", events=events)
    return Outcome(state, events=events)
