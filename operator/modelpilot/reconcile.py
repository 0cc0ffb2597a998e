"""One reconcile of one ModelDeployment: observe, decide (pure `rollout.plan`), then apply the decision.

Orchestrated on the event loop; every blocking call runs in a bounded pool: registry calls in the
resolver's, Kubernetes calls in this module's. A slow MLflow server therefore never holds the workers
that apply objects and report readiness for everyone else.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from pydantic import ValidationError

from .api import GROUP, KIND, VERSION, ModelDeploymentSpec, ModelDeploymentStatus
from .api.status import ResolvedModel
from .kube import objects
from .kube.events import post_event
from .registry.errors import CredentialsSecretInvalid, CredentialsSecretMissing
from .registry.mlflow import Credentials
from .registry.resolver import Resolver
from .render import workload
from .render.labels import LABEL_MODEL_VERSION, STABLE, track_name
from .render.owner import Owner
from .rollout import health
from .rollout.conditions import get_condition, notices
from .rollout.images import image_refusal
from .rollout.plan import Observations, Plan, ResolveFailure, TrackObservation, apply_failed, plan
from .settings import Settings

log = logging.getLogger(__name__)
API_VERSION = f"{GROUP}/{VERSION}"


class Lookup(Protocol):
    """The live objects a ModelDeployment owns, answered from kopf's in-memory indexes."""

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """The owned Deployment, Service or HorizontalPodAutoscaler of that name, if it exists."""

    def pods(self, namespace: str, deployment: str) -> list[dict]:
        """The pods of a ModelDeployment, every track and version, as `health.essentials` keeps them."""


@dataclass
class Outcome:
    status: ModelDeploymentStatus
    retry: ResolveFailure | None = None


