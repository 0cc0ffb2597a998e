"""A real Prometheus, configured with nothing but the scrape config users are told to copy
(manifests/monitoring/prometheus-scrape-config.yaml), finds the model pods on the real node through
Kubernetes pod discovery, by the labels and annotations the operator renders, and scrapes per-track
request counts from them."""

from __future__ import annotations

import pytest

from tests.support.load import post_once_routed
from tests.support.mlflow import register_sklearn_model
from tests.support.modeldeployments import apply_model, cluster_ip, get, serving, wait_status
from tests.support.waiting import wait_for

# The first test also waits for the cluster, the images and, on a cold cache, the Prometheus build.
pytestmark = [pytest.mark.cluster, pytest.mark.mlflow, pytest.mark.prometheus]

JOB = "modelpilot-models"
MODEL = "scraped-model"
NAME = "scraped"
REPLICAS = 2
REQUESTS = 25
ROWS = [[0.5, -1.2, 0.3, 2.0], [-0.7, 0.1, 1.5, -0.4]]


@pytest.fixture(scope="module")
def scraped(kubectl, operator, images, mlflow, pod_mlflow_uri, module_namespace) -> dict:
    """ModelDeployment `scraped` on a pinned version, Ready with its replicas on the real node."""
    version = register_sklearn_model(mlflow, MODEL, seed=21)
    ns = module_namespace
    apply_model(kubectl, ns, NAME, pod_mlflow_uri, {"name": MODEL, "version": version}, replicas=REPLICAS)
    wait_status(kubectl, operator, ns, NAME, serving(version), f"{NAME} Ready on version {version}")
    return {"namespace": ns, "version": version, "url": f"http://{cluster_ip(kubectl, ns, NAME)}/invocations"}


def serving_pods(kubectl, namespace: str) -> list[dict]:
    pods = get(kubectl, "pods", "-n", namespace, "-l", f"modelpilot.io/deployment={NAME}")["items"]
    return [p for p in pods if p["status"].get("phase") == "Running" and "deletionTimestamp" not in p["metadata"]]


def targets_in(prometheus, namespace: str) -> list[dict]:
    return [t for t in prometheus.active_targets(JOB) if t["labels"].get("namespace") == namespace]


def test_prometheus_scrapes_each_model_pod_once_at_its_pod_ip(discovering_prometheus, kubectl, scraped):
    ns = scraped["namespace"]
    pods = serving_pods(kubectl, ns)
    assert len(pods) == REPLICAS
    by_ip = {p["status"]["podIP"]: p for p in pods}

    def all_up():
        targets = targets_in(discovering_prometheus, ns)
        healthy = len(targets) == len(by_ip) and all(t["health"] == "up" for t in targets)
        return targets if healthy and {host_of(t) for t in targets} == set(by_ip) else None

    targets = wait_for(all_up, f"one healthy target per pod at {sorted(by_ip)}", timeout=90)
    for target in targets:
        pod = by_ip[host_of(target)]
        port = pod["metadata"]["annotations"]["prometheus.io/port"]
        assert target["scrapeUrl"] == f"http://{pod['status']['podIP']}:{port}/metrics"
        assert target["labels"]["pod"] == pod["metadata"]["name"]
        assert target["labels"]["job"] == JOB


def test_requests_through_the_service_are_counted_for_the_stable_track_and_version(
    discovering_prometheus, kubectl, scraped
):
    ns, version = scraped["namespace"], scraped["version"]
    for _ in range(REQUESTS):
        # A refused connection never reaches a server, so retrying it keeps the count exact.
        response = post_once_routed(scraped["url"], {"inputs": ROWS})
        assert response.status_code == 200, response.text

    total, labels = discovering_prometheus.wait_for_value(
        f'sum by (track, model_version) (modelpilot_requests_total{{code="200", deployment="{NAME}"}})',
        lambda v: v >= REQUESTS, f"{REQUESTS} scored requests",
    )
    assert labels == {"track": "stable", "model_version": version}
    assert total == REQUESTS, "each pod is counted once: no series scraped twice"

    pod_names = {p["metadata"]["name"] for p in serving_pods(kubectl, ns)}
    series = discovering_prometheus.query(f'modelpilot_requests_total{{code="200", deployment="{NAME}"}}')
    assert {s["metric"]["pod"] for s in series} == pod_names
    for s in series:
        assert s["metric"]["namespace"] == ns and s["metric"]["track"] == "stable", s["metric"]
        assert not [k for k in s["metric"] if k.startswith("exported_")], "discovery labels collide with the server's"
    # Series the server labels with nothing still say which pod they come from.
    memory = discovering_prometheus.query(f'process_resident_memory_bytes{{job="{JOB}", namespace="{ns}"}}')
    assert {s["metric"]["pod"] for s in memory} == pod_names


def host_of(target: dict) -> str:
    return target["labels"]["instance"].rsplit(":", 1)[0].strip("[]")
