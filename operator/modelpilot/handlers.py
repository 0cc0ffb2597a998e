"""kopf wiring: which events trigger a reconcile, and when a failure is retried with backoff.

Handlers are async and thin; the reconciler runs every blocking Kubernetes and MLflow call in a bounded
pool of its own, so none stalls the event loop. ModelDeployments are cached in a kopf index, and what they
own and the pods of model versions by informers (one watch per kind, not one per ModelDeployment), so a
reconcile reads nothing it already knows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import kopf

from .api import GROUP, PLURAL, VERSION
from .coalesce import Coalescer
from .kube.handover import HANDOVER_MANAGER
from .kube.informer import Copy, Informer, Kind, Store
from .kube.objects import FIELD_MANAGER
from .kube.snapshot import compact
from .metrics import IN_FLIGHT, RECONCILE_SECONDS, RECONCILES, WAKEUPS_PENDING, ObjectGauges
from .reconcile import Outcome, Reconciler
from .render.labels import LABEL_DEPLOYMENT, MANAGED_BY
from .rollout import health, requests
from .settings import Settings
from .wakeups import Wakeups

log = logging.getLogger(__name__)
SETTINGS = Settings.from_env()
RECONCILER = Reconciler(SETTINGS)
WAKEUPS = Wakeups()
OBJECTS = ObjectGauges()
OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY}
MD = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Our own Events are posted by kube/events.py; kopf's per-handler chatter stays in the log.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


# Whose managedFields entries an owned object's copy keeps: the diff and the HPA handover read ours only.
_OUR_MANAGERS = {FIELD_MANAGER, HANDOVER_MANAGER}


def _snapshot(body) -> dict:
    """A copy of a ModelDeployment to reconcile from; its managedFields are never read."""
    meta = body.get("metadata") or {}
    return compact({**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})


def _owned_snapshot(body) -> dict:
    """What is kept of an owned object: all but other managers' managedFields entries, which are never read
    and would be kept for every object."""
    meta = body.get("metadata") or {}
    ours = [e for e in meta.get("managedFields") or () if e.get("manager") in _OUR_MANAGERS]
    return {**body, "metadata": {**meta, "managedFields": ours}}


@kopf.index(*MD, id="modeldeployments")
async def modeldeployments_by_name(namespace, name, body, **_):
    return {(namespace, name): _snapshot(body)}


def _pod_copy(body) -> dict:
    """Pods are many: a pod's copy keeps only what the start-failure judgement reads."""
    return health.essentials(body)


def _by_name(body: dict) -> tuple[str, str]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"]


def _by_owner(body: dict) -> tuple[str, str] | None:
    """Pods by (namespace, ModelDeployment), so a reconcile finds its own without scanning every pod."""
    meta = body["metadata"]
    owner = (meta.get("labels") or {}).get(LABEL_DEPLOYMENT)
    return (meta["namespace"], owner) if owner else None


# What ModelDeployments own, each kept by an informer (kube/informer.py) rather than kopf: see why there.
OWNED_KINDS = {
    "Deployment": Kind("apps/v1", "deployments"),
    "Service": Kind("v1", "services"),
    "HorizontalPodAutoscaler": Kind("autoscaling/v2", "horizontalpodautoscalers"),
    "PodDisruptionBudget": Kind("policy/v1", "poddisruptionbudgets"),
}
PODS = Kind("v1", "pods")


@dataclass(frozen=True)
class _Indexed:
    """The reconciler's view of the cluster (`reconcile.Lookup`), answered from the informers' stores."""

    owned: dict[str, Store]
    pod_index: Store

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        # Kinds with no store (an HTTPRoute, whose CRD may not be installed) are asked of the API server.
        store = self.owned.get(kind)
        for body in store.get((namespace, name), ()) if store is not None else ():
            return body
        return None

    def pods(self, namespace: str, deployment: str) -> list[dict]:
        return list(self.pod_index.get((namespace, deployment), ()))


