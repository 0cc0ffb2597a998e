"""One reconcile of one ModelDeployment: observe, decide (pure `rollout.plan`), then apply the decision.

Blocking by design: kopf runs it in its bounded thread pool, never on the event loop.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from pydantic import ValidationError

from .api import GROUP, KIND, VERSION, ModelDeploymentSpec, ModelDeploymentStatus
from .api.status import ResolvedModel
from .kube import objects
from .registry.errors import CredentialsSecretMissing, RegistryError
from .registry.mlflow import Credentials, MlflowRegistry
from .render import workload
from .render.labels import LABEL_MODEL_VERSION, STABLE, track_name
from .render.owner import Owner
from .rollout.conditions import Notice, notices
from .rollout.plan import Observations, Plan, ResolveFailure, TrackObservation, plan
from .settings import Settings

log = logging.getLogger(__name__)
API_VERSION = f"{GROUP}/{VERSION}"

# (kind, namespace, name) -> the live object we own, answered from kopf's in-memory indexes.
Lookup = Callable[[str, str, str], "dict | None"]


@dataclass
class Outcome:
    status: ModelDeploymentStatus
    notices: list[Notice] = field(default_factory=list)
    retry: ResolveFailure | None = None


class Reconciler:
    """Reconciles ModelDeployments; holds what must outlive one call: per-object locks and last statuses."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        # We are the only writer of status: what we last wrote is fresher than a watch event may be.
        self._written: dict[str, ModelDeploymentStatus] = {}

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)
            self._written.pop(uid, None)

    def _lock_for(self, uid: str) -> threading.Lock:
        """Change handlers, timers and owned-object events of one ModelDeployment never interleave."""
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def reconcile(self, body: dict, live: Lookup, resolve: bool = True) -> Outcome | None:
        """Bring one ModelDeployment's owned objects and status in line with its spec.

        With resolve=False (an owned object changed) the last resolution recorded in status is reused,
        unless the spec changed since, so that pod churn does not turn into registry traffic.
        Returns None for an object being deleted: its owned objects go with it.
        """
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        with self._lock_for(meta["uid"]):
            old = self._written.get(meta["uid"]) or _parse_status(body.get("status"))
            outcome = _reconcile(body, old, self.settings, live, resolve)
            self._written[meta["uid"]] = outcome.status
            return outcome


def _reconcile(body: dict, old_status: ModelDeploymentStatus, settings: Settings, live: Lookup, resolve: bool) -> Outcome:
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    generation = meta.get("generation", 1)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stable_body = live("Deployment", owner.namespace, track_name(owner.name, STABLE))
    stable = TrackObservation.from_deployment(stable_body, LABEL_MODEL_VERSION) if stable_body else None

    try:
        spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        # The CRD schema catches almost everything; this guards objects stored before a schema change.
        failure = ResolveFailure("InvalidSpec", _short_validation_error(exc), retryable=False)
        seen = Observations(generation=generation, now=now, failure=failure, stable=stable)
        return _finish(owner, old_status, plan(old_status, seen))

    reuse = not resolve and old_status.model is not None and old_status.observed_generation == generation
    if reuse:
        seen = Observations(generation=generation, now=now, resolved=old_status.model, stable=stable)
    else:
        seen = Observations(generation=generation, now=now, stable=stable, **_resolve(owner, spec, settings))
    decision = plan(old_status, seen)
    if decision.serve is not None:
        _apply_workload(owner, spec, decision.serve, settings, live, stable_body)
    return _finish(owner, old_status, decision, retry=seen.failure)


def _resolve(owner: Owner, spec: ModelDeploymentSpec, settings: Settings) -> dict:
    try:
        credentials = None
        if spec.mlflow.credentials_secret:
            data = objects.secret_data(owner.namespace, spec.mlflow.credentials_secret)
            if data is None:
                raise CredentialsSecretMissing(
                    f"Secret {spec.mlflow.credentials_secret!r} named by spec.mlflow.credentialsSecret does not exist"
                )
            credentials = Credentials.from_secret_data(data)
        with MlflowRegistry(spec.mlflow.tracking_uri, credentials, settings.registry_timeout_seconds) as registry:
            return {"resolved": registry.resolve(spec.model)}
    except RegistryError as exc:
        return {"failure": ResolveFailure(exc.reason, str(exc), exc.retryable)}


def _apply_workload(
    owner: Owner, spec: ModelDeploymentSpec, model: ResolvedModel, settings: Settings, live: Lookup, stable_body
) -> None:
    desired = [
        (workload.deployment(owner, spec, model, settings.runtime_image, STABLE), stable_body),
        (workload.service(owner, spec), live("Service", owner.namespace, owner.name)),
    ]
    hpa = workload.autoscaler(owner, spec)
    live_hpa = live("HorizontalPodAutoscaler", owner.namespace, owner.name)
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
    return Outcome(status=new, notices=notices(old.conditions, new.conditions), retry=retry)


def _parse_status(raw: dict | None) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        log.warning("ignoring a status this operator cannot read; it will be rewritten")
        return ModelDeploymentStatus()


def _short_validation_error(exc: ValidationError) -> str:
    parts = [f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]]
    return "invalid spec: " + "; ".join(parts)
