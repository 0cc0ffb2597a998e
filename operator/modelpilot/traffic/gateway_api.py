"""The Gateway API router, pure: an HTTPRoute the operator owns sends the exact weight of each step to the
canary track's Service and the rest to the stable track's.

The split no longer depends on pod counts, so the canary gets only the pods its share needs: the weight's
part of the stable track's replicas, rounded up, at least one for any weight above zero. Weight moves to
the canary only as its pods become ready: with `ready` of `pods` ready the route sends `weight * ready /
pods` percent, so a step never points traffic at pods that cannot answer yet, and a step with all its pods
ready gets exactly its weight. When a rollout ends (promoted or aborted) the weight goes to zero at once,
and the canary's pods stay for the scale-down delay, so the Gateway sees the new weights before it sees
their endpoints go (otherwise it answers 503 for the canary's share in between). The model's own Service
selects the stable track only: callers inside the cluster that do not go through the Gateway never reach
a canary.
"""

from __future__ import annotations

import math

from ..api.base import seconds
from ..api.spec import ModelDeploymentSpec
from ..render.owner import Owner
from ..render.route import HTTP_ROUTE_API, http_route


class GatewayAPI:
    name = "GatewayAPI"
    splits_by_pods = False

    def canary_pods(self, weight: int, stable_replicas: int, override: int | None) -> int:
        if override is not None:
            return max(0, override)
        if weight <= 0 or stable_replicas <= 0:
            return 0
        return min(stable_replicas, max(1, math.ceil(stable_replicas * weight / 100)))

    def effective_weight(self, weight: int, stable_replicas: int, canary_pods: int, canary_ready: int) -> float:
        return float(routed_weight(weight, canary_pods, canary_ready))

    def describe(self, weight: int, canary_pods: int, stable_replicas: int) -> str:
        pods = "pod" if canary_pods == 1 else "pods"
        return f"asked {weight}%, {weight}% through the HTTPRoute once {canary_pods} canary {pods} are ready beside {stable_replicas} stable"

    def objects(self, owner: Owner, spec: ModelDeploymentSpec, canary_weight: int) -> list[dict]:
        return [http_route(owner, spec, spec.rollout.traffic_routing.gateway_api, canary_weight)]

    def owned(self, owner: Owner) -> list[tuple[str, str, str]]:
        return [(HTTP_ROUTE_API, "HTTPRoute", owner.name)]

    def scale_down_delay(self, spec: ModelDeploymentSpec) -> float:
        return seconds(spec.rollout.traffic_routing.gateway_api.scale_down_delay)


def routed_weight(weight: int, pods: int, ready: int) -> int:
    """The percent the route sends to the canary: the weight, in proportion to the canary pods ready."""
    if weight <= 0 or pods <= 0 or ready <= 0:
        return 0
    return weight * min(ready, pods) // pods


ROUTER = GatewayAPI()
