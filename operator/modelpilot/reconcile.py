"""One reconcile of one ModelDeployment: observe, decide (pure `rollout.plan`), then apply the decision.

Orchestrated on the event loop. Registry calls are async, bounded in number and each given a total
deadline by the resolver; blocking Kubernetes calls run in this module's bounded pool. A slow MLflow
server therefore never holds the workers that apply objects and report readiness for everyone else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Protocol

from pydantic import ValidationError

from .analysis import measure
from .analysis.prometheus import PrometheusAuth, PrometheusProvider
from .api import GROUP, KIND, VERSION, ModelDeploymentSpec, ModelDeploymentStatus
from .api.base import seconds
from .kube import objects
from .kube.events import post_event
from .kube.ownership import foreign
from .kube.secrets import SecretCache, SecretStore
from .metrics import ROLLOUT_ENDINGS, ROLLOUTS
from .registry.errors import CredentialsSecretInvalid, CredentialsSecretMissing, RegistryError
from .registry.mlflow import Credentials, MlflowRegistry
from .registry.resolution import Resolution
from .pools import ThreadPool
from .registry.resolver import Resolver
from .render import workload
from .render.labels import CANARY, LABEL_MODEL_VERSION, STABLE, track_name
from .render.owner import Owner
from .rollout import health, requests
from .rollout.conditions import notices
from .rollout.images import image_refusal
from .rollout.canary import BAKING
from .rollout.judging import Measured
from .rollout.plan import Observations, Plan, apply_failed, measurement_due, plan, resolved_for
from .rollout.tracks import TrackObservation
from .settings import Settings
from .traffic import ROUTERS, router_for

log = logging.getLogger(__name__)
API_VERSION = f"{GROUP}/{VERSION}"
# What the operator reads of the Secrets ModelDeployments name; the cache keeps nothing else.
SECRET_KEYS = Credentials.SECRET_KEYS + PrometheusAuth.SECRET_KEYS
# How long a missing Secret is remembered: the first retry's backoff, so one created later is seen then.
SECRET_MISS_SECONDS = 5.0


class Lookup(Protocol):
    """The live objects a ModelDeployment owns, answered from kopf's in-memory indexes."""

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        """The owned Deployment, Service, HorizontalPodAutoscaler or PodDisruptionBudget of that name, if it exists."""

    def pods(self, namespace: str, deployment: str) -> list[dict]:
        """The pods of a ModelDeployment, every track and version, as `health.essentials` keeps them."""


@dataclass
class Outcome:
    status: ModelDeploymentStatus
    # Why to reconcile again with backoff (a failure that waiting may cure); None when nothing is pending.
    retry_because: str | None = None
    # Seconds until the object must be reconciled again on its own (a timed canary pause ends).
    requeue_after: float | None = None


