"""Outages during a canary's analysis, on the real node with live traffic through the Service: Prometheus,
then the API server and MLflow together, are taken away from the operator mid-rollout. The rollout holds
or goes on as far as it safely can, never promotes without a verdict and a resolvable reference, loses no
measurement, tears nothing down, and finishes once they are back."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import pytest

from tests.integration.test_analysis_on_node import CHECKS, GOOD_ROWS, INTERVAL
from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_pyfunc_model, set_alias
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for

# The long tier: the outage matrix's default-tier sample takes each service away once.
pytestmark = [pytest.mark.long, pytest.mark.cluster, pytest.mark.mlflow, pytest.mark.prometheus]


@pytest.fixture(scope="module")
def operator(operator_behind_proxy):
    return operator_behind_proxy


def test_outages_of_prometheus_the_api_server_and_mlflow_mid_analysis_never_promote_and_lose_nothing(
    kubectl, operator, apiserver_proxy, mlflow, images, host_address, discovering_prometheus, restricted_namespace
):
    ns, name, model = restricted_namespace, "outage", "outage-model"
    prometheus_host, prometheus_port = discovering_prometheus.url.removeprefix("http://").split(":")
    with CuttableProxy(prometheus_host, int(prometheus_port)) as prometheus, CuttableProxy("127.0.0.1", urlparse(mlflow.uri).port) as registry:
        v1 = register_pyfunc_model(mlflow, model, "good", alias="champion", seed=51)
        spec = {
            "steps": [{"setWeight": 50}, {"analysis": {}}],
            "analysis": {
                "prometheus": {"address": prometheus.url, "timeout": "2s"}, "interval": INTERVAL, "count": 5,
                "minSampleSize": 10, "failureLimit": 1, "inconclusiveLimit": 20, "checks": CHECKS[:2],
            },
        }  # fmt: skip
        # The operator and the pods reach MLflow through the proxy (the node sends the host's address to loopback).
        via_proxy = f"http://{host_address}:{registry.port}"
        apply_model(kubectl, ns, name, via_proxy, {"name": model, "alias": "champion"}, replicas=1, rollout=spec)
        wait_status(kubectl, operator, ns, name, serving(v1), "Ready on version 1")
        url = f"http://{cluster_ip(kubectl, ns, name)}/invocations"
        post_once_routed(url, GOOD_ROWS)

        def state() -> dict:
            return get(kubectl, "mdep", name, "-n", ns)["status"]

        def passes() -> int:
            return sum(m["verdict"] == "Pass" for m in (state()["rollout"].get("analysis") or {}).get("measurements", []))

        with Load(url, GOOD_ROWS) as load:
            v2 = register_pyfunc_model(mlflow, model, "good", seed=52)
            set_alias(mlflow, model, "champion", v2)
            wait_for(lambda: passes() > 0, "a passing measurement", timeout=240)

            # Prometheus away: the verdict is inconclusive, the rollout pauses and says why.
            prometheus.cut()
            held = wait_for(lambda: (st := state())["rollout"]["phase"] == "Paused" and st, "the outage to pause the rollout", timeout=60)
            assert "analysis inconclusive" in held["rollout"]["analysis"]["held"] and "unreachable" in held["message"]
            time.sleep(15)  # more than two intervals without Prometheus
            during = state()
            assert during["rollout"]["phase"] == "Paused" and during["stable"]["version"] == v1
            assert during["rollout"]["analysis"]["inconclusive"] >= 2 and not during["rollout"].get("history")
            prometheus.restore()
            counted = passes()
            wait_for(lambda: passes() > counted, "a passing measurement once Prometheus is back", timeout=60)

            # The API server and MLflow away together: the operator sees nothing and can write nothing.
            before = state()["rollout"]["analysis"]
            apiserver_proxy.cut()
            registry.cut()
            time.sleep(15)
            apiserver_proxy.restore()
            # Back in touch with the API server, with MLflow still away: the analysis goes on from where it
            # was, the steps finish, and promotion waits for the registry.
            waiting = wait_for(lambda: "promotion waits until the registry answers" in (st := state())["rollout"]["message"] and st,
                               "the passed canary to wait for the registry", timeout=120)  # fmt: skip
            measured = waiting["rollout"]["analysis"]["measurements"]
            assert measured[: len(before["measurements"])] == before["measurements"]
            resolved = next(c for c in waiting["conditions"] if c["type"] == "ModelResolved")
            assert (resolved["status"], resolved["reason"]) == ("Unknown", "RegistryUnreachable")
            time.sleep(2 * float(INTERVAL.removesuffix("s")))
            still = state()
            assert still["rollout"]["phase"] == "Paused" and still["stable"]["version"] == v1 and not still["rollout"].get("history")
            assert still["canary"]["version"] == v2 and still["canary"]["readyReplicas"] == 1
            registry.restore()
            promoted = wait_status(kubectl, operator, ns, name, serving(v2), "version 2 promoted once MLflow is back", timeout=240)
    assert promoted["rollout"]["history"][-1]["outcome"] == "Promoted"
    # Both versions answered throughout, outages included; nothing that served was torn down.
    assert {a.version for a in load.answers} == {v1, v2} and load.failures() == []
