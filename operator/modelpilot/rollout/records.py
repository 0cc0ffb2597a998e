"""The canary state machine's values as the API writes them, and back. Pure.

`rollout/canary.py` works in seconds on the clock the caller passes in; status holds RFC 3339 times and
camelCase fields, so that people can read it and an operator restarted anywhere can resume from it.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime, timezone

from ..api.base import seconds
from ..api.spec import Rollout
from ..api.status import Rejection as RejectionRecord
from ..api.status import AnalysisStatus, MeasurementRecord, RolloutRecord, RolloutStatus
from .canary import Analysis, CanaryState, Finished, Pause, Rejection, SetWeight, Step
from .judging import AnalysisPlan, AnalysisState, Recorded

def steps(rollout: Rollout) -> tuple[Step, ...]:
    """The spec's steps as the state machine reads them."""
    out: list[Step] = []
    for step in rollout.steps:
        if step.set_weight is not None:
            out.append(SetWeight(step.set_weight, step.canary_replicas))
        elif step.pause is not None:
            out.append(Pause(seconds(step.pause.duration) if step.pause.duration else None))
        else:
            count = rollout.analysis.count
            if step.analysis.duration:
                count = max(1, int(seconds(step.analysis.duration) // seconds(rollout.analysis.interval)))
            out.append(Analysis(tuple(rollout.analysis.checks), count))
    return tuple(out)


def analysis_plan(rollout: Rollout) -> AnalysisPlan | None:
    """The spec's analysis settings as the state machine reads them; None without checks."""
    analysis = rollout.analysis
    if not analysis.checks:
        return None
    return AnalysisPlan(
        interval=seconds(analysis.interval), failure_limit=analysis.failure_limit,
        inconclusive_limit=analysis.inconclusive_limit, background=analysis.background,
        min_sample_size=analysis.min_sample_size,
    )  # fmt: skip


def timestamp(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def moment(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


# Fields status holds as they are; the others are converted below.
_TIMES = ("step_started_at", "pause_started_at", "started_at")
_PLAIN = [f.name for f in fields(CanaryState) if f.name not in (*_TIMES, "rejected", "handled_requests", "history", "analysis")]


def to_status(state: CanaryState) -> RolloutStatus:
    return RolloutStatus(
        **{name: getattr(state, name) for name in _PLAIN},
        **{name: timestamp(getattr(state, name)) for name in _TIMES},
        rejected=[RejectionRecord(version=r.version, reason=r.reason, generation=r.generation) for r in state.rejected],
        handled_requests=list(state.handled_requests),
        history=[
            RolloutRecord(
                version=f.version, previous_version=f.previous_version, outcome=f.outcome, reason=f.reason,
                started_at=timestamp(f.started_at), finished_at=timestamp(f.finished_at),
            )
            for f in state.history
        ],
        analysis=_analysis_to_status(state.analysis),
    )  # fmt: skip


def from_status(status: RolloutStatus | None) -> CanaryState | None:
    if status is None:
        return None
    return CanaryState(
        **{name: getattr(status, name) for name in _PLAIN},
        **{name: moment(getattr(status, name)) for name in _TIMES},
        rejected=tuple(Rejection(r.version, r.reason, r.generation) for r in status.rejected),
        handled_requests=tuple(status.handled_requests),
        history=tuple(
            Finished(h.version, h.previous_version, h.outcome, h.reason, moment(h.started_at), moment(h.finished_at))
            for h in status.history
        ),
        analysis=_analysis_from_status(status.analysis),
    )


def _analysis_to_status(state: AnalysisState | None) -> AnalysisStatus | None:
    if state is None:
        return None
    return AnalysisStatus(
        next_measurement_at=timestamp(state.next_at), passed=state.passed, failures=state.failures,
        inconclusive=state.inconclusive, held=state.held,
        measurements=[
            MeasurementRecord(at=timestamp(m.at), check=m.check, verdict=m.verdict, value=m.value,
                              stable_value=m.stable_value, bound=m.bound, reason=m.reason)
            for m in state.measurements
        ],
    )  # fmt: skip


def _analysis_from_status(status: AnalysisStatus | None) -> AnalysisState | None:
    if status is None:
        return None
    return AnalysisState(
        next_at=moment(status.next_measurement_at), passed=status.passed, failures=status.failures,
        inconclusive=status.inconclusive, held=status.held,
        measurements=tuple(
            Recorded(moment(m.at), m.check, m.verdict, m.value, m.stable_value, m.bound, m.reason) for m in status.measurements
        ),
    )  # fmt: skip