@dataclass
class _Memory:
    """What the operator remembers of one ModelDeployment between reconciles."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # We are the only writer of status: what we last wrote is fresher than a watch event may be.
    status: ModelDeploymentStatus | None = None
    # The newest resolution planned with, and the generation it answered.
    resolution: Resolution | None = None
    generation: int = 0
    # The ModelDeployment was deleted while a reconcile held the lock.
    gone: bool = False
    # The resourceVersion of the body the last reconcile started from, if it ended leaving nothing pending:
    # no retry, no timer, no exception.
    settled_at: str | None = None

    def newest(self, generation: int, resolution: Resolution | None) -> Resolution | None:
        """`resolution`, unless one asked later about the same generation was already planned with: an
        answer that was slow to arrive must not flip an alias back."""
        kept = self.resolution
        if resolution is not None and kept is not None and self.generation == generation and kept.asked > resolution.asked:
            return kept
        return resolution


class Reconciler:
    """Reconciles ModelDeployments; holds what outlives one call: pools, the per-object memory."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.resolver = Resolver(
            concurrency=settings.registry_workers,
            # Half an interval: every periodic reconcile asks afresh, concurrent ones share one answer.
            ttl_seconds=settings.resolve_interval_seconds / 2,
            timeout_seconds=settings.registry_timeout_seconds,
        )
        self._kube = ThreadPool("kube", settings.kube_workers)
        # Secrets are read as often as references are resolved, and shared like them: one GET of each per
        # half interval however many ModelDeployments name it.
        self.secrets = SecretCache(
            self._read_secret,
            SecretStore(settings.secret_cache_entries, ttl=settings.resolve_interval_seconds / 2, miss_ttl=SECRET_MISS_SECONDS),
        )
        self._memory: dict[str, _Memory] = {}

    async def _read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return await self._kube.run(objects.secret_fields, namespace, name, SECRET_KEYS)

    async def _secret_data(self, namespace: str, name: str, keys: tuple[str, ...]) -> dict[str, str] | None:
        """The decoded values of `keys` in the Secret, None when it does not exist; SecretValueNotText when
        one is not text."""
        fields = await self.secrets.read(namespace, name)
        return None if fields is None else objects.decode_keys(fields, keys)

    def forget(self, uid: str) -> None:
        """The ModelDeployment is gone. A reconcile still running for it drops its memory when it ends."""
        memory = self._memory.get(uid)
        if memory is None:
            return
        memory.gone = True
        if not memory.lock.locked():
            del self._memory[uid]

    def retain(self, uids: set[str]) -> None:
        """Forget every ModelDeployment but these: catches a deletion that raced a reconcile of a stale body."""
        for uid in [uid for uid in self._memory if uid not in uids]:
            self.forget(uid)

    async def reconcile(self, body: dict, cluster: Lookup, resolve: bool = True, resync: bool = False) -> Outcome | None:
        """Bring one ModelDeployment's owned objects and status in line with its spec.

        With resolve=False (an owned object changed) the registry is not asked if status already records
        what this generation's reference resolved to, so that pod churn does not turn into registry traffic.
        With resync=True (the periodic pass) only the reference is asked again, unless the object is not
        settled: events of owned objects and pods reconcile it when they change, so a settled object whose
        reference still resolves to the same answer has nothing to do, and the pass costs no Kubernetes work
        for it. Returns None when there was nothing to do: the object is being deleted (its owned objects go
        with it), the body is older than what was already handled, or that resync.
        """
        meta = body["metadata"]
        if meta.get("deletionTimestamp"):
            return None
        uid, generation = meta["uid"], meta.get("generation", 1)
        memory = self._memory.setdefault(uid, _Memory())
        spec, resolution = _read_spec(body)
        if spec is not None:
            recorded = memory.status or _parse_status(body.get("status"))
            if resolve or not resolved_for(recorded, generation):
                # Outside the lock: an owned object's event need not wait for the registry.
                resolution = await self._resolve(meta["namespace"], spec)
        try:
            async with memory.lock:
                if memory.gone:
                    return None
                status = memory.status or _parse_status(body.get("status"))
                if resync and self._settled(memory, meta, generation, resolution, spec, status):
                    return None
                memory.settled_at = None
                resolution = memory.newest(generation, resolution)
                screened = _screen_image(spec, resolution, self.settings)
                clock = time.time()
                measured = await self._measure(meta, spec, status, clock) if measurement_due(spec, status, clock) else None
                outcome = await self._kube.run(
                    _converge, body, spec, status, screened, self.settings, cluster, measured
                )
                if outcome is not None and spec is not None and spec.rollout.analysis.tag_rollbacks:
                    await self._tag_rollback(meta, spec, status, outcome.status)
                if outcome is not None:
                    memory.status = outcome.status
                    if resolution is not None:
                        memory.resolution, memory.generation = resolution, generation
                    if outcome.retry_because is None and outcome.requeue_after is None:
                        memory.settled_at = meta.get("resourceVersion")
                return outcome
        finally:
            if memory.gone and self._memory.get(uid) is memory and not memory.lock.locked():
                del self._memory[uid]

    @staticmethod
    def _settled(memory: _Memory, meta: dict, generation: int, resolution: Resolution | None,
                 spec: ModelDeploymentSpec | None, status: ModelDeploymentStatus) -> bool:  # fmt: skip
        """Nothing changed since a reconcile that left nothing pending: the same body, and the same answer."""
        return (
            memory.settled_at is not None
            and memory.settled_at == meta.get("resourceVersion")
            and memory.generation == generation
            and _same_answer(memory.resolution, resolution)
            and not measurement_due(spec, status, time.time())
        )

    async def _measure(self, meta: dict, spec: ModelDeploymentSpec, status: ModelDeploymentStatus, clock: float) -> Measured:
        """Measure the canary under way, or the promoted version baking: every check over the last analysis
        interval, from Prometheus."""
        analysis, rollout = spec.rollout.analysis, status.rollout
        address = analysis.prometheus.address or self.settings.prometheus_address
        if not address:
            return Measured(clock, error="no Prometheus to ask: set spec.rollout.analysis.prometheus.address, or the operator's default")
        auth = None
        secret = analysis.prometheus.credentials_secret
        if secret:
            try:
                data = await self._secret_data(meta["namespace"], secret, PrometheusAuth.SECRET_KEYS)
            except objects.SecretValueNotText as exc:
                return Measured(clock, error=f"Secret {secret!r} named by the analysis' prometheus.credentialsSecret: {exc}")
            if data is None:
                return Measured(clock, error=f"Secret {secret!r} named by the analysis' prometheus.credentialsSecret does not exist")
            auth = PrometheusAuth.from_secret_data(data)
        provider = PrometheusProvider(address, seconds(analysis.prometheus.timeout), auth)
        baking = rollout.phase == BAKING  # the promoted version serves alone, on the stable track
        taken = await measure.take(provider, analysis, meta["namespace"], meta["name"], rollout.canary_version,
                                   None if baking else rollout.stable_version, STABLE if baking else CANARY)  # fmt: skip
        return Measured(clock, sample=taken.sample, measurements=taken.measurements, error=taken.error)

    async def _resolve(self, namespace: str, spec: ModelDeploymentSpec) -> Resolution:
        try:
            credentials = await self._registry_credentials(namespace, spec)
        except RegistryError as exc:
            return Resolution.of_error(exc)
        return await self.resolver.resolve(spec.mlflow.tracking_uri, credentials, spec.model)

    async def _registry_credentials(self, namespace: str, spec: ModelDeploymentSpec) -> Credentials | None:
        """The MLflow credentials from the Secret the spec names; raises a RegistryError saying what is wrong."""
        secret = spec.mlflow.credentials_secret
        if not secret:
            return None
        try:
            data = await self._secret_data(namespace, secret, Credentials.SECRET_KEYS)
        except objects.SecretValueNotText as exc:
            raise CredentialsSecretInvalid(f"Secret {secret!r} named by spec.mlflow.credentialsSecret: {exc}") from None
        if data is None:
            raise CredentialsSecretMissing(f"Secret {secret!r} named by spec.mlflow.credentialsSecret does not exist")
        return Credentials.from_secret_data(data)

    async def _tag_rollback(self, meta: dict, spec: ModelDeploymentSpec, before: ModelDeploymentStatus,
                            after: ModelDeploymentStatus) -> None:  # fmt: skip
        """Record in the registry that the analysis rolled a version back, and why; a failure is an Event."""
        rolled = _new_rollback(before, after)
        if rolled is None:
            return
        owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
        value = f"{owner.namespace}/{owner.name} at {rolled.finished_at}: {rolled.reason}"[:5000]
        try:
            credentials = await self._registry_credentials(owner.namespace, spec)
            async with MlflowRegistry(spec.mlflow.tracking_uri, credentials, self.settings.registry_timeout_seconds) as registry:
                await registry.tag_version(spec.model.name, rolled.version, ROLLBACK_TAG, value)
        except RegistryError as exc:
            message = f"could not tag version {rolled.version} as rolled back in MLflow: {exc}"
            await self._kube.run(post_event, owner.involved(), True, "RollbackTagFailed", message)


