"""Copies kept in the caches: equal to what they copy and independent of it; compacted ones sharing strings
with each other, packed ones small."""

from __future__ import annotations

import json

from modelpilot.kube.snapshot import SHARED_UP_TO, compact, pack, unpack


def body(name: str) -> dict:
    # Decoded from text, as the watch delivers it: every decoded copy has strings of its own.
    return json.loads(json.dumps({
        "kind": "Service",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "modelpilot"}, "generation": 3},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "publishNotReadyAddresses": False, "note": "x" * 100},
        "status": {"loadBalancer": {}},
    }))  # fmt: skip


def test_a_compact_copy_is_an_equal_and_independent_copy():
    original = body("fraud")
    copied = compact(original)
    assert copied == original
    copied["spec"]["ports"][0]["port"] = 81
    copied["metadata"]["labels"]["extra"] = "1"
    assert original == body("fraud")


def test_copies_of_different_objects_share_their_keys_and_short_values():
    first, second = compact(body("fraud")), compact(body("scorer"))
    assert next(iter(first)) is next(iter(second))  # the key "kind"
    assert first["spec"]["ports"][0]["protocol"] is second["spec"]["ports"][0]["protocol"]
    label = "app.kubernetes.io/managed-by"
    assert first["metadata"]["labels"][label] is second["metadata"]["labels"][label]


def test_long_strings_are_copied_as_they_are():
    first, second = compact(body("fraud")), compact(body("scorer"))
    assert len(first["spec"]["note"]) > SHARED_UP_TO
    assert first["spec"]["note"] == second["spec"]["note"] and first["spec"]["note"] is not second["spec"]["note"]


def test_an_unpacked_copy_equals_what_was_packed_and_is_independent_of_other_unpackings():
    original = {**body("fraud"), "status": {"ratio": 0.25, "missing": None, "note": "ünïcode ✓", "ok": False}}
    packed = pack(original)
    first = unpack(packed)
    assert first == original
    first["spec"]["ports"][0]["port"] = 81
    first["metadata"]["labels"]["extra"] = "1"
    assert unpack(packed) == original


def test_a_packed_copy_is_smaller_than_its_json():
    # Kept objects repeat their keys and values (a Deployment's managedFields mirror its spec).
    many = {"items": [body(f"model-{i}") for i in range(20)]}
    assert len(pack(many)) < len(json.dumps(many)) / 4
