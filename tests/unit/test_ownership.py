"""Whose object is it: a name a ModelDeployment renders may already be taken by someone else's object."""

from __future__ import annotations

from modelpilot.kube.ownership import foreign

MANAGER = "modelpilot.io"


def service(references=(), managers=()) -> dict:
    return {
        "kind": "Service",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "ownerReferences": list(references),
            "managedFields": [{"manager": m, "operation": "Apply"} for m in managers],
        },
    }


def controller(uid: str, kind: str = "ModelDeployment", name: str = "m") -> dict:
    return {"kind": kind, "name": name, "uid": uid, "controller": True}


def test_an_object_this_modeldeployment_controls_is_ours():
    assert foreign(service([controller("u1")], ["kubectl-edit", MANAGER]), "u1", MANAGER) is None


def test_ours_with_its_owner_reference_removed_by_hand_is_still_ours():
    assert foreign(service([], [MANAGER, "kubectl-patch"]), "u1", MANAGER) is None


def test_a_users_object_of_the_same_name_is_not_ours():
    why = foreign(service([], ["kubectl-client-side-apply"]), "u1", MANAGER)
    assert why == "Service ns/m exists and was not made by this ModelDeployment (fields managed by kubectl-client-side-apply)"


def test_an_object_another_controller_runs_is_not_ours_even_with_our_fields():
    # A ModelDeployment deleted and made again under the same name: the old one's objects are not yet gone.
    why = foreign(service([controller("u0")], [MANAGER]), "u1", MANAGER)
    assert why == "Service ns/m exists and is controlled by ModelDeployment 'm'"
    assert "Rollout" in foreign(service([controller("x", kind="Rollout", name="web")]), "u1", MANAGER)
