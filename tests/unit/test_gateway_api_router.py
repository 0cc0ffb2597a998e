"""The Gateway API router: canary pods for a weight, the share the route gives, and the HTTPRoute itself."""

from __future__ import annotations

import pytest

from modelpilot.api import ModelDeploymentSpec
from modelpilot.render.owner import Owner
from modelpilot.traffic import ROUTERS, router_for
from modelpilot.traffic.gateway_api import ROUTER, routed_weight

OWNER = Owner(name="fraud", namespace="ml", uid="u-1")


def spec(routing=None) -> ModelDeploymentSpec:
    rollout = {"steps": [{"setWeight": 10}]}
    if routing is not None:
        rollout["trafficRouting"] = {"gatewayAPI": routing}
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "fraud-detector", "alias": "champion"}, "mlflow": {"trackingUri": "http://m"}, "rollout": rollout}
    )


@pytest.mark.parametrize(
    "weight, stable, pods",
    [(0, 4, 0), (1, 4, 1), (10, 4, 1), (25, 4, 1), (26, 4, 2), (50, 4, 2), (75, 4, 3), (100, 4, 4), (10, 0, 0), (10, 1, 1)],
)
def test_the_canary_gets_the_weights_part_of_the_stable_pods_rounded_up(weight, stable, pods):
    assert ROUTER.canary_pods(weight, stable, None) == pods


def test_a_steps_canary_replicas_wins():
    assert ROUTER.canary_pods(10, 4, 3) == 3


@pytest.mark.parametrize("weight, pods, ready, routed", [(25, 1, 0, 0), (25, 1, 1, 25), (50, 2, 1, 25), (50, 2, 2, 50), (50, 2, 5, 50), (0, 0, 0, 0), (33, 3, 2, 22)])
def test_weight_moves_to_the_canary_as_its_pods_become_ready(weight, pods, ready, routed):
    assert routed_weight(weight, pods, ready) == routed
    assert ROUTER.effective_weight(weight, 4, pods, ready) == routed


def test_the_route_splits_between_the_track_services_at_the_exact_weight():
    routing = {"parentRefs": [{"name": "edge", "namespace": "infra", "sectionName": "web"}], "hostnames": ["fraud.example.com"], "path": "/invocations"}
    (route,) = ROUTER.objects(OWNER, spec(routing), canary_weight=25)
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1" and route["kind"] == "HTTPRoute"
    assert route["metadata"]["name"] == "fraud" and route["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert route["spec"]["parentRefs"] == [{"name": "edge", "namespace": "infra", "sectionName": "web"}]
    assert route["spec"]["hostnames"] == ["fraud.example.com"]
    (rule,) = route["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/invocations"}}]
    assert rule["backendRefs"] == [
        {"name": "fraud-stable", "port": 80, "weight": 75},
        {"name": "fraud-canary", "port": 80, "weight": 25},
    ]
    assert ROUTER.owned(OWNER) == [("gateway.networking.k8s.io/v1", "HTTPRoute", "fraud")]


def test_without_hostnames_the_route_answers_every_host_on_the_root_path():
    (route,) = ROUTER.objects(OWNER, spec({"parentRefs": [{"name": "edge"}]}), canary_weight=0)
    assert "hostnames" not in route["spec"]
    assert route["spec"]["rules"][0]["matches"][0]["path"]["value"] == "/"
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [100, 0]


def test_the_spec_picks_the_router_and_each_router_is_registered_by_name():
    assert router_for(spec()).name == "ReplicaRatio" and router_for(spec()).objects(OWNER, spec(), 10) == []
    assert router_for(spec({"parentRefs": [{"name": "edge"}]})) is ROUTER
    assert all(ROUTERS[name].name == name for name in ROUTERS)


def test_the_model_service_selects_the_canary_only_when_pods_carry_the_split():
    from modelpilot.render.labels import LABEL_TRACK
    from modelpilot.render.workload import service

    gateway = spec({"parentRefs": [{"name": "edge"}]})
    assert LABEL_TRACK not in service(OWNER, spec(), canary_too=router_for(spec()).splits_by_pods)["spec"]["selector"]
    assert service(OWNER, gateway, canary_too=router_for(gateway).splits_by_pods)["spec"]["selector"][LABEL_TRACK] == "stable"
    assert ROUTER.scale_down_delay(spec({"parentRefs": [{"name": "edge"}], "scaleDownDelay": "1m30s"})) == 90
