"""kopf wiring: which events trigger a reconcile, and when a failure is retried with backoff.

Handlers are async and thin; the reconciler runs every blocking Kubernetes and MLflow call in a bounded
pool of its own, so none stalls the event loop. Owned objects and the pods of model versions are cached in
kopf indexes (one watch per kind, not one per ModelDeployment), so a reconcile reads nothing it already knows.
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
    # The API server filters pods, so the operator never receives the rest of the cluster's pods.
    settings.watching.label_selectors["v1", "pods"] = ",".join(f"{k}={v}" for k, v in OWNED.items())
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


# Whose managedFields entries an owned object's copy keeps: the diff and the HPA handover read ours only.
_OUR_MANAGERS = {FIELD_MANAGER, HANDOVER_MANAGER}


def _snapshot(body) -> dict:
    """A copy of a ModelDeployment to reconcile from; its managedFields are never read."""
    meta = body.get("metadata") or {}
    return compact({**body, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}})


def _owned_snapshot(body) -> dict:
    """A copy of an owned object, keeping only our own managedFields entries: other managers' are never read
    and would be kept for every object."""
    meta = body.get("metadata") or {}
    ours = [e for e in meta.get("managedFields") or () if e.get("manager") in _OUR_MANAGERS]
    return compact({**body, "metadata": {**meta, "managedFields": ours}})


@kopf.index(*MD, id="modeldeployments")
async def modeldeployments_by_name(namespace, name, body, **_):
    return {(namespace, name): _snapshot(body)}


@kopf.index("apps", "v1", "deployments", labels=OWNED, id="deployments")
@kopf.index("v1", "services", labels=OWNED, id="services")
@kopf.index("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED, id="autoscalers")
@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OWNED, id="budgets")
async def owned_by_name(namespace, name, body, **_):
    """In-memory copies of what ModelDeployments own, keyed by (namespace, name)."""
    return {(namespace, name): _owned_snapshot(body)}


@kopf.index("v1", "pods", labels=OWNED, id="pods")
async def pods_by_owner(namespace, labels, body, **_):
    """Pods keyed by (namespace, ModelDeployment), so a reconcile finds its own without scanning every pod;
    trimmed to what the start-failure judgement reads, since pods are many."""
    owner = labels.get(LABEL_DEPLOYMENT)
    return {(namespace, owner): compact(health.essentials(dict(body)))} if owner else {}


@dataclass(frozen=True)
class _Indexed:
    """The reconciler's view of the cluster (`reconcile.Lookup`), answered from kopf's indexes."""

    deployments: kopf.Index
    services: kopf.Index
    autoscalers: kopf.Index
    budgets: kopf.Index
    pod_index: kopf.Index

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        # Kinds with no index (an HTTPRoute, whose CRD may not be installed) are asked of the API server.
        index = {"Deployment": self.deployments, "Service": self.services, "HorizontalPodAutoscaler": self.autoscalers,
                 "PodDisruptionBudget": self.budgets}.get(kind)  # fmt: skip
        for body in index.get((namespace, name), ()) if index is not None else ():
            return body
        return None

    def pods(self, namespace: str, deployment: str) -> list[dict]:
        return list(self.pod_index.get((namespace, deployment), ()))


@kopf.on.resume(*MD)
@kopf.on.create(*MD)
@kopf.on.update(*MD, field="spec")
async def on_spec(body, retry, deployments, services, autoscalers, budgets, pods, **_):
    outcome = await _reconcile("spec", _snapshot(body), _Indexed(deployments, services, autoscalers, budgets, pods))
    if outcome and outcome.retry_because is not None:
        # Back off 5s, 10s, 20s ... up to 5 minutes; the periodic resync keeps watching after that.
        raise kopf.TemporaryError(outcome.retry_because, delay=min(300, 5 * 2 ** min(retry, 6)))


@kopf.on.startup()
async def start_resync(memo: kopf.Memo, modeldeployments, deployments, services, autoscalers, budgets, pods, **_) -> None:
    """One loop for all ModelDeployments re-resolves them every interval, so a moved alias or a model
    registered later is noticed. Not a kopf timer: that is a task per object and adds a finalizer,
    which would make deleting a ModelDeployment (or its namespace) wait for the operator."""
    cluster = _Indexed(deployments, services, autoscalers, budgets, pods)
    memo.resync = Resync(modeldeployments, cluster)
    memo.resync.task = asyncio.create_task(memo.resync.forever())

    async def wake(key) -> None:
        for body in modeldeployments.get(key, ()):
            await _reconcile("timer", body, cluster, resolve=False)

    memo.wakeups = asyncio.create_task(WAKEUPS.forever(wake))

    async def owned_changed(key) -> None:
        for body in modeldeployments.get(key, ()):
            await _reconcile("owned", body, cluster, resolve=False)

    memo.owners = Coalescer(owned_changed)


@kopf.on.cleanup()
async def stop_resync(memo: kopf.Memo, **_) -> None:
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
async def on_modeldeployment_event(type, uid, body, deployments, services, autoscalers, budgets, pods, **_):
    if type == "DELETED":
        RECONCILER.forget(uid)
        OBJECTS.forget(body["metadata"]["namespace"], body["metadata"]["name"])
    elif _new_request(body):
        await _reconcile("request", _snapshot(body), _Indexed(deployments, services, autoscalers, budgets, pods), resolve=False)


def _new_request(body) -> bool:
    """A manual rollout request the status does not yet record as handled."""
    handled = ((body.get("status") or {}).get("rollout") or {}).get("handledRequests") or ()
    return any(request.id not in handled for request in requests.pending(body.get("metadata", {}).get("annotations")))


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("v1", "services", labels=OWNED)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=OWNED)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
@kopf.on.event("v1", "pods", labels=OWNED)
async def on_owned_event(namespace, labels, memo: kopf.Memo, **_):
    """An owned object or one of the pods changed: report readiness (or why new pods cannot start) and put
    back any hand edit of what we manage. Asked, not awaited (see coalesce.py)."""
    owner = labels.get(LABEL_DEPLOYMENT)
    if owner:
        memo.owners.ask((namespace, owner))
