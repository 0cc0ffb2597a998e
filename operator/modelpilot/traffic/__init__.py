"""Traffic routers: how a canary's weight becomes its share of requests. One module per router, one
interface, one line in `ROUTERS`.

A router answers four questions, all pure: how many canary pods a weight needs, what share of requests
the canary gets with the pods it has, how to say so in status, and which objects carry the split (none
for the replica ratio, an HTTPRoute for Gateway API). The rollout's state machine asks the first three;
the reconcile applies the objects, and keeps the canary's pods for the router's scale-down delay after
the weight went back to zero. See Argo Rollouts' `trafficrouting` for the shape this follows.
"""

from __future__ import annotations

from typing import Protocol

from ..api.spec import ModelDeploymentSpec
from ..render.owner import Owner
from . import gateway_api, replica_ratio


class Router(Protocol):
    name: str
    # The canary's share is its share of the model Service's pods, so that Service selects both tracks.
    splits_by_pods: bool

    def canary_pods(self, weight: int, stable_replicas: int, override: int | None) -> int:
        """Canary pods for `weight` percent beside `stable_replicas` stable pods (`override`: the step's own)."""

    def effective_weight(self, weight: int, stable_replicas: int, canary_pods: int, canary_ready: int) -> float:
        """Percent of requests the canary gets: `canary_pods` planned, `canary_ready` of them ready."""

    def describe(self, weight: int, canary_pods: int, stable_replicas: int) -> str:
        """A line for status and Events, such as "asked 10%, 25% with 1 of 4 pods"."""

    def objects(self, owner: Owner, spec: ModelDeploymentSpec, canary_weight: int) -> list[dict]:
        """The objects that send `canary_weight` percent to the canary track, as plain dicts."""

    def owned(self, owner: Owner) -> list[tuple[str, str, str]]:
        """(apiVersion, kind, name) of every object `objects` makes: what to delete when another router takes over."""

    def scale_down_delay(self, spec: ModelDeploymentSpec) -> float:
        """Seconds the canary's pods stay after a rollout ends, while the router's objects stop sending to them."""


ROUTERS: dict[str, Router] = {router.name: router for router in (replica_ratio.ROUTER, gateway_api.ROUTER)}


def router_for(spec: ModelDeploymentSpec) -> Router:
    return gateway_api.ROUTER if spec.rollout.traffic_routing.gateway_api is not None else replica_ratio.ROUTER
