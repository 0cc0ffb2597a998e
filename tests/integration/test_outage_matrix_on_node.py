"""The outage matrix, on the real node with live traffic through the Service: MLflow, Prometheus and the
API server are taken from the operator (and MLflow from the pods' fetch step), one at a time and in pairs,
at each point of a canary (setWeight, pause, analysis, promotion). In every case:

- no promotion without a verdict: a canary caught before its promotion is not promoted while anything it
  needs is away, and the stable version stays;
- nothing that serves is torn down: every request through the Service is answered, outage included;
- status says what is unreachable, as soon as the operator can write it (the API server back first);
- the rollout resumes, and the version is promoted, once everything is back.

The stable track's model server is also killed while a canary is judged: the Service routes around it,
the container restarts, and the canary is still promoted; only requests in flight at the kill may fail.

The default tier runs Prometheus away during the analysis and MLflow with the API server away during the
pause; the long tier the whole matrix (every service and pair at every point) and the stable server's kill."""

from __future__ import annotations

import itertools
import os
import signal
import time
from urllib.parse import urlparse

import pytest

from tests.integration.test_analysis_on_node import CHECKS, GOOD_ROWS
from tests.support.load import Load, post_once_routed
from tests.support.mlflow import register_pyfunc_model, set_alias
from tests.support.modeldeployments import STEP_KINDS, apply_model, cluster_ip, condition, get, rollout_point, serving, wait_status
from tests.support.processes import processes_running
from tests.support.proxy import CuttableProxy
from tests.support.waiting import wait_for
from tests.support.figures import report_figure

pytestmark = [pytest.mark.cluster, pytest.mark.mlflow, pytest.mark.prometheus]

MODEL, NAME = "matrix-model", "matrix"
UNREADY_BOUND_S = 8
OUTAGE_S = 12  # more than two analysis intervals and two resolves
INTERVAL_S = 4
STEPS = [{"setWeight": 50}, {"pause": {"duration": "6s"}}, {"analysis": {}}]
SERVICES = ("mlflow", "prometheus", "apiserver")
POINTS = (*STEP_KINDS, "promotion")
# The default tier's sample: each service away once, two of them together.
SAMPLE = [(("prometheus",), "analysis"), (("mlflow", "apiserver"), "pause")]
MATRIX = [(down, point) for size in (1, 2) for down in itertools.combinations(SERVICES, size) for point in POINTS]


@pytest.fixture(scope="module")
def operator(operator_behind_proxy):
    return operator_behind_proxy


@pytest.fixture(scope="module")
def proxies(mlflow, discovering_prometheus, apiserver_proxy):
    prometheus = urlparse(discovering_prometheus.url)
    with CuttableProxy("127.0.0.1", urlparse(mlflow.uri).port) as registry, \
            CuttableProxy(prometheus.hostname, prometheus.port) as metrics:  # fmt: skip
        yield {"mlflow": registry, "prometheus": metrics, "apiserver": apiserver_proxy}


@pytest.fixture(scope="module")
def served(kubectl, operator, mlflow, images, host_address, proxies, module_namespace):
    """One ModelDeployment, its first version Ready, under traffic for the whole module."""
    ns = module_namespace
    v1 = register_pyfunc_model(mlflow, MODEL, "good", alias="champion", seed=91)
    spec = {
        "steps": STEPS,
        "analysis": {
            "prometheus": {"address": proxies["prometheus"].url, "timeout": "2s"}, "interval": f"{INTERVAL_S}s",
            "count": 2, "minSampleSize": 10, "failureLimit": 1, "inconclusiveLimit": 50, "checks": CHECKS[:2],
        },
    }  # fmt: skip
    # The operator and the pods reach MLflow through the proxy (the node sends the host's address to loopback).
    apply_model(kubectl, ns, NAME, f"http://{host_address}:{proxies['mlflow'].port}", {"name": MODEL, "alias": "champion"},
                replicas=1, rollout=spec)  # fmt: skip
    wait_status(kubectl, operator, ns, NAME, serving(v1), "Ready on version 1")
    url = f"http://{cluster_ip(kubectl, ns, NAME)}/invocations"
    post_once_routed(url, GOOD_ROWS)
    with Load(url, GOOD_ROWS, max_seconds=7200) as load:
        yield {"ns": ns, "load": load, "stable": [v1]}


def status(kubectl, ns: str) -> dict:
    return get(kubectl, "mdep", NAME, "-n", ns).get("status") or {}


def says_unreachable(st: dict, service: str) -> bool:
    """Whether status names `service` as what is missing."""
    if service == "mlflow":
        return condition(st, "ModelResolved").get("reason") == "RegistryUnreachable"
    return "unreachable" in (st.get("message", "") + (st.get("rollout") or {}).get("message", ""))