ROLLBACK_TAG = "modelpilot.io/rolled-back"


def _new_rollback(before: ModelDeploymentStatus, after: ModelDeploymentStatus):
    """The history record of a rollback this reconcile decided, if it decided one."""
    history = after.rollout.history if after.rollout else []
    if not history or history[-1].outcome != "RolledBack":
        return None
    earlier = before.rollout.history if before.rollout else []
    return None if earlier and earlier[-1] == history[-1] else history[-1]


def _same_answer(a: Resolution | None, b: Resolution | None) -> bool:
    """The same model, or the same failure, whenever either was asked."""
    return a is not None and b is not None and (a.model, a.reason, a.message, a.retryable) == (b.model, b.reason, b.message, b.retryable)


def _read_spec(body: dict) -> tuple[ModelDeploymentSpec | None, Resolution | None]:
    """The parsed spec, or None and the failure that says why it cannot be parsed."""
    try:
        return ModelDeploymentSpec.model_validate(body.get("spec") or {}), None
    except ValidationError as exc:
        # The CRD schema catches almost everything; this guards objects stored before a schema change.
        return None, Resolution.failed("InvalidSpec", _short_validation_error(exc), retryable=False)


def _screen_image(spec: ModelDeploymentSpec | None, resolution: Resolution | None, settings: Settings) -> Resolution | None:
    """A resolved model whose runtime image is not allowed becomes a failure, so the plan rolls nothing out."""
    if spec is None or resolution is None or resolution.model is None:
        return resolution
    refusal = image_refusal(workload.runtime_image(spec, settings.runtime_image), settings.allowed_images)
    return resolution if refusal is None else refusal


