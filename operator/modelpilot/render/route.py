"""The HTTPRoute of the Gateway API router, as a plain dict. Pure."""

from __future__ import annotations

from ..api.spec import GatewayAPIRouting, ModelDeploymentSpec
from .labels import CANARY, STABLE, common_labels
from .owner import Owner
from .workload import SERVICE_PORT, track_service_name

HTTP_ROUTE_API = "gateway.networking.k8s.io/v1"


def http_route(owner: Owner, spec: ModelDeploymentSpec, routing: GatewayAPIRouting, canary_weight: int) -> dict:
    """One rule: the path prefix, split between the per-track Services by weight (percent to the canary)."""
    backends = [
        {"name": track_service_name(owner.name, STABLE), "port": SERVICE_PORT, "weight": 100 - canary_weight},
        {"name": track_service_name(owner.name, CANARY), "port": SERVICE_PORT, "weight": canary_weight},
    ]
    route_spec: dict = {
        "parentRefs": [ref.to_wire() for ref in routing.parent_refs],
        "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": routing.path}}], "backendRefs": backends}],
    }
    if routing.hostnames:
        route_spec["hostnames"] = list(routing.hostnames)
    return {
        "apiVersion": HTTP_ROUTE_API,
        "kind": "HTTPRoute",
        "metadata": owner.metadata(owner.name, common_labels(owner.name, spec.model.name)),
        "spec": route_spec,
    }