def _informers(cluster: _Indexed, namespaces: list[str], changed) -> list[Informer]:
    """One informer per kind and watched namespace, all filtered by the API server to what we manage."""
    loop, selector = asyncio.get_running_loop(), ",".join(f"{k}={v}" for k, v in OWNED.items())
    kinds = [(kind, _owned_snapshot, cluster.owned[name]) for name, kind in OWNED_KINDS.items()]
    kinds.append((PODS, _pod_copy, cluster.pod_index))
    return [Informer(kind, selector, namespace, trim, store, changed, loop)
            for kind, trim, store in kinds for namespace in namespaces or [None]]  # fmt: skip


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD, field="spec")
async def on_spec(body, retry, memo: kopf.Memo, **_):
    outcome = await _reconcile("spec", _snapshot(body), memo.cluster)
    if outcome and outcome.retry_because is not None:
        # Back off 5s, 10s, 20s ... up to 5 minutes; the periodic resync keeps watching after that.
        raise kopf.TemporaryError(outcome.retry_because, delay=min(300, 5 * 2 ** min(retry, 6)))


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, modeldeployments, **_) -> None:
    """Fills the caches of what ModelDeployments own before any is reconciled, then starts one loop for all
    ModelDeployments that re-resolves them every interval, so a moved alias or a model registered later is
    noticed. Not a kopf timer: that is a task per object and adds a finalizer, which would make deleting a
    ModelDeployment (or its namespace) wait for the operator."""
    cluster = memo.cluster = _Indexed({name: Store(_by_name) for name in OWNED_KINDS}, Store(_by_owner))

    async def owned_changed(key) -> None:
        for body in modeldeployments.get(key, ()):
            await _reconcile("owned", body, cluster, resolve=False)

    memo.owners = Coalescer(owned_changed)

    def changed(copy: Copy) -> None:
        """An owned object or one of the pods changed: report readiness (or why new pods cannot start) and put
        back any hand edit of what we manage. Asked, not awaited (see coalesce.py)."""
        owner = copy.labels.get(LABEL_DEPLOYMENT)
        if owner:
            memo.owners.ask((copy.namespace, owner))

    memo.informers = _informers(cluster, memo.get("namespaces") or [], changed)
    for informer in memo.informers:
        informer.start()
    await asyncio.gather(*(informer.synced.wait() for informer in memo.informers))

    memo.resync = Resync(modeldeployments, cluster)
    memo.resync.task = asyncio.create_task(memo.resync.forever())

    async def wake(key) -> None:
        for body in modeldeployments.get(key, ()):
            await _reconcile("timer", body, cluster, resolve=False)

    memo.wakeups = asyncio.create_task(WAKEUPS.forever(wake))


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_) -> None:
    for informer in memo.informers:
        informer.stop()
    memo.resync.task.cancel()
    memo.wakeups.cancel()
    memo.owners.cancel()


async def _reconcile(trigger: str, body: dict, cluster: _Indexed, resolve: bool = True) -> Outcome | None:
    """Every reconcile, whatever triggered it: counted and timed, and woken again when its plan says so."""
    RECONCILES.labels(trigger=trigger).inc()
    meta, started, result = body["metadata"], time.monotonic(), "error"
    IN_FLIGHT.inc()
    try:
        outcome = await RECONCILER.reconcile(body, cluster, resolve=resolve, resync=trigger == "resync")
        result = "skipped" if outcome is None else "retry" if outcome.retry_because is not None else "ok"
    finally:
        IN_FLIGHT.dec()
        RECONCILE_SECONDS.labels(result=result).observe(time.monotonic() - started)
    if outcome is not None:
        status = outcome.status
        canary = status.canary
        OBJECTS.record(meta["namespace"], meta["name"], status.phase, canary.weight if canary else 0, canary.step if canary else None)
        if outcome.requeue_after is not None:
            WAKEUPS.at((meta["namespace"], meta["name"]), outcome.requeue_after)
    WAKEUPS_PENDING.set(len(WAKEUPS))
    return outcome


class Resync:
    """Every interval, a reconcile of each ModelDeployment that has none from here still running. Each runs
    as a task of its own, so one that waits on a slow registry holds back no other, nor the next pass."""

    def __init__(self, modeldeployments: kopf.Index, cluster: _Indexed):
        self.modeldeployments, self.cluster = modeldeployments, cluster
        self.running: dict[str, asyncio.Task] = {}
        self.task: asyncio.Task | None = None

    async def forever(self) -> None:
        while True:
            await asyncio.sleep(SETTINGS.resolve_interval_seconds)
            try:
                self.once()
            except Exception:  # the loop must outlive any one bad pass
                log.exception("periodic resync failed; trying again next interval")

    def once(self) -> None:
        bodies = {body["metadata"]["uid"]: body for store in list(self.modeldeployments.values()) for body in store}
        RECONCILER.retain(set(bodies))
        for uid, body in bodies.items():
            if uid in self.running:
                continue
            task = asyncio.create_task(_reconcile("resync", body, self.cluster))
            self.running[uid] = task
            task.add_done_callback(lambda done, uid=uid, meta=body["metadata"]: self._done(uid, meta, done))

    def _done(self, uid: str, meta: dict, task: asyncio.Task) -> None:
        del self.running[uid]
        if not task.cancelled() and task.exception() is not None:  # one object's failure ends no loop
            failure = task.exception()
            # Not %r: the repr of some errors (a UnicodeDecodeError) holds all the bytes they were given.
            log.error("periodic reconcile of %s/%s failed: %s: %s", meta["namespace"], meta["name"],
                      type(failure).__name__, failure)


@kopf.on.event(*MD)
async def on_modeldeployment_event(type, uid, body, memo: kopf.Memo, **_):
    if type == "DELETED":
        RECONCILER.forget(uid)
        OBJECTS.forget(body["metadata"]["namespace"], body["metadata"]["name"])
    elif _new_request(body):
        await _reconcile("request", _snapshot(body), memo.cluster, resolve=False)


def _new_request(body) -> bool:
    """A manual rollout request the status does not yet record as handled."""
    handled = ((body.get("status") or {}).get("rollout") or {}).get("handledRequests") or ()
    return any(request.id not in handled for request in requests.pending(body.get("metadata", {}).get("annotations")))
