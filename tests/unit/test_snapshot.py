"""Copies kept in the indexes: packed small, unpacked equal to what they copy and independent of it."""

from __future__ import annotations

import json

from modelpilot.kube.snapshot import pack, unpack


def body(name: str) -> dict:
    return {
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "modelpilot"}, "generation": 3},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "publishNotReadyAddresses": False, "note": "ünïcode ✓"},
        "status": {"loadBalancer": {}, "ratio": 0.25, "missing": None},
    }


def test_an_unpacked_copy_equals_what_was_packed():
    assert unpack(pack(body("fraud"))) == body("fraud")


def test_every_unpacked_copy_is_independent():
    packed = pack(body("fraud"))
    first = unpack(packed)
    first["spec"]["ports"][0]["port"] = 81
    first["metadata"]["labels"]["extra"] = "1"
    assert unpack(packed) == body("fraud")


def test_a_packed_copy_is_smaller_than_its_json():
    # Kept objects repeat their keys and values (a Deployment's managedFields mirror its spec).
    many = {"items": [body(f"model-{i}") for i in range(20)]}
    assert len(pack(many)) < len(json.dumps(many)) / 4
