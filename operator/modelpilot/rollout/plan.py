"""The reconcile decision, pure: (spec, status, observations) -> Plan(new status, what to apply).

The shell gathers observations (the registry's answer, the live Deployment, why its new pods cannot start
if they cannot), calls `plan`, then applies what it returns. Nothing here talks to a server, so every
branch is a plain unit test.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..api.spec import ModelDeploymentSpec
from ..api.status import ModelDeploymentStatus, ResolvedModel, StableTrackStatus
from ..registry.resolution import Resolution
from .conditions import get_condition, set_condition
from .health import StartFailure

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
    # The Deployment controller has observed the latest pod template (its observedGeneration caught up).
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
    # What the spec's reference came to this time; None when the registry was not asked (an owned object
    # changed), and the resolution recorded in status is reused if it answers this generation.
    resolution: Resolution | None = None
    stable: TrackObservation | None = None
    # Why the pods of the stable Deployment's current template cannot start (rollout/health.py).
    start_failure: StartFailure | None = None
    # Model versions with ready pods on the stable track: who still serves while a new version fails.
    ready_versions: tuple[str, ...] = ()
    # Pods of another version still on the stable track, stopping ones included.
    lingering_pods: int = 0
    # An autoscaler of ours exists.
    autoscaler: bool = False


@dataclass(frozen=True)
class Plan:
    status: ModelDeploymentStatus
    # The version the stable Deployment must run; None leaves whatever serves untouched.
    serve: ResolvedModel | None
    # Delete the autoscaler: the spec no longer asks for one. Only ever with `serve`.
    remove_autoscaler: bool = False


def plan(spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus, observed: Observations) -> Plan | None:
    """What to do, or None when there is nothing to decide: the body is older than a spec already handled,
    or no resolution answers this generation yet (a reconcile that asks the registry will follow)."""
    if observed.generation < (status.observed_generation or 0):
        return None
    resolution = observed.resolution
    if resolution is None:
        if not resolved_for(status, observed.generation):
            return None
        resolution = Resolution(model=status.model)
    if resolution.model is None:
        return _plan_failure(status, observed, resolution)
    decision = _plan_resolved(status, observed, resolution.model)
    remove = observed.autoscaler and spec is not None and spec.autoscaling is None
    return Plan(status=decision.status, serve=decision.serve, remove_autoscaler=remove)


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


def _plan_failure(status: ModelDeploymentStatus, observed: Observations, failure: Resolution) -> Plan:
    stable = observed.stable
    new = _base(status, observed)
    cond = _setter(new, observed)
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


def _plan_resolved(status: ModelDeploymentStatus, observed: Observations, model: ResolvedModel) -> Plan:
    stable = observed.stable
    new = _base(status, observed)
    new.model = model
    cond = _setter(new, observed)
    via = f"alias {model.alias!r} -> " if model.alias else ""
    cond("ModelResolved", True, "Resolved", f"{model.name} {via}version {model.version}")
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