class Reconciler:
    """Reconciles ModelDeployments; holds what outlives one call: pools, locks, the last statuses."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.resolver = Resolver(
            workers=settings.registry_workers,
            # Half an interval: every periodic reconcile asks afresh, concurrent ones share one answer.
            ttl_seconds=settings.resolve_interval_seconds / 2,
            timeout_seconds=settings.registry_timeout_seconds,
        )
        self._kube = ThreadPoolExecutor(max_workers=settings.kube_workers, thread_name_prefix="kube")
        self._locks: dict[str, asyncio.Lock] = {}
        # We are the only writer of status: what we last wrote is fresher than a watch event may be.
        self._written: dict[str, ModelDeploymentStatus] = {}

    def forget(self, uid: str) -> None:
        self._locks.pop(uid, None)
        self._written.pop(uid, None)

    async def reconcile(self, body: dict, live: Lookup, resolve: bool = True) -> Outcome | None:
        """Bring one ModelDeployment's owned objects and status in line with its spec.

        With resolve=False (an owned object changed) the last resolution recorded in status is reused,
        unless the spec changed since, so that pod churn does not turn into registry traffic.
        Returns None for an object being deleted: its owned objects go with it.
        """
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        uid, generation = meta["uid"], meta.get("generation", 1)
        seen = None
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The CRD schema catches almost everything; this guards objects stored before a schema change.
            spec, seen = None, {"failure": ResolveFailure("InvalidSpec", _short_validation_error(exc), False)}
        else:
            known = self._written.get(uid) or _parse_status(body.get("status"))
            if resolve or not _resolved_for(known, generation):
                # Outside the lock: an owned object's event need not wait for the registry.
                seen = await self._resolve(meta["namespace"], spec)
        async with self._locks.setdefault(uid, asyncio.Lock()):
            old = self._written.get(uid) or _parse_status(body.get("status"))
            if generation < (old.observed_generation or 0):
                return None  # a newer spec was handled meanwhile; this body is stale
            if seen is None:
                # Read under the lock, so a resolution written meanwhile is the one reused.
                if not _resolved_for(old, generation):
                    return None
                seen = {"resolved": old.model}
            seen = _screen_image(spec, seen, self.settings)
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._kube, _converge, body, spec, old, seen, self.settings, live)
            self._written[uid] = outcome.status
            return outcome

    async def _resolve(self, namespace: str, spec: ModelDeploymentSpec) -> dict:
        credentials = None
        secret = spec.mlflow.credentials_secret
        if secret:
            loop = asyncio.get_running_loop()
            try:
                data = await loop.run_in_executor(
                    self._kube, objects.secret_data, namespace, secret, Credentials.SECRET_KEYS
                )
            except objects.SecretValueNotText as exc:
                invalid = CredentialsSecretInvalid(f"Secret {secret!r} named by spec.mlflow.credentialsSecret: {exc}")
                return {"failure": ResolveFailure(invalid.reason, str(invalid), invalid.retryable)}
            if data is None:
                missing = CredentialsSecretMissing(
                    f"Secret {secret!r} named by spec.mlflow.credentialsSecret does not exist"
                )
                return {"failure": ResolveFailure(missing.reason, str(missing), missing.retryable)}
            credentials = Credentials.from_secret_data(data)
        result = await self.resolver.resolve(spec.mlflow.tracking_uri, credentials, spec.model)
        if result.error is not None:
            return {"failure": ResolveFailure(result.error.reason, str(result.error), result.error.retryable)}
        return {"resolved": result.model}


def _screen_image(spec: ModelDeploymentSpec | None, seen: dict, settings: Settings) -> dict:
    """A resolved model whose runtime image is not allowed becomes a failure, so the plan rolls nothing out."""
    if spec is None or "resolved" not in seen:
        return seen
    refusal = image_refusal(workload.runtime_image(spec, settings.runtime_image), settings.allowed_images)
    return seen if refusal is None else {"failure": refusal}


def _converge(
    body: dict, spec: ModelDeploymentSpec | None, old: ModelDeploymentStatus, seen: dict, settings: Settings, live: Lookup
) -> Outcome:
    """The blocking part: read the live Deployment and pods, plan, apply what the plan says, write status."""
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stable_body = live.get("Deployment", owner.namespace, track_name(owner.name, STABLE))
    stable, pods_seen = None, {}
    if stable_body is not None:
        stable = TrackObservation.from_deployment(stable_body, LABEL_MODEL_VERSION)
        pods = live.pods(owner.namespace, owner.name)
        pods_seen = {
            "start_failure": health.start_failure(stable_body, pods, LABEL_MODEL_VERSION),
            "ready_versions": health.ready_versions(stable_body, pods, LABEL_MODEL_VERSION),
            "lingering_pods": health.lingering_pods(stable_body, pods, LABEL_MODEL_VERSION),
        }
    observations = Observations(generation=meta.get("generation", 1), now=now, stable=stable, **pods_seen, **seen)
    decision = plan(old, observations)
    retry = observations.failure
    if decision.serve is not None and spec is not None:
        try:
            _apply_workload(owner, spec, decision.serve, settings, live, stable_body)
        except objects.ApplyRefused as exc:
            # Reported, and retried with backoff: a missing permission or a webhook may be fixed later.
            decision = Plan(status=apply_failed(decision.status, observations, str(exc)), serve=None)
            retry = ResolveFailure("ApplyFailed", str(exc), retryable=True)
    return _finish(owner, old, decision, retry=retry)


def _apply_workload(
    owner: Owner, spec: ModelDeploymentSpec, model: ResolvedModel, settings: Settings, live: Lookup, stable_body
) -> None:
    desired = [
        (workload.deployment(owner, spec, model, settings.runtime_image, STABLE), stable_body),
        (workload.service(owner, spec), live.get("Service", owner.namespace, owner.name)),
    ]
    hpa = workload.autoscaler(owner, spec)
    live_hpa = live.get("HorizontalPodAutoscaler", owner.namespace, owner.name)
    if hpa is not None:
        desired.append((hpa, live_hpa))
    elif live_hpa is not None:
        objects.delete("autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, owner.name)
    for want, have in desired:
        objects.apply(want, have)


def _finish(owner: Owner, old: ModelDeploymentStatus, decision: Plan, retry: ResolveFailure | None = None) -> Outcome:
    new = decision.status
    old_wire, new_wire = old.to_wire(), new.to_wire()
    if new_wire != old_wire:
        # A merge patch keeps keys it is not told about: clear the ones that went away.
        patch = {**{k: None for k in old_wire if k not in new_wire}, **new_wire}
        objects.patch_status(API_VERSION, KIND, owner.namespace, owner.name, patch)
    for notice in notices(old.conditions, new.conditions):
        post_event(owner.involved(), notice.warning, notice.reason, notice.message)
    return Outcome(status=new, retry=retry)


def _resolved_for(status: ModelDeploymentStatus, generation: int) -> bool:
    """The status records what this generation's reference resolved to (not a last good version kept
    while this generation's reference fails to resolve)."""
    resolved = get_condition(status.conditions, "ModelResolved")
    return (
        status.model is not None
        and status.observed_generation == generation
        and resolved is not None
        and resolved.status == "True"
    )


def _parse_status(raw: dict | None) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        log.warning("ignoring a status this operator cannot read; it will be rewritten")
        return ModelDeploymentStatus()


def _short_validation_error(exc: ValidationError) -> str:
    parts = [f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]]
    return "invalid spec: " + "; ".join(parts)
