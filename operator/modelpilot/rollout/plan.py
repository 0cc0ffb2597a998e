"""The reconcile decision, pure: (spec, status, observations) -> Plan(new status, what to apply).

The shell gathers observations (the registry's answer, the live Deployment, why its new pods cannot start
if they cannot), calls `plan`, then applies what it returns. Nothing here talks to a server, so every
branch is a plain unit test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..api.base import seconds
from ..api.spec import ModelDeploymentSpec
from ..api.status import CanaryStatus, ModelDeploymentStatus, ResolvedModel, StableTrackStatus
from ..registry.resolution import Resolution
from ..render.labels import CANARY, track_name
from . import canary, judging, records
from .conditions import get_condition, set_condition
from .health import StartFailure
from .tracks import TrackObservation

if TYPE_CHECKING:
    from ..traffic import Router

@dataclass(frozen=True)
class Observations:
    generation: int
    now: str
    # What the spec's reference came to this time; None when the registry was not asked (an owned object
    # changed), and the resolution recorded in status is reused if it answers this generation.
    resolution: Resolution | None = None
    stable: TrackObservation | None = None
    # Why the pods of the stable Deployment's current template cannot start (rollout/health.py).
    start_failure: StartFailure | None = None
    # Why the pods of the canary Deployment's current template cannot start.
    canary_start_failure: StartFailure | None = None
    # Model versions with ready pods on the stable track: who still serves while a new version fails.
    ready_versions: tuple[str, ...] = ()
    # Pods of another version still on the stable track, stopping ones included.
    lingering_pods: int = 0
    # An autoscaler of ours exists.
    autoscaler: bool = False
    # The canary track's Deployment, if one exists.
    canary: TrackObservation | None = None
    # `now` in seconds since the epoch, for the canary's step timing.
    clock: float = 0.0
    # Manual rollout requests on the object (rollout/requests.py).
    requests: tuple = ()
    # The spec's traffic router (traffic/); the shell picks it, and a canary needs one.
    router: Router | None = None
    # A measurement of the canary the shell took because `measurement_due` said so.
    measured: judging.Measured | None = None


@dataclass(frozen=True)
class Plan:
    status: ModelDeploymentStatus
    # The version the stable Deployment must run; None leaves the stable Deployment as it is.
    serve: ResolvedModel | None
    # Apply the owned objects (Services, autoscaler, the tracks named here); False touches nothing.
    apply: bool = True
    # Delete the autoscaler: the spec no longer asks for one.
    remove_autoscaler: bool = False
    # The version the canary Deployment must run, on `canary_replicas` pods; None leaves it as it is.
    canary: ResolvedModel | None = None
    canary_replicas: int = 0
    # Delete the canary Deployment: no canary runs.
    remove_canary: bool = False
    # Seconds until the plan changes on its own (a timed pause ends); None: only an event changes it.
    requeue_after: float | None = None
    # (warning, reason, message) of what the rollout did, for Events.
    events: tuple = ()
    # Percent of requests the router's objects send to the canary track.
    canary_weight: int = 0
    # The router whose objects go: another one took over (status.trafficRouter names the one in use).
    retire_router: str | None = None


def plan(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus, observed: Observations) -> Plan | None:
    """What to do, or None when there is nothing to decide: the body is older than a spec already handled,
    or no resolution answers this generation yet (a reconcile that asks the registry will follow)."""
    if observed.generation < (status.observed_generation or 0):
        return None
    resolution = observed.resolution
    if resolution is None:
        if resolved_for(status, observed.generation):
            resolution = Resolution(model=status.model)
        elif (resolution := _outage_for(status, observed.generation)) is None:
            return None
    remove_autoscaler = observed.autoscaler and spec is not None and spec.autoscaling is None
    if resolution.model is None:
        if not _rollout_goes_on(spec, status, resolution):
            return _plan_failure(status, observed, resolution, _deadline(spec))
        # The registry is down mid-rollout: the rollout goes on with the version it had, except promotion.
        decision = _plan_canary(spec, status, observed, status.model, blocked=resolution)
        return _with_router(replace(decision, remove_autoscaler=remove_autoscaler), status, observed)
    if spec is not None and spec.rollout.steps:
        decision = replace(_plan_canary(spec, status, observed, resolution.model), remove_autoscaler=remove_autoscaler)
    else:
        decision = _plan_resolved(status, observed, resolution.model)
        # Steps removed mid-rollout: the stable track takes the version at once, and no canary is left.
        decision = replace(decision, remove_autoscaler=remove_autoscaler, remove_canary=observed.canary is not None)
    return _with_router(decision, status, observed)


def measurement_due(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus, clock: float) -> bool:
    """Whether the shell must measure the canary before planning (rollout/judging.py says when)."""
    if spec is None or not spec.rollout.steps:
        return False
    steps, state = records.steps(spec.rollout), records.from_status(status.rollout)
    return canary.measurement_due(steps, state, records.analysis_plan(spec.rollout), clock)


def _with_router(decision: Plan, status: ModelDeploymentStatus, observed: Observations) -> Plan:
    """Record the router in use, and retire the objects of the one it replaced."""
    if observed.router is None:
        return decision
    decision.status.traffic_router = observed.router.name
    before = status.traffic_router
    return replace(decision, retire_router=before if before not in (None, observed.router.name) else None)


def resolved_for(status: ModelDeploymentStatus, generation: int) -> bool:
    """The status records what this generation's reference resolved to (not a last good version kept
    while this generation's reference fails to resolve)."""
    resolved = get_condition(status.conditions, "ModelResolved")
    return (
        status.model is not None
        and status.observed_generation == generation
        and resolved is not None
        and resolved.status == "True"
    )


