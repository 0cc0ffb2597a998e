"""The informers' store: what a relist tells owners, and keys shared by several objects."""

from __future__ import annotations

from modelpilot.kube.informer import Copy, Kind, Store


def copy(uid: str, version: str, namespace: str = "ml", owner: str = "fraud") -> Copy:
    body = {"metadata": {"name": uid, "namespace": namespace, "uid": uid, "resourceVersion": version,
                         "labels": {"modelpilot.io/deployment": owner}, "managedFields": [{"manager": "kubelet"}]}}
    return Store(by_owner).copy(body, {"metadata": {k: v for k, v in body["metadata"].items() if k != "managedFields"}})


def by_owner(body: dict):
    return body["metadata"]["namespace"], body["metadata"]["labels"]["modelpilot.io/deployment"]


def test_objects_sharing_a_key_are_all_kept_and_a_moved_object_leaves_its_old_key():
    store = Store(by_owner)
    store.put(copy("a", "1"))
    store.put(copy("b", "1"))
    assert [b["metadata"]["name"] for b in store.get(("ml", "fraud"))] == ["a", "b"]
    store.put(copy("a", "2", owner="churn"))
    assert [b["metadata"]["name"] for b in store.get(("ml", "fraud"))] == ["b"]
    assert [b["metadata"]["name"] for b in store.get(("ml", "churn"))] == ["a"]
    assert store.remove("b").uid == "b" and store.get(("ml", "fraud")) == ()
    assert store.remove("never") is None
    assert len(store) == 1


def test_a_relist_reports_what_changed_or_went_while_unwatched_and_nothing_else():
    store = Store(by_owner)
    for c in (copy("same", "1"), copy("edited", "1"), copy("gone", "1"), copy("elsewhere", "1", namespace="other")):
        store.put(c)
    changed = store.replace([copy("same", "1"), copy("edited", "2"), copy("new", "1")], namespace="ml")
    assert sorted((c.uid, c.version) for c in changed) == [("edited", "2"), ("gone", "1"), ("new", "1")]
    assert sorted(b["metadata"]["name"] for b in store.get(("ml", "fraud"))) == ["edited", "new", "same"]
    # Another namespace's relist is not this one's business: its copies stay.
    assert [b["metadata"]["name"] for b in store.get(("other", "fraud"))] == ["elsewhere"]
    assert {c.uid for c in store.replace([], namespace=None)} == {"same", "edited", "new", "elsewhere"}
    assert len(store) == 0


def test_a_copy_keeps_what_was_kept_packed_and_its_labels_decoded():
    kept = copy("a", "7")
    assert (kept.uid, kept.version, kept.namespace, kept.key) == ("a", "7", "ml", ("ml", "fraud"))
    assert kept.labels == {"modelpilot.io/deployment": "fraud"}
    assert isinstance(kept.packed, bytes) and "managedFields" not in kept.body["metadata"]


def test_a_key_of_none_is_not_kept():
    store = Store(lambda body: None)
    body = {"metadata": {"name": "a", "uid": "a", "resourceVersion": "1"}}
    store.put(store.copy(body, body))
    assert len(store) == 0


def test_urls_of_core_and_grouped_kinds():
    assert Kind("v1", "pods").url(None) == "/api/v1/pods"
    assert Kind("apps/v1", "deployments").url("ml") == "/apis/apps/v1/namespaces/ml/deployments"
