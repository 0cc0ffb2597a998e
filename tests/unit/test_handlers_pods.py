"""The pods watch: filtered by the API server, indexed by owning ModelDeployment, trimmed, readable by reconcile."""

from __future__ import annotations

import asyncio

import kopf
from kopf._cogs.structs.references import Resource

from modelpilot import handlers


def pod(name: str, deployment: str | None, namespace: str = "ml") -> dict:
    labels = {"app.kubernetes.io/managed-by": "modelpilot", "pod-template-hash": "7c9d8f6b5"}
    if deployment:
        labels["modelpilot.io/deployment"] = deployment
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "managedFields": [{"manager": "kubelet"}]},
        "spec": {"containers": [{"name": "model-server", "image": "runtime:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "model-server", "ready": True, "restartCount": 0}]},
    }


def index(body: dict) -> dict:
    meta = body["metadata"]
    return asyncio.run(handlers.pods_by_owner(namespace=meta["namespace"], labels=meta["labels"], body=body))


def test_the_api_server_sends_only_our_pods():
    settings = kopf.OperatorSettings()
    handlers.configure(settings=settings)
    pods = Resource(group="", version="v1", plural="pods")
    assert settings.watching.label_selectors.collect(pods) == ["app.kubernetes.io/managed-by=modelpilot"]


def test_pods_are_indexed_by_their_modeldeployment_and_trimmed():
    (key, kept), = index(pod("fraud-7c9d8f6b5-x2x7q", "fraud")).items()
    assert key == ("ml", "fraud")
    assert "spec" not in kept and "managedFields" not in kept["metadata"]
    assert kept["status"]["containerStatuses"][0]["ready"] is True
    assert index(pod("stray", None)) == {}


def test_reconcile_reads_a_modeldeployments_pods_and_owned_objects_from_the_indexes():
    first, second, other = (index(pod(n, d)) for n, d in [("fraud-a", "fraud"), ("fraud-b", "fraud"), ("churn-a", "churn")])
    pod_index = {("ml", "fraud"): [*first.values(), *second.values()], ("ml", "churn"): list(other.values())}
    deployment = {"metadata": {"name": "fraud"}}
    live = handlers._Indexed({("ml", "fraud"): [deployment]}, {}, {}, {}, pod_index)
    assert [p["metadata"]["name"] for p in live.pods("ml", "fraud")] == ["fraud-a", "fraud-b"]
    assert live.pods("other", "fraud") == []
    assert live.get("Deployment", "ml", "fraud") is deployment
    assert live.get("Service", "ml", "fraud") is None