def _outage_for(status: ModelDeploymentStatus, generation: int) -> Resolution | None:
    """The registry outage status records for this generation, to plan with while it lasts."""
    resolved = get_condition(status.conditions, "ModelResolved")
    if status.observed_generation != generation or resolved is None or resolved.reason not in _OUTAGES:
        return None
    return Resolution.failed(resolved.reason, resolved.message, retryable=True)


def _rollout_goes_on(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus, failure: Resolution) -> bool:
    """A registry outage does not stop a rollout under way: its analysis can still roll a bad canary back."""
    rollout = status.rollout
    return (
        failure.reason in _OUTAGES
        and spec is not None
        and bool(spec.rollout.steps)
        and status.model is not None
        and rollout is not None
        and rollout.phase in canary.ACTIVE
        and rollout.canary_version == status.model.version
    )


def _base(status: ModelDeploymentStatus, observed: Observations) -> ModelDeploymentStatus:
    stable = observed.stable
    new = status.model_copy(deep=True)
    new.observed_generation = observed.generation
    if stable is not None and stable.version is not None:
        # The template's version serves everywhere only once its rollout is done; until then the last
        # version that got there is what status names, and the new one is the one being rolled out.
        done = stable.rolled_out and observed.lingering_pods == 0
        last_good = status.stable.version if status.stable is not None else None
        new.stable = StableTrackStatus(
            version=stable.version if done else last_good,
            updating_to=None if done else stable.version,
            deployment=stable.name,
            replicas=stable.replicas,
            ready_replicas=stable.ready_replicas,
        )
    new.replicas = stable.replicas if stable else 0
    new.ready_replicas = stable.ready_replicas if stable else 0
    return new


# The registry could not be asked: nothing is known to be wrong with the spec or what serves.
_OUTAGES = {"RegistryUnreachable"}


def _deadline(spec: ModelDeploymentSpec | None) -> float:
    return seconds(spec.progress_deadline) if spec is not None else seconds(ModelDeploymentSpec.model_fields["progress_deadline"].default)


