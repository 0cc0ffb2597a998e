"""The Gateway API router on the real node: a canary whose share of requests through a real Gateway (Traefik,
built from its Go module) is the exact weight of each step, promoted without a failed request; and the
HTTPRoute goes when the spec drops the router."""

from __future__ import annotations

import time

import pytest

from tests.support.gateway import LISTENER, route_accepted, traefik_gateway
from tests.support.load import Load
from tests.support.mlflow import register_sklearn_model, set_alias
from tests.support.modeldeployments import apply_model, get, serving, wait_status
from tests.support.waiting import wait_for

# The long tier: it needs Traefik built (`make test-long` builds it); in the default tier unit tests cover
# the router's HTTPRoute and weights.
pytestmark = [pytest.mark.long, pytest.mark.cluster, pytest.mark.mlflow]

MODEL = "gateway-model"
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]
STEPS = [{"setWeight": 20}, {"pause": {"duration": "15s"}}, {"setWeight": 50}, {"pause": {"duration": "12s"}}]
# The gateway splits by weighted round robin, not by chance: over a few hundred answers the canary's share
# is within this many points of the weight.
TOLERANCE = 3
# The gateway reads a route change from its watch a moment after the operator writes it.
SETTLE = 2.0


def share_of(answers, version: str, start: float, end: float) -> tuple[float, int]:
    window = [a for a in answers if start <= a.sent < end and a.ok]
    return 100 * sum(a.version == version for a in window) / max(1, len(window)), len(window)


def accepted_route(kubectl, ns: str, name: str) -> dict | None:
    route = get(kubectl, "httproute", name, "-n", ns)
    return route if route_accepted(route) else None


def test_the_gateway_sends_the_exact_weight_to_the_canary_and_promotes_without_a_failed_request(
    kube_cluster, kubectl, operator, mlflow, images, pod_mlflow_uri, restricted_namespace
):
    ns = restricted_namespace
    v1 = register_sklearn_model(mlflow, MODEL, alias="champion", seed=31)
    v2 = register_sklearn_model(mlflow, MODEL, seed=32)
    with traefik_gateway(kube_cluster.kubeconfig, kubectl, ns) as gateway:
        routing = {"gatewayAPI": {"parentRefs": [{"name": gateway.name, "sectionName": LISTENER}], "path": "/invocations"}}
        apply_model(kubectl, ns, "gw", pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=2,
                    rollout={"steps": STEPS, "trafficRouting": routing})  # fmt: skip
        st = wait_status(kubectl, operator, ns, "gw", serving(v1), "gw Ready on version 1")
        assert st["trafficRouter"] == "GatewayAPI"
        route = wait_for(lambda: accepted_route(kubectl, ns, "gw"), "the gateway to accept the HTTPRoute", timeout=60)
        assert [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]] == [("gw-stable", 100), ("gw-canary", 0)]
        url = f"{gateway.url}/invocations"
        marks: dict[str, float] = {}

        def reached(step: int, phase: str) -> dict | None:
            state = get(kubectl, "mdep", "gw", "-n", ns).get("status", {})
            rollout = state.get("rollout") or {}
            return state if rollout.get("stepIndex") == step and rollout.get("phase") == phase else None

        with Load(url, {"inputs": ROWS}) as load:
            wait_for(lambda: sum(a.ok for a in load.answers) >= 20, "answers through the gateway", timeout=60)
            set_alias(mlflow, MODEL, "champion", v2)
            # setWeight 20: one canary pod (20% of 2, rounded up) and exactly 20% of the requests.
            first = wait_for(lambda: reached(1, "Paused"), "the 15s pause after setWeight 20", timeout=300)
            marks["first"] = time.monotonic()
            assert (first["canary"]["replicas"], first["canary"]["weight"]) == (1, 20)
            backends = get(kubectl, "httproute", "gw", "-n", ns)["spec"]["rules"][0]["backendRefs"]
            assert [b["weight"] for b in backends] == [80, 20]
            third = wait_for(lambda: reached(3, "Paused"), "the 12s pause after setWeight 50", timeout=300)
            marks["third"] = time.monotonic()
            assert (third["canary"]["replicas"], third["canary"]["weight"]) == (1, 50)
            wait_for(lambda: (get(kubectl, "mdep", "gw", "-n", ns)["status"].get("rollout") or {}).get("phase")
                     in ("Promoting", "Completed"), "promotion", timeout=120)  # fmt: skip
            marks["promoting"] = time.monotonic()
            final = wait_status(kubectl, operator, ns, "gw", serving(v2), "gw Ready on version 2 after promotion")
            completed = time.monotonic()
            wait_for(lambda: sum(a.sent > completed + SETTLE for a in load.answers) >= 40, "traffic after promotion", timeout=60)

        answers = load.answers
        since = {name: [round(a.sent - mark, 2) for a in load.failures()] for name, mark in marks.items()}
        assert load.failures() == [], f"{len(load.failures())} of {len(answers)} requests failed, seconds after {since}: {load.failures()[:5]}"
        at_20, n20 = share_of(answers, v2, marks["first"] + SETTLE, marks["first"] + 12)  # inside the 15s pause
        at_50, n50 = share_of(answers, v2, marks["third"] + SETTLE, marks["promoting"])
        print(f"through the gateway version {v2} answered {at_20:.1f}% of {n20} at weight 20, {at_50:.1f}% of {n50} at weight 50")
        assert n20 >= 100 and n50 >= 50, (n20, n50)
        assert abs(at_20 - 20) <= TOLERANCE, f"version {v2} answered {at_20:.1f}% of {n20} at weight 20"
        assert abs(at_50 - 50) <= TOLERANCE, f"version {v2} answered {at_50:.1f}% of {n50} at weight 50"
        assert {a.version for a in answers if a.sent > completed + SETTLE} == {v2}
        assert final["stable"]["version"] == v2 and "canary" not in final
        backends = get(kubectl, "httproute", "gw", "-n", ns)["spec"]["rules"][0]["backendRefs"]
        assert [b["weight"] for b in backends] == [100, 0]

        # Without the router, the HTTPRoute goes and the Service's replica ratio carries the split again.
        apply_model(kubectl, ns, "gw", pod_mlflow_uri, {"name": MODEL, "alias": "champion"}, replicas=2, rollout={"steps": STEPS})
        wait_for(lambda: kubectl("get", "httproute", "gw", "-n", ns).returncode != 0, "the HTTPRoute to go", timeout=60)
        assert get(kubectl, "mdep", "gw", "-n", ns)["status"]["trafficRouter"] == "ReplicaRatio"
