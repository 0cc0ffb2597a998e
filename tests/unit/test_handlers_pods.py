"""The pods' cache: filtered by the API server, keyed by owning ModelDeployment, trimmed, readable by reconcile."""

from __future__ import annotations

import asyncio

from modelpilot import handlers
from modelpilot.kube.informer import Store


def pod(name: str, deployment: str | None, namespace: str = "ml") -> dict:
    labels = {"app.kubernetes.io/managed-by": "modelpilot", "pod-template-hash": "7c9d8f6b5"}
    if deployment:
        labels["modelpilot.io/deployment"] = deployment
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1",
                     "labels": labels, "managedFields": [{"manager": "kubelet"}]},
        "spec": {"containers": [{"name": "model-server", "image": "runtime:1"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "model-server", "ready": True, "restartCount": 0}]},
    }  # fmt: skip


def kept(store: Store, body: dict) -> None:
    store.put(store.copy(body, handlers._pod_copy(body)))


async def informers(namespaces: list[str]) -> list:
    cluster = handlers._Indexed({name: Store(handlers._by_name) for name in handlers.OWNED_KINDS}, Store(handlers._by_owner))
    return handlers._informers(cluster, namespaces, lambda body: None)


def test_the_api_server_sends_only_what_we_manage_of_each_kind_in_each_watched_namespace():
    watched = asyncio.run(informers(["team-a", "team-b"]))
    assert {i.selector for i in watched} == {"app.kubernetes.io/managed-by=modelpilot"}
    assert {(i.kind.plural, i.namespace) for i in watched} == {
        (plural, ns) for plural in ("deployments", "services", "horizontalpodautoscalers", "poddisruptionbudgets", "pods")
        for ns in ("team-a", "team-b")
    }  # fmt: skip
    assert {i.kind.url(i.namespace) for i in watched if i.namespace == "team-a"} >= {
        "/apis/apps/v1/namespaces/team-a/deployments", "/api/v1/namespaces/team-a/pods"}
    assert {i.kind.url(i.namespace) for i in asyncio.run(informers([]))} == {
        "/apis/apps/v1/deployments", "/api/v1/services", "/apis/autoscaling/v2/horizontalpodautoscalers",
        "/apis/policy/v1/poddisruptionbudgets", "/api/v1/pods"}  # fmt: skip


def test_pods_are_kept_by_their_modeldeployment_and_trimmed():
    store = Store(handlers._by_owner)
    kept(store, pod("fraud-7c9d8f6b5-x2x7q", "fraud"))
    kept(store, pod("stray", None))
    (copy,) = store.get(("ml", "fraud"))
    assert "spec" not in copy and "managedFields" not in copy["metadata"]
    assert copy["status"]["containerStatuses"][0]["ready"] is True
    assert len(store) == 1
    assert store.get(("ml", "fraud")) == (copy,) and store.get(("ml", "fraud"))[0] is not copy, "each read a fresh copy"


def test_reconcile_reads_a_modeldeployments_pods_and_owned_objects_from_the_stores():
    pods = Store(handlers._by_owner)
    for name, owner in [("fraud-a", "fraud"), ("fraud-b", "fraud"), ("churn-a", "churn")]:
        kept(pods, pod(name, owner))
    deployments = Store(handlers._by_name)
    deployment = {"metadata": {"name": "fraud", "namespace": "ml", "uid": "d1", "resourceVersion": "1"}}
    deployments.put(deployments.copy(deployment, deployment))
    live = handlers._Indexed({"Deployment": deployments, "Service": Store(handlers._by_name)}, pods)
    assert [p["metadata"]["name"] for p in live.pods("ml", "fraud")] == ["fraud-a", "fraud-b"]
    assert live.pods("other", "fraud") == []
    assert live.get("Deployment", "ml", "fraud") == deployment
    assert live.get("Service", "ml", "fraud") is None
    assert live.get("HTTPRoute", "ml", "fraud") is None