def _converge(
    body: dict,
    spec: ModelDeploymentSpec | None,
    status: ModelDeploymentStatus,
    resolution: Resolution | None,
    settings: Settings,
    cluster: Lookup,
    measured: Measured | None = None,
) -> Outcome | None:
    """The blocking part: read the live Deployment and pods, plan, apply what the plan says, write status."""
    meta = body["metadata"]
    owner = Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])
    live_stable = cluster.get("Deployment", owner.namespace, track_name(owner.name, STABLE))
    live_canary = cluster.get("Deployment", owner.namespace, track_name(owner.name, CANARY))
    stable, pod_health = None, {}
    pods = cluster.pods(owner.namespace, owner.name) if live_stable or live_canary else []
    if live_stable is not None:
        stable = TrackObservation.from_deployment(live_stable, LABEL_MODEL_VERSION)
        pod_health = {
            "start_failure": health.start_failure(live_stable, pods, LABEL_MODEL_VERSION),
            "ready_versions": health.ready_versions(live_stable, pods, LABEL_MODEL_VERSION),
            "lingering_pods": health.lingering_pods(live_stable, pods, LABEL_MODEL_VERSION),
        }
    if live_canary is not None:
        pod_health["canary_start_failure"] = health.start_failure(live_canary, pods, LABEL_MODEL_VERSION)
    moment = datetime.now(timezone.utc)
    observed = Observations(
        generation=meta.get("generation", 1),
        now=moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        clock=moment.timestamp(),
        requests=requests.pending(meta.get("annotations")),
        canary=TrackObservation.from_deployment(live_canary, LABEL_MODEL_VERSION) if live_canary is not None else None,
        resolution=resolution,
        stable=stable,
        autoscaler=cluster.get("HorizontalPodAutoscaler", owner.namespace, owner.name) is not None,
        router=router_for(spec) if spec is not None else None,
        measured=measured,
        **pod_health,
    )
    decision = plan(spec, status, observed)
    if decision is None:
        return None
    retry_because = resolution.message if resolution is not None and resolution.retryable else None
    if decision.apply:
        try:
            _apply_workload(owner, spec, decision, settings, cluster)
        except objects.ApplyRefused as exc:
            # Reported, and retried with backoff: a missing permission, a webhook or a name taken by
            # someone else's object may be fixed later.
            failed = apply_failed(decision.status, observed, exc.reason, str(exc))
            decision = Plan(status=failed, serve=None, apply=False, requeue_after=decision.requeue_after)
            retry_because = str(exc)
    _write_status(owner, status, decision.status, decision.events)
    return Outcome(status=decision.status, retry_because=retry_because, requeue_after=decision.requeue_after)