def _plan_failure(status: ModelDeploymentStatus, observed: Observations, failure: Resolution, deadline: float) -> Plan:
    stable = observed.stable
    new = _base(status, observed)
    cond = _setter(new, observed)
    serving = stable is not None and stable.version is not None
    if serving and failure.reason in _OUTAGES:
        _report_outage(new, cond, stable, failure)
        return Plan(status=new, serve=None, apply=False)
    cond("ModelResolved", False, failure.reason, failure.message)
    if serving:
        summary = f"still serving version {stable.version}: {failure.message}"
        cond("Degraded", True, failure.reason, summary)
        cond("Progressing", False, failure.reason, summary)
        ready = stable.ready_replicas > 0
        cond("Ready", ready, "Serving" if ready else "ReplicasNotReady", summary)
        new.phase, new.message = "Degraded", summary
    else:
        cond("Degraded", False, "NothingServing", "no version serves yet")
        cond("Ready", False, failure.reason, failure.message)
        new.phase = "Pending" if failure.retryable else "Failed"
        new.message = failure.message
        left = _time_left(new, observed, deadline) if failure.retryable else None
        if left is not None and left <= 0:
            # Still retried, but for someone to look at: Argo CD shows it Degraded, as a Deployment past its own.
            new.message = f"nothing serves after {deadline:g}s: {failure.message}"
            cond("Progressing", False, "ProgressDeadlineExceeded", new.message)
        else:
            cond("Progressing", failure.retryable, failure.reason, failure.message)
        return Plan(status=new, serve=None, apply=False, requeue_after=left if left is not None and left > 0 else None)
    return Plan(status=new, serve=None, apply=False)


def _time_left(status: ModelDeploymentStatus, observed: Observations, deadline: float) -> float | None:
    """Seconds until the progress deadline of a ModelDeployment that has never served, counted from when
    it last stopped being Ready (its creation, for one that never was)."""
    ready = get_condition(status.conditions, "Ready")
    try:
        since = records.moment(ready.last_transition_time)
    except (AttributeError, ValueError):  # no Ready condition yet, or a time this operator did not write
        return None
    return since + deadline - observed.clock


def _report_outage(new: ModelDeploymentStatus, cond, stable: TrackObservation, failure: Resolution) -> None:
    """A registry outage while a version serves: whether the reference still resolves is unknown, and what
    serves keeps serving, so the object stays Ready. A fleet of Ready models does not turn red for it."""
    summary = f"serving version {stable.version}; {failure.message}"
    cond("ModelResolved", None, failure.reason, failure.message)
    cond("Degraded", False, "Healthy", "")
    cond("Progressing", False, failure.reason, summary)
    ready = stable.ready_replicas > 0
    cond("Ready", ready, "Serving" if ready else "ReplicasNotReady", summary)
    new.phase = "Ready" if ready else "Progressing"
    new.message = summary


def _resolved_base(status: ModelDeploymentStatus, observed: Observations, model: ResolvedModel):
    """The new status with the resolved model recorded and ModelResolved set, and its condition setter."""
    new = _base(status, observed)
    new.model = model
    cond = _setter(new, observed)
    via = f"alias {model.alias!r} -> " if model.alias else ""
    cond("ModelResolved", True, "Resolved", f"{model.name} {via}version {model.version}")
    return new, cond


def _plan_resolved(status: ModelDeploymentStatus, observed: Observations, model: ResolvedModel) -> Plan:
    stable = observed.stable
    new, cond = _resolved_base(status, observed, model)
    cond("Degraded", False, "Healthy", "")
    current = stable is not None and stable.version == model.version
    if current and stable.rolled_out and observed.lingering_pods == 0:
        message = f"serving {model.name} version {model.version} on {stable.ready_replicas} ready replicas"
        cond("Progressing", False, "RolloutComplete", message)
        cond("Ready", True, "Serving", message)
        new.phase, new.message = "Ready", message
    elif current and observed.start_failure is not None:
        _report_stuck(new, cond, model, stable, observed)
    else:
        progress = f"{stable.ready_replicas}/{stable.replicas} replicas ready" if stable else "creating its Deployment"
        if current and stable.rolled_out:
            progress = f"waiting for {observed.lingering_pods} pods of the previous version to stop"
        message = f"rolling out {model.name} version {model.version}: {progress}"
        cond("Progressing", True, "RollingOut", message)
        cond("Ready", False, "ReplicasNotReady", message)
        new.phase, new.message = "Progressing", message
    return Plan(status=new, serve=model)


# What each rollout phase is called in the Progressing condition.
_CANARY_REASONS = {canary.PROGRESSING: "CanaryProgressing", canary.PAUSED: "CanaryPaused", canary.PROMOTING: "CanaryPromoting"}


