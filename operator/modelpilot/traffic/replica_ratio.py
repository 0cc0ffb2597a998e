"""The default router, replica ratio, pure: how many canary pods give the share of traffic a step asks for.

With the default router one Service selects the pods of both tracks, so the canary's share of requests is
its share of ready pods: canary / (stable + canary). The stable track keeps the spec's replicas for the
whole rollout (the canary is surge on top), so a weight maps to a whole number of canary pods:

- the count whose share is closest to the weight asked for; on a tie, the fewer pods;
- at least one pod for any weight above 0 (a canary with no pods cannot be judged), none for weight 0;
- at most as many pods as the stable track has, so at most 50% of the traffic. A replica-ratio router
  cannot send 100% to the canary without scaling the stable track down, and the stable track never goes
  below the spec's replicas during a rollout; promotion is the step that moves the rest of the traffic.
  Weights above 50 therefore get as many canary pods as stable ones, unless the step sets canaryReplicas.
- a step's canaryReplicas, when given, is used as is;
- no stable pods (replicas: 0) means no canary pods: nothing serves, so there is no traffic to split.
"""

from __future__ import annotations

from fractions import Fraction

from ..api.spec import ModelDeploymentSpec
from ..render.owner import Owner


def canary_replicas(weight: int, stable_replicas: int, override: int | None = None) -> int:
    """Canary pods for `weight` percent beside `stable_replicas` stable pods (rules in the module doc)."""
    if override is not None:
        return max(0, override)
    if weight <= 0 or stable_replicas <= 0:
        return 0
    if weight >= 100:
        return stable_replicas
    # The share grows with the count, so the closest count is next to the exact solution of
    # c / (s + c) = w / 100. Fractions keep the comparison exact, so ties are real ties.
    ideal = Fraction(weight * stable_replicas, 100 - weight)
    low = min(max(1, int(ideal)), stable_replicas)
    high = min(low + 1, stable_replicas)
    target = Fraction(weight, 100)

    def miss(canary: int) -> Fraction:
        return abs(Fraction(canary, stable_replicas + canary) - target)

    return high if miss(high) < miss(low) else low


def effective_weight(stable: int, canary: int) -> float:
    """Percent of traffic the canary gets with these pod counts (ready pods, or replicas when planning)."""
    total = stable + canary
    return 100.0 * canary / total if total > 0 else 0.0


def describe(requested: int, canary: int, stable: int) -> str:
    """A line for status and Events, such as "asked 10%, 25% with 1 of 4 pods"."""
    share = f"{effective_weight(stable, canary):.1f}".rstrip("0").rstrip(".")
    text = f"asked {requested}%, {share}% with {canary} of {stable + canary} pods"
    if stable == 0 and requested > 0:
        text += " (no stable pods: no traffic to split)"
    elif requested > 50 and 0 < canary == stable:
        text += " (a replica-ratio split gives the canary at most as many pods as stable until promotion)"
    return text


class ReplicaRatio:
    """The model's Service selects both tracks: no object of its own carries the split."""

    name = "ReplicaRatio"
    splits_by_pods = True

    def canary_pods(self, weight: int, stable_replicas: int, override: int | None) -> int:
        return canary_replicas(weight, stable_replicas, override)

    def effective_weight(self, weight: int, stable_replicas: int, canary_pods: int, canary_ready: int) -> float:
        return effective_weight(stable_replicas, canary_pods)

    def describe(self, weight: int, canary_pods: int, stable_replicas: int) -> str:
        return describe(weight, canary_pods, stable_replicas)

    def objects(self, owner: Owner, spec: ModelDeploymentSpec, canary_weight: int) -> list[dict]:
        return []

    def owned(self, owner: Owner) -> list[tuple[str, str, str]]:
        return []

    def scale_down_delay(self, spec: ModelDeploymentSpec) -> float:
        return 0.0  # removing the pods is the routing change; their preStop pause covers kube-proxy's lag


ROUTER = ReplicaRatio()