def _apply_workload(owner: Owner, spec: ModelDeploymentSpec, decision: Plan, settings: Settings, cluster: Lookup) -> None:
    """Apply the plan's objects, or none at all when one of their names belongs to someone else."""
    router = router_for(spec)
    desired = [
        workload.service(owner, spec, canary_too=router.splits_by_pods),
        *(workload.track_service(owner, spec, track) for track in workload.TRACKS),
    ]
    if decision.serve is not None:
        desired.insert(0, workload.deployment(owner, spec, decision.serve, settings.runtime_image, STABLE, package_index=settings.package_index))
    if decision.canary is not None:
        canary = workload.deployment(
            owner, spec, decision.canary, settings.runtime_image, CANARY, decision.canary_replicas, settings.package_index
        )
        desired.append(canary)
    autoscaler = workload.autoscaler(owner, spec)
    if autoscaler is not None:
        desired.append(autoscaler)
    budget = workload.disruption_budget(owner, spec)
    if budget is not None:
        desired.append(budget)
    desired.extend(router.objects(owner, spec, decision.canary_weight))
    pairs = [(want, _live(want, cluster)) for want in desired]
    for want, live in pairs:
        problem = live is not None and foreign(live, owner.uid, objects.FIELD_MANAGER)
        if problem:
            raise objects.NotOwned(f"{problem}: rename or delete it, or rename the ModelDeployment; nothing was applied")
    if decision.remove_autoscaler:
        objects.delete("autoscaling/v2", "HorizontalPodAutoscaler", owner.namespace, owner.name)
    if budget is None and cluster.get("PodDisruptionBudget", owner.namespace, owner.name) is not None:
        objects.delete("policy/v1", "PodDisruptionBudget", owner.namespace, owner.name)
    if decision.remove_canary:
        objects.delete("apps/v1", "Deployment", owner.namespace, track_name(owner.name, CANARY))
    if decision.retire_router is not None:
        for api_version, kind, name in ROUTERS[decision.retire_router].owned(owner):
            objects.delete(api_version, kind, owner.namespace, name)
    for want, live in pairs:
        objects.apply(want, live)


def _live(desired: dict, cluster: Lookup) -> dict | None:
    """The live object of `desired`'s name: from the cache of ours, else asked of the API server, which also
    knows objects that are not ours (and ours the cache has not seen yet)."""
    meta = desired["metadata"]
    found = cluster.get(desired["kind"], meta["namespace"], meta["name"])
    if found is None:
        found = objects.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
    return found


def _write_status(owner: Owner, before: ModelDeploymentStatus, after: ModelDeploymentStatus, events: tuple = ()) -> None:
    before_wire, after_wire = before.to_wire(), after.to_wire()
    if after_wire != before_wire:
        objects.patch_status(API_VERSION, KIND, owner.namespace, owner.name, _clearing(before_wire, after_wire))
    for warning, reason, message in events:
        post_event(owner.involved(), warning, reason, message)
        if reason in ROLLOUT_ENDINGS:
            ROLLOUTS.labels(outcome=ROLLOUT_ENDINGS[reason]).inc()
    # A condition moved by a rollout event (RolloutAborted) is already told by that event.
    told = {reason for _, reason, _ in events}
    for notice in notices(before.conditions, after.conditions):
        if notice.reason not in told:
            post_event(owner.involved(), notice.warning, notice.reason, notice.message)


def _clearing(before: dict, after: dict) -> dict:
    """`after` as a merge patch over `before`: a merge patch keeps every key it does not mention, at any
    depth, so each key that went away (say stable.updatingTo once a rollout completes) is sent as null."""
    patch = {key: None for key in before if key not in after}
    for key, value in after.items():
        old = before.get(key)
        patch[key] = _clearing(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return patch


def _parse_status(raw: dict | None) -> ModelDeploymentStatus:
    try:
        return ModelDeploymentStatus.model_validate(raw or {})
    except ValidationError:
        log.warning("ignoring a status this operator cannot read; it will be rewritten")
        return ModelDeploymentStatus()


def _short_validation_error(exc: ValidationError) -> str:
    parts = [f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]]
    return "invalid spec: " + "; ".join(parts)