def outage(kubectl, operator, mlflow, proxies, served, down: tuple[str, ...], point: str, seed: int) -> None:
    ns, load = served["ns"], served["load"]
    stable = served["stable"][-1]
    version = register_pyfunc_model(mlflow, MODEL, "good", seed=seed)
    set_alias(mlflow, MODEL, "champion", version)
    wait_for(lambda: rollout_point(status(kubectl, ns).get("rollout") or {}, version, STEP_KINDS) == point,
             f"version {version}'s rollout to reach {point}", timeout=240, interval=0.2)  # fmt: skip
    failures_before = len(load.failures())
    for service in down:
        proxies[service].cut()
    try:
        seen: list[dict] = []
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:
            if "apiserver" not in down:
                seen.append(status(kubectl, ns))
            time.sleep(1)
        if "apiserver" in down:
            proxies["apiserver"].restore()
            seen.append(status(kubectl, ns))
        others = [s for s in down if s != "apiserver"]
        if point != "promotion":
            # Caught before its promotion: nothing promoted while a service it needs is away.
            assert all((s.get("stable") or {}).get("version") == stable for s in seen), (down, point, seen[-1:])
            assert all(rollout_point(s.get("rollout") or {}, version, STEP_KINDS) != "promotion" for s in seen if "mlflow" in down)
        for service in others:
            # What status says while the service is still away, read through the API server.
            if service == "mlflow" or (service == "prometheus" and any(
                    rollout_point(s.get("rollout") or {}, version, STEP_KINDS) == "analysis" for s in seen)):  # fmt: skip
                wait_for(lambda: says_unreachable(status(kubectl, ns), service) or None,
                         f"status to say {service} is unreachable", timeout=60)  # fmt: skip
    finally:
        for service in down:
            proxies[service].restore()
    done = wait_status(kubectl, operator, ns, NAME, serving(version), f"version {version} promoted once {'+'.join(down)} came back",
                       timeout=300)  # fmt: skip
    assert done["rollout"]["history"][-1]["outcome"] == "Promoted" and done["rollout"]["history"][-1]["version"] == version
    assert not done.get("canary") or not done["canary"].get("version")
    assert load.failures()[failures_before:] == [], load.failures()[failures_before:][:5]
    served["stable"].append(version)


@pytest.mark.parametrize("down, point", SAMPLE, ids=[f"{'+'.join(d)}-at-{p}" for d, p in SAMPLE])
def test_services_away_at_one_point_hold_promotion_keep_serving_and_resume(
    kubectl, operator, mlflow, proxies, served, down, point
):
    outage(kubectl, operator, mlflow, proxies, served, down, point, seed=900 + SAMPLE.index((down, point)))


@pytest.mark.long
@pytest.mark.parametrize("down, point", MATRIX, ids=[f"{'+'.join(d)}-at-{p}" for d, p in MATRIX])
def test_every_service_and_pair_away_at_every_point(kubectl, operator, mlflow, proxies, served, down, point):
    outage(kubectl, operator, mlflow, proxies, served, down, point, seed=1000 + MATRIX.index((down, point)))


def stable_server_pid() -> int:
    """The model server process of the stable track's pod, as the host sees it."""
    found = processes_running("modelpilot.serving.server", frozenset({"MODELPILOT_TRACK=stable", f"MODELPILOT_MODEL_NAME={MODEL}"}))
    assert found, f"no stable model server of {MODEL} on this machine"
    return min(found)


def restarts(kubectl, ns: str) -> int:
    pods = get(kubectl, "pods", "-n", ns, "-l", f"modelpilot.io/track=stable,modelpilot.io/deployment={NAME}")["items"]
    return sum(c.get("restartCount", 0) for p in pods for c in (p["status"].get("containerStatuses") or []))


@pytest.mark.long
def test_the_stable_model_server_killed_while_a_canary_is_judged(kubectl, operator, mlflow, served):
    ns, load = served["ns"], served["load"]
    version = register_pyfunc_model(mlflow, MODEL, "good", seed=990)
    set_alias(mlflow, MODEL, "champion", version)
    wait_for(lambda: rollout_point(status(kubectl, ns).get("rollout") or {}, version, STEP_KINDS) == "analysis",
             f"version {version}'s analysis", timeout=240, interval=0.2)  # fmt: skip
    answered_before, restarted_before = len(load.answers), restarts(kubectl, ns)
    os.kill(stable_server_pid(), signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: restarts(kubectl, ns) > restarted_before or None, "the stable container to restart", timeout=60)
    done = wait_status(kubectl, operator, ns, NAME, serving(version), f"version {version} promoted", timeout=300)
    assert done["rollout"]["history"][-1]["outcome"] == "Promoted"
    failed = [a for a in load.answers[answered_before:] if not a.ok]
    report_figure(f"stable model server killed: {len(failed)} of {len(load.answers) - answered_before} requests failed")
    # The bound: requests routed to the dead pod before its endpoint goes, at most one readiness window
    # (3 failures 2 s apart) and a moment for the endpoints after the kill; none later.
    assert all(a.sent <= killed + UNREADY_BOUND_S for a in failed), [(round(a.sent - killed, 2), a.status) for a in failed]
    served["stable"].append(version)