def _plan_canary(spec: ModelDeploymentSpec, status: ModelDeploymentStatus, observed: Observations, model: ResolvedModel,
                 blocked: Resolution | None = None) -> Plan:  # fmt: skip
    """A version change with rollout steps: the canary state machine decides what each track runs. With
    `blocked` (a registry outage) `model` is the version status recorded, and nothing is promoted."""
    stable = observed.stable
    # With autoscaling the stable track runs what the autoscaler chose; the canary is sized from that.
    replicas = stable.replicas if spec.autoscaling is not None and stable is not None else spec.replicas
    decision = canary.advance(
        records.steps(spec.rollout),
        records.from_status(status.rollout),
        canary.Observed(
            desired_version=model.version, generation=observed.generation, now=observed.clock,
            replicas=replicas, router=observed.router, stable=stable, canary=observed.canary,
            requests=observed.requests, analysis=records.analysis_plan(spec.rollout), measured=observed.measured,
            bake_seconds=seconds(spec.rollout.bake_time) if spec.rollout.bake_time else 0.0,
            promotion_blocked=blocked.message if blocked is not None else None,
        ),
    )  # fmt: skip
    state = decision.state
    stable_model = _stable_model(status, state, model)
    if state.phase == canary.COMPLETED:
        new = _plan_resolved(status, observed, model).status
    else:
        new, cond = _resolved_base(status, observed, model)
        serving = stable is not None and stable.ready_replicas > 0
        stuck = _stuck_track(state, observed)
        new.message = state.message
        if state.phase == canary.ABORTED:
            why = "RolledBack" if state.history and state.history[-1].outcome == canary.ROLLED_BACK else "RolloutAborted"
            cond("Degraded", True, why, state.message)
            cond("Progressing", False, why, state.message)
            cond("Ready", serving, "Serving" if serving else "ReplicasNotReady", state.message)
            new.phase = "Degraded"
        elif state.phase == canary.BAKING:
            cond("Degraded", False, "Healthy", "")
            cond("Progressing", True, "Baking", state.message)
            cond("Ready", serving, "Serving" if serving else "ReplicasNotReady", state.message)
            new.phase = "Progressing"
        elif stuck is not None:
            # The rollout holds where it is (nothing is promoted or aborted on its own), and says why.
            track, failure = stuck
            summary = f"{track} version {state.canary_version} cannot start: {failure.message}; {state.message}"
            cond("Degraded", True, failure.reason, summary)
            cond("Progressing", False, failure.reason, summary)
            cond("Ready", serving, "Serving" if serving else "ReplicasNotReady", summary)
            new.phase = "Degraded"
            new.message = summary
        else:
            cond("Degraded", False, "Healthy", "")
            cond("Progressing", True, _CANARY_REASONS[state.phase], state.message)
            cond("Ready", False, "CanaryInProgress", state.message)
            new.phase = "Progressing"
    if blocked is not None:
        # The reference is unknown while the registry is down: said, and what status holds stays.
        cond = _setter(new, observed)
        cond("ModelResolved", None, blocked.reason, blocked.message)
        new.model = status.model
        if blocked.message not in new.message:
            new.message = f"{new.message}; {blocked.message}"
    # The stable track runs the version the state machine says: the new one once promoted, else the one
    # that served before (which also takes back a stable track an abort during promotion left half-way).
    serve = next((m for m in (model, stable_model) if m is not None and m.version == decision.stable_version_to_run), None)
    new.rollout = records.to_status(state)
    new.rollout.stable_model = stable_model
    runs_canary = decision.canary_version_to_run is not None
    weight = _canary_weight(observed, decision, replicas) if runs_canary else 0.0
    new.canary = _canary_status(decision, observed, weight) if runs_canary else None
    linger = 0.0 if runs_canary or observed.canary is None else _linger(spec, state, observed)
    return Plan(
        status=new,
        serve=serve,
        canary=model if decision.canary_version_to_run == model.version else None,
        canary_replicas=decision.canary_replicas,
        remove_canary=not runs_canary and observed.canary is not None and linger == 0,
        requeue_after=min((t for t in (decision.requeue_after, linger or None) if t is not None), default=None),
        events=tuple(decision.events),
        canary_weight=int(weight),
    )


