"""The canary rollout, pure: (steps, state, observations) -> Decision(new state, what each track runs).

When the version to serve changes, the new version comes up on the canary track beside the stable one and
takes traffic step by step (setWeight, pause, analysis). After the last step it is promoted: the stable
track rolls out the new version while the canary keeps its share; once every stable pod runs it and is
ready, the canary goes to zero pods and the rollout is Completed, or first Baking when a bake time is
set: the promoted version serves alone while the analysis goes on watching it, and the previous version's
pods are kept scaled down by the stable Deployment (its old ReplicaSet), so a failed check rolls back to
it without asking the registry. An abort sends all traffic back to the
stable track at once and records the version as rejected.

Everything a rollout needs to go on lives in `CanaryState`, which status holds, and the clock is passed
in: an operator restarted at any moment resumes at the same step with the pause time that was left.

Phases: Progressing (a step is under way), Paused (a pause step, an analysis that needs a person, or a
pause request), Promoting (the stable track is rolling out the new version), Baking (promoted, still
watched for the bake time; an abort or a failed check rolls the stable track back), Completed (no rollout under
way: the stable track serves `stable_version`; also the state before the first rollout), Aborted (the
last rollout was rejected; the stable track serves `stable_version`).

Rules decided here:
- The first version of a ModelDeployment goes straight to the stable track: there is nothing to compare
  a canary with.
- A rejected version is not tried again on its own, even if the reference moves away and back, until the
  spec changes (a new generation) or a retry request comes while the spec resolves to it.
- A new generation does not restart a rollout under way: only the version matters to the canary.
- A newer version mid-rollout replaces the canary and restarts at step 0. During Promoting the stable
  track keeps going to the version that passed its steps, and the newer canary runs beside it.
- The reference moving back to the stable version mid-rollout abandons the rollout (nothing is rejected).
- A pause request freezes the step, its pause clock included; resume restarts it with the time left.
  Resume lifts only a pause request: an indefinite pause step waits for promote. Promote lifts a pause
  request too. Nothing pauses Promoting: it is a Deployment's rolling update.
- Requests act in the order given, before the desired version is followed, so a request made against
  the canary a user saw acts on that canary. Each id acts once; requests that find nothing to act on are
  recorded too, so a stale request never acts on a later rollout.
- Metric analysis (rollout/judging.py) measures every interval through the rollout, or at analysis
  steps only; a failure beyond the limit rolls back (an abort the operator decides, recorded as
  RolledBack), an inconclusive measurement holds the step. An analysis step with checks is done after its
  count of passing measurements; one with no checks passes at once.
- While the registry cannot be asked (`promotion_blocked`), steps and analysis go on, so a bad canary is
  still rolled back, but a canary that passed every step waits: whether the reference still wants it is
  unknown. A person's full promote request still promotes.
- Baking measures the promoted version on the stable track with the absolute bounds of the checks (no
  other version serves to compare with). The bake ends once its time is up and the last measurement gave
  a verdict; a promote request ends it at once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, Union

from . import judging
from .tracks import TrackObservation

if TYPE_CHECKING:
    from ..traffic import Router

PROGRESSING, PAUSED, PROMOTING, BAKING = "Progressing", "Paused", "Promoting", "Baking"
COMPLETED, ABORTED = "Completed", "Aborted"
STEPPING = (PROGRESSING, PAUSED)
# Phases in which the analysis measures: the canary while steps run, the promoted version while it bakes.
JUDGED = (PROGRESSING, PAUSED, BAKING)
ACTIVE = (PROGRESSING, PAUSED, PROMOTING, BAKING)

# Request ids kept in status: enough for the handful a rollout sees, small enough for a status object.
MAX_HANDLED_REQUESTS = 32
MAX_REJECTED = 8
MAX_HISTORY = 10

# How a rollout ended, in its history entry.
PROMOTED, ABORTED_OUTCOME, ABANDONED, REPLACED, ROLLED_BACK = "Promoted", "Aborted", "Abandoned", "Replaced", "RolledBack"


@dataclass(frozen=True)
class SetWeight:
    """Send `weight` percent of traffic to the canary; `canary_replicas` overrides the computed pods."""

    weight: int
    canary_replicas: int | None = None


@dataclass(frozen=True)
class Pause:
    """Hold the current weight for `seconds`, or until promoted when None."""

    seconds: float | None = None


@dataclass(frozen=True)
class Analysis:
    """Judge the canary with these checks: done after `count` passing measurements."""

    checks: tuple = ()
    count: int = 1


Step = Union[SetWeight, Pause, Analysis]


@dataclass(frozen=True)
class Rejection:
    """A version a rollout rejected, and why; it holds for the spec generation it was rejected under."""

    version: str
    reason: str
    generation: int


@dataclass(frozen=True)
class Finished:
    """A past rollout: what it tried, how it ended and when."""

    version: str
    previous_version: str | None
    outcome: str
    reason: str
    started_at: float | None
    finished_at: float


@dataclass(frozen=True)
class CanaryState:
    """What status holds about rollouts: enough to resume one after a restart."""

    phase: str
    # The version every stable pod ran when the last rollout finished; the one an abort goes back to.
    stable_version: str | None
    # The version under rollout, or the one the last abort rejected.
    canary_version: str | None = None
    step_index: int = 0
    # When the current step began, in the caller's clock; moved forward by the time a pause request held it.
    step_started_at: float | None = None
    # When a pause request took hold.
    pause_started_at: float | None = None
    paused_manually: bool = False
    # The last setWeight entered: its weight and canaryReplicas.
    requested_weight: int = 0
    canary_replicas_override: int | None = None
    last_promoted: str | None = None
    rejected: tuple[Rejection, ...] = ()
    # The latest request ids seen, oldest first, at most MAX_HANDLED_REQUESTS.
    handled_requests: tuple[str, ...] = ()
    # The spec generation the current (or last) rollout started under.
    generation: int = 0
    message: str = ""
    # When the current (or last) rollout started, in the caller's clock.
    started_at: float | None = None
    # Rollouts that ended, oldest first, at most MAX_HISTORY.
    history: tuple[Finished, ...] = ()
    # Metric analysis of the current (or last) rollout; None without checks.
    analysis: judging.AnalysisState | None = None


class Request(NamedTuple):
    """A manual request: promote (next step, or every step when `full`), abort, retry, pause, resume."""

    id: str
    action: str
    full: bool = False


@dataclass(frozen=True)
class Observed:
    desired_version: str
    generation: int
    now: float
    # Pods the stable track runs: spec.replicas, or with autoscaling the autoscaler's current count.
    replicas: int
    # How a weight becomes pods and a share of requests (the shell picks it from the spec).
    router: Router
    stable: TrackObservation | None = None
    canary: TrackObservation | None = None
    requests: tuple[Request, ...] = ()
    # The spec's analysis settings (None without checks), and a measurement the shell just took.
    analysis: judging.AnalysisPlan | None = None
    measured: judging.Measured | None = None
    # Seconds the promoted version bakes before the rollout is Completed; 0 completes it at once.
    bake_seconds: float = 0.0
    # Why a canary that passed its steps may not be promoted now (the registry is unreachable); None: it may.
    promotion_blocked: str | None = None


class Event(NamedTuple):
    warning: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    state: CanaryState
    stable_version_to_run: str
    # None: no canary; its Deployment, if any, goes to zero pods.
    canary_version_to_run: str | None
    canary_replicas: int
    stable_replicas: int
    # Seconds until the state changes on its own (a timed pause ends); None: only an event changes it.
    requeue_after: float | None
    events: tuple[Event, ...] = ()


def advance(steps, state: CanaryState | None, observed: Observed) -> Decision:
    """The next state and what each track runs, for the rollout `steps` and what was observed."""
    run = _Run(tuple(steps), state, observed)
    run.handle_requests()
    run.follow_desired()
    run.judge()
    run.progress()
    return run.decision()


def measurement_due(steps, state: CanaryState | None, analysis: judging.AnalysisPlan | None, now: float) -> bool:
    """Whether the shell must take a measurement before the next `advance`."""
    if state is None or state.phase not in JUDGED:
        return False
    return judging.due(state.analysis, analysis, _measures_always(tuple(steps), state), now)


def _at_analysis(steps: tuple, state: CanaryState) -> bool:
    return state.step_index < len(steps) and isinstance(steps[state.step_index], Analysis)


def _measures_always(steps: tuple, state: CanaryState) -> bool:
    """Measured even without background analysis: at an analysis step, and while baking."""
    return state.phase == BAKING or _at_analysis(steps, state)


class _Run:
    """One call of `advance`: the state being built, plus the events and requeue it produces."""

    def __init__(self, steps: tuple, state: CanaryState | None, observed: Observed) -> None:
        self.steps, self.seen, self.now = steps, observed, observed.now
        self.events: list[Event] = []
        self.requeue: float | None = None
        self.state = state or _initial(observed)
        # Rejections under an older generation are void: the spec changed since.
        live = tuple(r for r in self.state.rejected if r.generation >= observed.generation)
        self.state = replace(self.state, rejected=live)

    def set(self, **changes) -> None:
        self.state = replace(self.state, **changes)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event(warning, reason, message))

    def record(self, outcome: str, reason: str) -> None:
        """Close the rollout under way in the history; call before the state forgets its versions."""
        state = self.state
        entry = Finished(state.canary_version, state.stable_version, outcome, reason, state.started_at, self.now)
        self.set(history=(*state.history, entry)[-MAX_HISTORY:])

    # Requests.

    def handle_requests(self) -> None:
        for request in self.seen.requests:
            if request.id in self.state.handled_requests:
                continue
            handled = (*self.state.handled_requests, request.id)[-MAX_HANDLED_REQUESTS:]
            self.set(handled_requests=handled)
            act = getattr(self, f"_request_{request.action}", None)
            if act is None:
                self.event("RequestIgnored", f"request {request.id}: unknown action {request.action!r}", warning=True)
            elif (why_not := act(request)) is not None:
                self.event("RequestIgnored", f"request {request.id} ({request.action}): {why_not}")

    def _request_promote(self, request: Request) -> str | None:
        if self.state.phase == BAKING:
            self.event("PromoteRequested", f"request {request.id}: bake of version {self.state.canary_version} ended")
            self._complete("baked until a promote request")
            return None
        if self.state.phase not in STEPPING:
            return "no canary steps under way"
        self._lift_pause()
        if request.full:
            self.event("PromoteRequested", f"request {request.id}: promoting version {self.state.canary_version} now")
            self._promote()
        else:
            done = f"step {self.state.step_index + 1}/{len(self.steps)}"
            self.event("PromoteRequested", f"request {request.id}: {done} done, going on")
            self._enter(self.state.step_index + 1)
        return None

    def _request_abort(self, request: Request) -> str | None:
        if self.state.phase not in ACTIVE:
            return "no rollout under way"
        self._abort(f"aborted by request {request.id}")
        return None

    def _request_retry(self, request: Request) -> str | None:
        version = self.seen.desired_version
        if not self._rejected(version):
            return f"version {version} is not rejected"
        self.set(rejected=tuple(r for r in self.state.rejected if r.version != version))
        self.event("RetryRequested", f"request {request.id}: trying version {version} again")
        return None

    def _request_pause(self, request: Request) -> str | None:
        if self.state.phase not in STEPPING:
            return "no canary steps under way to pause"
        if self.state.paused_manually:
            return "already paused"
        message = f"paused by request {request.id}; resume to go on"
        self.set(phase=PAUSED, paused_manually=True, pause_started_at=self.now, message=message)
        self.event("RolloutPaused", message)
        return None

    def _request_resume(self, request: Request) -> str | None:
        if not self.state.paused_manually:
            return "not paused by a request"
        self._lift_pause()
        self.event("RolloutResumed", f"request {request.id}: resuming step {self.state.step_index + 1}")
        return None

    def _lift_pause(self) -> None:
        if not self.state.paused_manually:
            return
        held = self.now - self.state.pause_started_at
        started = self.state.step_started_at
        self.set(
            phase=PROGRESSING,
            paused_manually=False,
            pause_started_at=None,
            step_started_at=None if started is None else started + held,
        )

    # The version to roll out.

    def follow_desired(self) -> None:
        desired, state = self.seen.desired_version, self.state
        if state.phase in ACTIVE:
            if desired == state.canary_version:
                return
            if desired == state.stable_version or self._rejected(desired):
                self._abandon()
            else:
                if state.phase in (PROMOTING, BAKING):
                    # It passed its steps and the stable track already moves to it (or runs it): keep it there.
                    how = "its bake was cut short" if state.phase == BAKING else "the stable track was taking it"
                    self.record(PROMOTED, f"passed its steps; {how} when version {desired} came")
                    self.set(stable_version=state.canary_version, last_promoted=state.canary_version)
                else:
                    self.record(REPLACED, f"version {desired} replaced it at step {state.step_index + 1}")
                self._start(replacing=state.canary_version)
                return
        if desired == self.state.stable_version:
            return
        if self._rejected(desired):
            if self.state.phase == ABORTED and desired == self.state.canary_version:
                return  # the abort's own message already says so
            rejection = next(r for r in self.state.rejected if r.version == desired)
            message = (
                f"version {desired} was rejected ({rejection.reason}); serving version {self.state.stable_version}. "
                "A retry request or a spec change tries it again"
            )
            if message != self.state.message:
                self.event("VersionRejected", message, warning=True)
            self.set(message=message)
            return
        self._start(replacing=None)

    def _start(self, replacing: str | None) -> None:
        version = self.seen.desired_version
        self.set(
            phase=PROGRESSING,
            canary_version=version,
            generation=self.seen.generation,
            paused_manually=False,
            pause_started_at=None,
            requested_weight=0,
            canary_replicas_override=None,
            started_at=self.now,
            analysis=judging.start(self.seen.analysis, self.now) if self.seen.analysis else None,
        )
        if replacing is None:
            self.event("RolloutStarted", f"canary of version {version} beside version {self.state.stable_version}")
        else:
            self.event("CanaryReplaced", f"version {version} replaces canary version {replacing}; steps restart")
        self._enter(0)

    def _abandon(self) -> None:
        dropped = self.state.canary_version
        message = f"version {self.seen.desired_version} is wanted instead of {dropped}: rollout of {dropped} abandoned"
        self.record(ABANDONED, f"the reference moved to version {self.seen.desired_version}")
        self.set(phase=COMPLETED, canary_version=None, paused_manually=False, pause_started_at=None, message=message)
        self.event("RolloutAbandoned", message)

    def _abort(self, reason: str, rolled_back: bool = False) -> None:
        """End the rollout: a person's abort, or a rollback the analysis decided (`rolled_back`)."""
        version = self.state.canary_version
        rejected = (*(r for r in self.state.rejected if r.version != version), Rejection(version, reason, self.seen.generation))
        stable = self.state.stable_version
        if self.state.phase in (PROMOTING, BAKING):
            # Some stable pods (while baking, all of them) already run it: they roll back, as fast as the Deployment allows.
            message = f"version {version} {reason}: the stable track rolls back to version {stable}"
        else:
            message = f"version {version} {reason}: all traffic back to version {stable}"
        self.record(ROLLED_BACK if rolled_back else ABORTED_OUTCOME, reason)
        self.set(
            phase=ABORTED,
            rejected=rejected[-MAX_REJECTED:],
            paused_manually=False,
            pause_started_at=None,
            message=message,
        )
        self.event("RolledBack" if rolled_back else "RolloutAborted", message, warning=True)

    def _rejected(self, version: str) -> bool:
        return any(r.version == version for r in self.state.rejected)

    # Analysis.

    def judge(self) -> None:
        if self.seen.analysis is not None and self.state.analysis is None and self.state.phase in JUDGED:
            # Checks added to the spec of a rollout under way: its analysis starts now.
            self.set(analysis=judging.start(self.seen.analysis, self.now))
        measured, analysis = self.seen.measured, self.state.analysis
        if measured is None or analysis is None or self.seen.analysis is None or self.state.phase not in JUDGED:
            return
        if measured.at < analysis.next_at:
            return  # taken for an earlier state, or twice: each interval counts once
        outcome = judging.record(analysis, self.seen.analysis, measured, _at_analysis(self.steps, self.state))
        subject = "promoted" if self.state.phase == BAKING else "canary"
        self.set(analysis=outcome.state)
        for warning, reason, message in outcome.events:
            self.event(reason, f"{subject} version {self.state.canary_version}: {message}", warning=warning)
        if outcome.rollback is not None:
            self._abort(outcome.rollback, rolled_back=True)

    def _analysis_active(self) -> bool:
        plan = self.seen.analysis
        return (
            self.state.phase in JUDGED
            and self.state.analysis is not None
            and plan is not None
            and (plan.background or _measures_always(self.steps, self.state))
        )

    # Steps.

    def progress(self) -> None:
        # Each pass either stops or moves one step on, so this ends within len(steps) + 1 passes.
        for _ in range(len(self.steps) + 1):
            if self.state.phase not in STEPPING or self.state.paused_manually:
                break
            if self._analysis_active() and self.state.analysis.held:
                self._hold(PAUSED, f"step {min(self.state.step_index + 1, len(self.steps))}/{len(self.steps)}: {self.state.analysis.held}")
                break
            if self.state.step_index >= len(self.steps):
                # Every step passed while promotion was blocked, or a new generation removed the steps left.
                self._enter(len(self.steps))
                break
            if not self._step_done(self.steps[self.state.step_index]):
                break
            self._enter(self.state.step_index + 1)
        if self.state.phase == PROMOTING:
            self._check_promoted()
        if self.state.phase == BAKING:
            self._check_baked()
        if self._analysis_active():
            left = max(0.1, self.state.analysis.next_at - self.now)
            self.requeue = left if self.requeue is None else min(self.requeue, left)

    def _enter(self, index: int) -> None:
        if index >= len(self.steps):
            blocked = self.seen.promotion_blocked
            if blocked is None:
                self._promote()
            else:
                self.set(step_index=len(self.steps))
                self._hold(PAUSED, f"every step passed; promotion waits until the registry answers: {blocked}")
            return
        step, label = self.steps[index], f"step {index + 1}/{len(self.steps)}"
        self.set(phase=PROGRESSING, step_index=index, step_started_at=self.now)
        if isinstance(step, Analysis) and self.state.analysis is not None:
            self.set(analysis=replace(self.state.analysis, passed=0))
        if isinstance(step, SetWeight):
            self.set(requested_weight=step.weight, canary_replicas_override=step.canary_replicas)
            self.event("RolloutStep", f"{label}: setWeight, {self._split()}")
        elif isinstance(step, Pause):
            how = "until promoted" if step.seconds is None else f"for {step.seconds:g}s"
            self.event("RolloutStep", f"{label}: pause {how}")
        else:
            self.event("RolloutStep", f"{label}: analysis")

    def _step_done(self, step: Step) -> bool:
        label = f"step {self.state.step_index + 1}/{len(self.steps)}"
        if isinstance(step, SetWeight):
            if self._canary_ready():
                return True
            ready = self.seen.canary.ready_replicas if self.seen.canary else 0
            self._hold(PROGRESSING, f"{label}: waiting for canary pods, {ready} ready; {self._split()}")
        elif isinstance(step, Pause) and step.seconds is None:
            self._hold(PAUSED, f"{label}: paused until promoted")
        elif isinstance(step, Pause):
            left = self.state.step_started_at + step.seconds - self.now
            if left <= 0:
                return True
            self.requeue = left
            self._hold(PAUSED, f"{label}: paused, {left:.0f}s left")
        elif not step.checks:
            self.event("AnalysisSkipped", f"{label}: analysis has no checks: passed")
            return True
        else:
            passed = self.state.analysis.passed if self.state.analysis is not None else 0
            if passed >= step.count:
                self.event("AnalysisPassed", f"{label}: {passed} measurements passed every check")
                return True
            self._hold(PROGRESSING, f"{label}: analysis, {passed}/{step.count} measurements passed")
        return False

    def _hold(self, phase: str, message: str) -> None:
        self.set(phase=phase, message=f"canary version {self.state.canary_version}: {message}")

    def _canary_ready(self) -> bool:
        """The canary track runs exactly the pods the current weight asks for, all of the new version and ready."""
        want, canary = self._canary_count(), self.seen.canary
        if want == 0:
            return canary is None or canary.total_replicas == 0
        if canary is None or canary.version != self.state.canary_version:
            return False
        return canary.replicas == want and canary.rolled_out

    def _promote(self) -> None:
        version = self.state.canary_version
        message = f"promoting version {version}: the stable track rolls it out while the canary keeps its share"
        self.set(phase=PROMOTING, step_index=len(self.steps), step_started_at=self.now, message=message)
        self.event("RolloutPromoting", message)

    def _check_promoted(self) -> None:
        version, stable = self.state.canary_version, self.seen.stable
        if stable is not None and stable.version == version and stable.rolled_out:
            if self.seen.bake_seconds > 0:
                self._bake()
            else:
                self._complete("every stable pod runs it")
        else:
            if stable is None or stable.version != version:
                progress = "waiting for the stable Deployment to take it"
            elif not stable.current:
                progress = "waiting for the Deployment controller to see the new template"
            else:
                progress = f"{stable.updated_replicas}/{stable.replicas} stable pods updated, {stable.ready_replicas} ready"
            self.set(message=f"promoting version {version}: {progress}")

    def _bake(self) -> None:
        version, previous, bake = self.state.canary_version, self.state.stable_version, self.seen.bake_seconds
        message = f"version {version} serves on every stable pod and bakes for {bake:g}s; version {previous} is kept to roll back to"
        plan, analysis = self.seen.analysis, self.state.analysis
        if plan is not None:
            # The bake is judged on its own: the canary's counts are done with.
            fresh = judging.start(plan, self.now)
            analysis = fresh if analysis is None else replace(fresh, measurements=analysis.measurements)
        self.set(phase=BAKING, step_started_at=self.now, requested_weight=0, canary_replicas_override=None,
                 analysis=analysis, message=message)  # fmt: skip
        self.event("RolloutBaking", message)

    def _check_baked(self) -> None:
        version, previous = self.state.canary_version, self.state.stable_version
        left = self.state.step_started_at + self.seen.bake_seconds - self.now
        held = self.state.analysis.held if self.state.analysis is not None and self.seen.analysis is not None else None
        if left > 0:
            self.requeue = left if self.requeue is None else min(self.requeue, left)
            self.set(message=f"version {version} bakes, {left:.0f}s left; version {previous} is kept to roll back to")
        elif held:
            self.set(message=f"version {version} baked its time; the bake ends on a verdict: {held}")
        else:
            self._complete(f"baked {self.seen.bake_seconds:g}s")

    def _complete(self, how: str) -> None:
        version = self.state.canary_version
        message = f"version {version} promoted: every stable pod runs it; the canary is scaled to zero"
        if self.state.phase == BAKING:
            message = f"version {version} promoted: {how}"
        self.record(PROMOTED, how)
        self.set(
            phase=COMPLETED,
            stable_version=version,
            canary_version=None,
            last_promoted=version,
            requested_weight=0,
            canary_replicas_override=None,
            step_started_at=None,
            message=message,
        )
        self.event("RolloutCompleted", message)

    # Result.

    def _canary_count(self) -> int:
        return self.seen.router.canary_pods(self.state.requested_weight, self.seen.replicas, self.state.canary_replicas_override)

    def _split(self) -> str:
        return self.seen.router.describe(self.state.requested_weight, self._canary_count(), self.seen.replicas)

    def decision(self) -> Decision:
        state = self.state
        stable_version = state.stable_version or self.seen.desired_version
        if state.phase in STEPPING:
            stable, canary, count = stable_version, state.canary_version, self._canary_count()
        elif state.phase == PROMOTING:
            stable, canary, count = state.canary_version, state.canary_version, self._canary_count()
        elif state.phase == BAKING:
            stable, canary, count = state.canary_version, None, 0
        else:
            stable, canary, count = stable_version, None, 0
        return Decision(
            state=state,
            stable_version_to_run=stable,
            canary_version_to_run=canary,
            canary_replicas=count,
            stable_replicas=self.seen.replicas,
            requeue_after=self.requeue,
            events=tuple(self.events),
        )


def _initial(observed: Observed) -> CanaryState:
    """The state before any rollout: the stable track's version serves; with nothing serving yet, the
    desired version goes straight to the stable track."""
    serving = observed.stable.version if observed.stable is not None else None
    version = serving or observed.desired_version
    return CanaryState(
        phase=COMPLETED, stable_version=version, generation=observed.generation, message=f"serving version {version}"
    )
