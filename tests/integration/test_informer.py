"""The informers that cache what ModelDeployments own, against the real API server: what they keep, and
that every change after the first list reaches the owner."""

from __future__ import annotations

import asyncio
import time

import pytest
from kubernetes import client

from modelpilot.kube.informer import Informer, Kind, Store

pytestmark = pytest.mark.cluster

MANAGED = {"app.kubernetes.io/managed-by": "modelpilot"}


def config_map(name: str, labels: dict, data: str = "1") -> dict:
    return {"metadata": {"name": name, "labels": labels}, "data": {"value": data}}


async def until(predicate, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_an_informer_keeps_only_what_we_manage_and_reports_each_later_change(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, config_map("before", MANAGED))
    core.create_namespaced_config_map(namespace, config_map("not-ours", {"app.kubernetes.io/managed-by": "someone"}))

    async def scenario() -> None:
        store = Store(lambda body: body["metadata"]["name"])
        changes: list[tuple[str, str | None]] = []
        informer = Informer(Kind("v1", "configmaps"), "app.kubernetes.io/managed-by=modelpilot", namespace,
                            lambda body: {"metadata": body["metadata"], "data": body.get("data")}, store,
                            lambda copy: changes.append((copy.body["metadata"]["name"], (copy.body.get("data") or {}).get("value"))),
                            asyncio.get_running_loop(), client=kube_api)  # fmt: skip
        informer.start()
        try:
            await asyncio.wait_for(informer.synced.wait(), 20)
            assert [b["metadata"]["name"] for name in ("before", "not-ours") for b in store.get(name)] == ["before"]
            assert changes == [], "the first list is not a change: kopf resumes every owner anyway"

            core.create_namespaced_config_map(namespace, config_map("after", MANAGED))
            await until(lambda: ("after", "1") in changes, "the created object")
            core.patch_namespaced_config_map("before", namespace, {"data": {"value": "2"}})
            await until(lambda: ("before", "2") in changes, "the edit")
            assert store.get("before")[0]["data"] == {"value": "2"}

            # An object that loses our label leaves the watch: for its owner it is gone.
            core.patch_namespaced_config_map("after", namespace, {"metadata": {"labels": {"app.kubernetes.io/managed-by": None}}})
            await until(lambda: store.get("after") == (), "the unlabelled object to leave the store")
            core.delete_namespaced_config_map("before", namespace)
            await until(lambda: len(store) == 0, "the deleted object to leave the store")
            assert [name for name, _ in changes] == ["after", "before", "after", "before"]
        finally:
            informer.stop(wait=10)
        assert not informer.running, "stop ends the watch's thread"

    asyncio.run(scenario())
