"""The reconcile decision, pure: (spec, status, observations) -> (new status, which version to serve).

The shell gathers observations (the registry's answer, the live Deployment, why its new pods cannot start
if they cannot), calls `plan`, then applies what it returns. Nothing here talks to a server, so every
branch is a plain unit test.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.status import ModelDeploymentStatus, ResolvedModel, StableTrackStatus
from .conditions import set_condition
from .health import StartFailure


@dataclass(frozen=True)
class ResolveFailure:
    """Why the spec's model reference did not resolve this time."""

    reason: str
    message: str
    retryable: bool


@dataclass(frozen=True)
class TrackObservation:
    """What the API server says about one track's Deployment."""

    name: str
    version: str | None
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    # Pods of any template, old ones included: a rollout is done only when no old pod is left.
    total_replicas: int
    # The Deployment controller has seen the latest pod template (its observedGeneration caught up).
    current: bool

    @classmethod
    def from_deployment(cls, body: dict, version_label: str) -> TrackObservation:
        meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {}) or {}
        template_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        return cls(
            name=meta.get("name", ""),
            version=template_labels.get(version_label),
            replicas=spec.get("replicas", 1),
            ready_replicas=status.get("readyReplicas", 0),
            updated_replicas=status.get("updatedReplicas", 0),
            available_replicas=status.get("availableReplicas", 0),
            total_replicas=status.get("replicas", 0),
            current=status.get("observedGeneration", 0) >= meta.get("generation", 0),
        )

    @property
    def rolled_out(self) -> bool:
        """Every replica runs the latest template and is ready, with no old pod left."""
        return (
            self.current
            and self.updated_replicas == self.replicas
            and self.total_replicas == self.replicas
            and self.ready_replicas == self.replicas
        )


@dataclass(frozen=True)
class Observations:
    generation: int
    now: str
    resolved: ResolvedModel | None = None
    failure: ResolveFailure | None = None
    stable: TrackObservation | None = None
    # Why the pods of the stable Deployment's current template cannot start (rollout/health.py).
    start_failure: StartFailure | None = None
    # Model versions with ready pods on the stable track: who still serves while a new version fails.
    ready_versions: tuple[str, ...] = ()
    # Pods of another version still on the stable track, stopping ones included.
    lingering_pods: int = 0


@dataclass(frozen=True)
class Plan:
    status: ModelDeploymentStatus
    # The version the stable Deployment must run; None leaves whatever serves untouched.
    serve: ResolvedModel | None


def plan(status: ModelDeploymentStatus, seen: Observations) -> Plan:
    if seen.failure is not None:
        return _plan_failure(status, seen)
    assert seen.resolved is not None, "observations carry either a resolved model or a failure"
    return _plan_resolved(status, seen, seen.resolved)


def _base(status: ModelDeploymentStatus, seen: Observations) -> ModelDeploymentStatus:
    stable = seen.stable
    new = status.model_copy(deep=True)
    new.observed_generation = seen.generation
    if stable is not None and stable.version is not None:
        # The template's version serves everywhere only once its rollout is done; until then the last
        # version that got there is what status names, and the new one is the one being rolled out.
        done = stable.rolled_out and seen.lingering_pods == 0
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


def _plan_failure(status: ModelDeploymentStatus, seen: Observations) -> Plan:
    failure, stable = seen.failure, seen.stable
    new = _base(status, seen)
    cond = _setter(new, seen)
    serving = stable is not None and stable.version is not None
    if serving and failure.reason in _OUTAGES:
        _report_outage(new, cond, stable, failure)
        return Plan(status=new, serve=None)
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
        cond("Progressing", failure.retryable, failure.reason, failure.message)
        cond("Ready", False, failure.reason, failure.message)
        new.phase = "Pending" if failure.retryable else "Failed"
        new.message = failure.message
    return Plan(status=new, serve=None)


def _report_outage(new: ModelDeploymentStatus, cond, stable: TrackObservation, failure: ResolveFailure) -> None:
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


def _plan_resolved(status: ModelDeploymentStatus, seen: Observations, model: ResolvedModel) -> Plan:
    stable = seen.stable
    new = _base(status, seen)
    new.model = model
    cond = _setter(new, seen)
    via = f"alias {model.alias!r} -> " if model.alias else ""
    cond("ModelResolved", True, "Resolved", f"{model.name} {via}version {model.version}")
    cond("Degraded", False, "Healthy", "")
    current = stable is not None and stable.version == model.version
    if current and stable.rolled_out and seen.lingering_pods == 0:
        message = f"serving {model.name} version {model.version} on {stable.ready_replicas} ready replicas"
        cond("Progressing", False, "RolloutComplete", message)
        cond("Ready", True, "Serving", message)
        new.phase, new.message = "Ready", message
    elif current and seen.start_failure is not None:
        _report_stuck(new, cond, model, stable, seen)
    else:
        progress = f"{stable.ready_replicas}/{stable.replicas} replicas ready" if stable else "creating its Deployment"
        if current and stable.rolled_out:
            progress = f"waiting for {seen.lingering_pods} pods of the previous version to stop"
        message = f"rolling out {model.name} version {model.version}: {progress}"
        cond("Progressing", True, "RollingOut", message)
        cond("Ready", False, "ReplicasNotReady", message)
        new.phase, new.message = "Progressing", message
    return Plan(status=new, serve=model)


def _report_stuck(
    new: ModelDeploymentStatus, cond, model: ResolvedModel, stable: TrackObservation, seen: Observations
) -> None:
    """The new version's pods cannot start: Degraded while anything still serves, Failed otherwise."""
    failure = seen.start_failure
    older = [v for v in seen.ready_versions if v != model.version]
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


def apply_failed(status: ModelDeploymentStatus, seen: Observations, message: str) -> ModelDeploymentStatus:
    """The status after the API server refused to apply what the plan decided (403, 422, ...): it says so,
    instead of "creating its Deployment" forever. Whatever served before still serves."""
    new = status.model_copy(deep=True)
    cond = _setter(new, seen)
    cond("Progressing", False, "ApplyFailed", message)
    if seen.stable is not None and seen.stable.ready_replicas > 0:
        cond("Degraded", True, "ApplyFailed", message)
        new.phase = "Degraded"
    else:
        cond("Degraded", False, "NothingServing", "no version serves")
        cond("Ready", False, "ApplyFailed", message)
        new.phase = "Failed"
    new.message = message
    return new


def _setter(status: ModelDeploymentStatus, seen: Observations):
    def cond(type_: str, value: bool | None, reason: str, message: str) -> None:
        status.conditions = set_condition(status.conditions, type_, value, reason, message, seen.now, seen.generation)

    return cond
