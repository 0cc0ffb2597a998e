"""The ModelDeployment status, written only by the operator, following Kubernetes status conventions."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import ApiModel

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class Condition(ApiModel):
    """One aspect of the current state, in the shape of metav1.Condition."""

    type: str = Field(description="Ready, ModelResolved, Progressing or Degraded.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why, stable enough for automation.")
    message: str = Field("", description="What happened, for people.")
    last_transition_time: str = Field(description="When status last changed, RFC 3339.")
    observed_generation: int | None = Field(None, description="The spec generation this condition describes.")


class ResolvedModel(ApiModel):
    """A registry reference resolved to one concrete model version."""

    name: str = Field(description="Registered model name.")
    version: str = Field(description="Registry version number.")
    alias: str | None = Field(None, description="The alias this version was resolved from, if any.")
    run_id: str | None = Field(None, description="MLflow run that produced the version.")
    source: str = Field("", description="Artifact location the registry records for the version.")


class TrackStatus(ApiModel):
    """A set of pods serving one model version."""

    version: str = Field(description="Model version this track serves.")
    deployment: str = Field(description="Name of the Deployment running this track.")
    replicas: int = Field(0, description="Pods the Deployment has.")
    ready_replicas: int = Field(0, description="Pods ready to serve.")


class StableTrackStatus(TrackStatus):
    """The stable track: the version that finished rolling out, and the one replacing it, if any."""

    version: str | None = Field(
        None, description="The last model version that finished rolling out on this track: every pod runs it."
    )
    updating_to: str | None = Field(
        None, description="The model version this track's pods are being replaced with, while that rollout is under way."
    )


class CanaryStatus(TrackStatus):
    """The track serving a new version while it is judged."""

    weight: int = Field(0, ge=0, le=100, description="Percentage of traffic sent to the canary.")
    step: int = Field(0, ge=0, description="Index of the rollout step in progress.")


class Rejection(ApiModel):
    """A version a rollout rejected; it is not tried again on its own under the same spec generation."""

    version: str = Field(description="The rejected model version.")
    reason: str = Field(description="Why, for people.")
    generation: int = Field(description="The spec generation it was rejected under.")


class RolloutRecord(ApiModel):
    """A rollout that ended."""

    version: str = Field(description="The version rolled out.")
    previous_version: str | None = Field(None, description="The stable version when it started.")
    outcome: Literal["Promoted", "Aborted", "RolledBack", "Abandoned", "Replaced"] = Field(
        description=(
            "Promoted, Aborted (by a request), RolledBack (by the analysis), Abandoned (the reference moved back) "
            "or Replaced (a newer version came)."
        )
    )
    reason: str = Field("", description="Why it ended so, for people.")
    started_at: str | None = Field(None, description="When it started, RFC 3339.")
    finished_at: str = Field(description="When it ended, RFC 3339.")


class MeasurementRecord(ApiModel):
    """One check's verdict in one measurement."""

    at: str = Field(description="When it was measured, RFC 3339.")
    check: str = Field(description="The check's name.")
    verdict: Literal["Pass", "Fail", "Inconclusive"] = Field(description="Pass, Fail or Inconclusive.")
    value: float | None = Field(None, description="The canary's value; absent when there was none.")
    stable_value: float | None = Field(None, description="The stable track's value over the same window, for relative bounds.")
    bound: str = Field("", description="The bounds the value was held to, such as `max 0.05, max 1.2 x stable (0.031)`.")
    reason: str = Field("", description="Why it failed or was inconclusive.")


class AnalysisStatus(ApiModel):
    """The metric analysis of the current or last rollout."""

    next_measurement_at: str = Field(description="When the next measurement is due, RFC 3339.")
    passed: int = Field(0, ge=0, description="Passing measurements at the current analysis step.")
    failures: int = Field(0, ge=0, description="Failed measurements in this rollout.")
    inconclusive: int = Field(0, ge=0, description="Inconclusive measurements in this rollout.")
    held: str | None = Field(None, description="Why the rollout waits on analysis, if it does.")
    measurements: list[MeasurementRecord] = Field(
        default_factory=list, description="The latest verdicts, newest last; twenty are kept."
    )


class RolloutStatus(ApiModel):
    """Where the canary rollout stands: everything needed to resume it after an operator restart."""

    phase: Literal["Progressing", "Paused", "Promoting", "Baking", "Completed", "Aborted"] = Field(
        description="Progressing, Paused, Promoting, Baking (promoted, still watched), Completed (no rollout under way) or Aborted."
    )
    stable_version: str | None = Field(None, description="The version the stable track serves between rollouts.")
    stable_model: ResolvedModel | None = Field(
        None, description="The stable version as resolved: what an abort puts back on the stable track."
    )
    canary_version: str | None = Field(None, description="The version under rollout, or the one the last abort rejected.")
    step_index: int = Field(0, ge=0, description="Index of the current step; the step count while promoting.")
    step_started_at: str | None = Field(None, description="When the current step began, RFC 3339.")
    pause_started_at: str | None = Field(None, description="When a pause request took hold, RFC 3339.")
    paused_manually: bool = Field(False, description="A pause request holds the rollout.")
    requested_weight: int = Field(0, ge=0, le=100, description="The weight the current setWeight step asks for.")
    canary_replicas_override: int | None = Field(None, description="The canaryReplicas of the current setWeight step.")
    last_promoted: str | None = Field(None, description="The last version a rollout promoted.")
    rejected: list[Rejection] = Field(default_factory=list, description="Versions rollouts rejected, newest last.")
    handled_requests: list[str] = Field(default_factory=list, description="Ids of manual requests acted on, newest last.")
    generation: int = Field(0, description="The spec generation the current or last rollout started under.")
    message: str = Field("", description="What the rollout is doing, for people.")
    started_at: str | None = Field(None, description="When the current or last rollout started, RFC 3339.")
    history: list[RolloutRecord] = Field(
        default_factory=list, description="Rollouts that ended, newest last; the last ten are kept."
    )
    analysis: AnalysisStatus | None = Field(None, description="Metric analysis of the current or last rollout.")


class ModelDeploymentStatus(ApiModel):
    """Observed state of a ModelDeployment."""

    observed_generation: int | None = Field(None, description="The spec generation this status describes.")
    phase: Phase = Field("Pending", description="Pending, Progressing, Ready, Degraded or Failed.")
    message: str = Field("", description="A one-line summary of the phase, for people.")
    model: ResolvedModel | None = Field(None, description="The model version the spec currently resolves to.")
    stable: StableTrackStatus | None = Field(None, description="The track serving the last good version.")
    canary: CanaryStatus | None = Field(None, description="The track serving a new version under judgement.")
    rollout: RolloutStatus | None = Field(None, description="The canary rollout's progress, when steps are set.")
    traffic_router: Literal["ReplicaRatio", "GatewayAPI"] | None = Field(
        None, description="The traffic router in use: ReplicaRatio, or GatewayAPI (an HTTPRoute of the model's name)."
    )
    replicas: int = Field(0, description="Pods of all tracks.")
    ready_replicas: int = Field(0, description="Pods of all tracks ready to serve.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, ModelResolved, Progressing, Degraded.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