def _stuck_track(state, observed: Observations) -> tuple[str, StartFailure] | None:
    """The track whose new pods cannot start, and why: the canary while steps run, the stable track while
    it takes the promoted version."""
    if state.phase in canary.STEPPING and observed.canary_start_failure is not None:
        live = observed.canary
        if live is not None and live.version == state.canary_version:
            return "canary", observed.canary_start_failure
    if state.phase == canary.PROMOTING and observed.start_failure is not None:
        live = observed.stable
        if live is not None and live.version == state.canary_version:
            return "promoted", observed.start_failure
    return None


def _linger(spec: ModelDeploymentSpec, state, observed: Observations) -> float:
    """Seconds the canary's pods still stay after the rollout ended, while the router stops sending to them."""
    if state.phase == canary.BAKING:
        stopped = state.step_started_at  # the canary stopped taking traffic when the bake began
    elif state.history:
        stopped = state.history[-1].finished_at
    else:
        return 0.0
    left = stopped + observed.router.scale_down_delay(spec) - observed.clock
    return max(0.0, left)


def _canary_weight(observed: Observations, decision, stable_replicas: int) -> float:
    """The canary's share of requests, as the router splits them with the canary pods that are ready."""
    live = observed.canary
    fresh = live is not None and live.current and live.version == decision.canary_version_to_run
    ready = min(live.ready_replicas, live.updated_replicas) if fresh else 0
    return observed.router.effective_weight(decision.state.requested_weight, stable_replicas, decision.canary_replicas, ready)


def _stable_model(status: ModelDeploymentStatus, state, model: ResolvedModel) -> ResolvedModel | None:
    """The resolved model of the state's stable version: the one kept in status, or the last resolution
    when that is the stable version (before a rollout starts, status.model is what the stable track serves)."""
    for candidate in (model, status.rollout.stable_model if status.rollout else None, status.model):
        if candidate is not None and candidate.version == state.stable_version:
            return candidate
    return None


def _canary_status(decision, observed: Observations, weight: float) -> CanaryStatus:
    live, stable = observed.canary, observed.stable
    return CanaryStatus(
        version=decision.canary_version_to_run,
        deployment=live.name if live is not None else track_name(stable.name, CANARY) if stable is not None else "",
        replicas=decision.canary_replicas,
        ready_replicas=live.ready_replicas if live is not None else 0,
        weight=round(weight),
        step=decision.state.step_index,
    )


def _report_stuck(
    new: ModelDeploymentStatus, cond, model: ResolvedModel, stable: TrackObservation, observed: Observations
) -> None:
    """The new version's pods cannot start: Degraded while anything still serves, Failed otherwise."""
    failure = observed.start_failure
    older = [v for v in observed.ready_versions if v != model.version]
    if older:
        serving = f"still serving version {', '.join(older)}"
    elif stable.ready_replicas > 0:
        serving = f"{stable.ready_replicas}/{stable.replicas} replicas of version {model.version} ready"
    else:
        serving = ""
    summary = f"version {model.version} cannot start: {failure.message}" + (f"; {serving}" if serving else "")
    cond("Progressing", False, failure.reason, summary)
    if serving:
        cond("Degraded", True, failure.reason, summary)
        cond("Ready", True, "Serving", serving)
        new.phase = "Degraded"
    else:
        cond("Degraded", False, "NothingServing", "no version serves")
        cond("Ready", False, failure.reason, summary)
        new.phase = "Failed"
    new.message = summary


def apply_failed(status: ModelDeploymentStatus, observed: Observations, reason: str, message: str) -> ModelDeploymentStatus:
    """The status after the plan's objects could not be applied: the API server refused (403, 422, ...), or
    an object of that name belongs to someone else. It says so, instead of "creating its Deployment"
    forever. Whatever served before still serves."""
    new = status.model_copy(deep=True)
    cond = _setter(new, observed)
    cond("Progressing", False, reason, message)
    if observed.stable is not None and observed.stable.ready_replicas > 0:
        cond("Degraded", True, reason, message)
        new.phase = "Degraded"
    else:
        cond("Degraded", False, "NothingServing", "no version serves")
        cond("Ready", False, reason, message)
        new.phase = "Failed"
    new.message = message
    return new


def _setter(status: ModelDeploymentStatus, observed: Observations):
    def cond(type_: str, value: bool | None, reason: str, message: str) -> None:
        status.conditions = set_condition(status.conditions, type_, value, reason, message, observed.now, observed.generation)

    return cond
