"""The CRD is generated from the API models, structural, documented, and committed up to date."""

from __future__ import annotations

import json
from pathlib import Path

from modelpilot.api.crd import crd, render_yaml

CRD_FILE = Path(__file__).parents[2] / "crds" / "modelpilot.io_modeldeployments.yaml"


def _schema():
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node, path="$"):
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_committed_crd_is_current():
    assert CRD_FILE.read_text() == render_yaml(), "crds/ is stale: run `make crds`"


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        for key in ("$ref", "anyOf", "oneOf", "allOf", "title"):
            assert key not in node, f"{path} has {key}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"


def test_every_spec_and_status_field_is_described():
    schema = _schema()
    for top in ("spec", "status"):
        for path, node in _walk(schema["properties"][top], top):
            if path.endswith(("{}", "[]")) and node.get("type") != "object":
                continue  # scalar items are described by their list or map
            assert node.get("description"), f"{path} has no description"


def test_cel_rules_guard_what_the_schema_alone_cannot():
    text = json.dumps(crd())
    for message in (
        "set exactly one of version or alias",
        "minReplicas must not exceed maxReplicas",
        "each step sets exactly one of setWeight, pause or analysis",
        "metadata.name must be a DNS label of at most 56 characters",
    ):
        assert message in text


def test_names_and_columns():
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["mdep", "md"]
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns[:6] == ["Model", "Version", "Phase", "Canary", "Ready", "Age"]
    assert spec["versions"][0]["subresources"] == {"status": {}}
