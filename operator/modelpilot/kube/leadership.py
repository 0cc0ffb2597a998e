"""Leader election on a coordination.k8s.io Lease: of several operator replicas, one reconciles.

A replica that starts waits until the Lease is free (never held, released, or not renewed for its
duration), takes it with an update that names the Lease's resourceVersion (so of two replicas racing for
it, the API server lets one win), and only then starts reconciling. The leader renews it every
`renew_seconds`. When it cannot renew for `duration - 2 * renew_seconds` it stops reconciling at once,
before any other replica may take the Lease, and exits so a fresh process waits again: two leaders never
act at the same time as long as clocks agree within that margin. On a clean shutdown it hands the Lease
over by releasing it, so a standby takes over within a retry period instead of a lease duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import kubernetes
from kubernetes.client.exceptions import ApiException

from .client import REQUEST_TIMEOUT, api_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseView:
    """The parts of a Lease that say who may hold it."""

    holder: str | None
    renewed: float | None  # seconds since the epoch
    duration: float


def claimable(view: LeaseView | None, identity: str, now: float) -> bool:
    """Whether `identity` may take (or keep) the Lease now. Pure."""
    if view is None or not view.holder or view.holder == identity:
        return True
    return view.renewed is None or now > view.renewed + view.duration


class Lease:
    def __init__(self, namespace: str, name: str, identity: str, duration: float = 8.0, renew_seconds: float = 2.0,
                 retry_seconds: float = 1.0) -> None:  # fmt: skip
        if duration <= 2 * renew_seconds:
            raise ValueError(f"the lease duration ({duration}s) must be more than twice the renew period ({renew_seconds}s)")
        self.namespace, self.name, self.identity = namespace, name, identity
        self.duration, self.renew_seconds, self.retry_seconds = duration, renew_seconds, retry_seconds
        self.lost = False

    def try_hold(self) -> bool:
        """Take or renew the Lease if it is free or ours; False when someone else holds it (or won a race)."""
        api = kubernetes.client.CoordinationV1Api(api_client())
        now = datetime.now(timezone.utc)
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = kubernetes.client.V1Lease(
                metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, acquired=now, transitions=0),
            )
            return _conflict_is_false(lambda: api.create_namespaced_lease(self.namespace, body, _request_timeout=REQUEST_TIMEOUT))
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        view = LeaseView(spec.holder_identity, spec.renew_time.timestamp() if spec.renew_time else None,
                         float(spec.lease_duration_seconds or self.duration))  # fmt: skip
        if not claimable(view, self.identity, now.timestamp()):
            return False
        ours = spec.holder_identity == self.identity
        transitions = (spec.lease_transitions or 0) + (0 if ours else 1)
        lease.spec = self._spec(now, acquired=spec.acquire_time if ours else now, transitions=transitions)
        # The read's resourceVersion rides along: a replica that updated the Lease since makes this a 409.
        return _conflict_is_false(lambda: api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT))

    def release(self) -> None:
        """Hand the Lease over: a standby may take it at its next try."""
        api = kubernetes.client.CoordinationV1Api(api_client())
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT)
            log.info("leader election: released lease %s/%s", self.namespace, self.name)
        except ApiException as exc:
            log.warning("leader election: could not release lease %s/%s: %s", self.namespace, self.name, exc.reason)

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease."""
        waited = False
        while True:
            try:
                if await asyncio.to_thread(self.try_hold):
                    log.info("leader election: %s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                    return
            except (ApiException, OSError) as exc:
                log.warning("leader election: cannot read lease %s/%s: %s", self.namespace, self.name, exc)
            if not waited:
                log.info("leader election: another replica leads; %s waits as standby", self.identity)
                waited = True
            await asyncio.sleep(self.retry_seconds)

    async def keep(self, stop: asyncio.Event) -> None:
        """Renew the Lease until `stop` is set; set `stop` (and `lost`) when leadership cannot be proven."""
        renewed = time.monotonic()
        deadline = self.duration - 2 * self.renew_seconds
        while not stop.is_set():
            await asyncio.sleep(self.renew_seconds)
            try:
                if await asyncio.to_thread(self.try_hold):
                    renewed = time.monotonic()
                    continue
                why = "another replica holds the lease"
            except (ApiException, OSError) as exc:
                why = f"cannot renew the lease: {exc}"
                if time.monotonic() - renewed < deadline:
                    continue
            log.error("leader election: %s stops leading: %s", self.identity, why)
            self.lost = True
            stop.set()

    def _spec(self, now: datetime, acquired: datetime | None, transitions: int) -> kubernetes.client.V1LeaseSpec:
        return kubernetes.client.V1LeaseSpec(
            holder_identity=self.identity, lease_duration_seconds=int(self.duration), acquire_time=acquired,
            renew_time=now, lease_transitions=transitions,
        )  # fmt: skip


def _conflict_is_false(call) -> bool:
    try:
        call()
    except ApiException as exc:
        if exc.status in (409, 422):  # someone else created or updated it first
            return False
        raise
    return True
