"""The CRD is generated from the API models, structural, documented, and committed up to date."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from modelpilot.api import ModelDeploymentSpec
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
        "a toleration without a key must use operator Exists",
        "a toleration with operator Exists takes no value",
        "tolerationSeconds needs effect NoExecute",
        "minDomains needs whenUnsatisfiable DoNotSchedule",
        "a labelSelector needs matchLabels or matchExpressions",
        "operators In and NotIn need values",
        "must not carry credentials (user:password@host)",
        "a query template may only use the placeholders",
    ):
        assert message in text


CREDENTIAL_URIS = ["https://user:pa55@mlflow:5000", "http://token@mlflow", "https://u:p@h/path?q=1"]
PLAIN_URIS = ["http://mlflow.mlflow:5000", "https://mlflow/prefix/", "https://h/p?owner=a@b.c", "http://h#x@y"]


def test_tracking_uri_credentials_are_refused_by_cel_and_by_the_operator():
    (rule,) = _schema()["properties"]["spec"]["properties"]["mlflow"]["properties"]["trackingUri"]["x-kubernetes-validations"]
    assert rule["reason"] == "FieldValueForbidden"  # an Invalid error would echo the URL, password and all
    # The rule's regular expression, judged here as the API server's RE2 would: it has no RE2-only syntax.
    pattern = re.fullmatch(r"!self\.matches\('(.*)'\)", rule["rule"]).group(1)
    assert [uri for uri in CREDENTIAL_URIS if not re.search(pattern, uri)] == []
    assert [uri for uri in PLAIN_URIS if re.search(pattern, uri)] == []
    # Objects stored before the rule are refused by the operator too, without echoing the password.
    for uri in CREDENTIAL_URIS:
        with pytest.raises(ValidationError) as caught:
            ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": uri}})
        assert "pa55" not in caught.value.errors()[0]["msg"]
    for uri in PLAIN_URIS:
        ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": uri}})


def _pod_schema():
    return _schema()["properties"]["spec"]["properties"]["pod"]


def test_pod_labels_reject_the_operators_labels_and_malformed_keys():
    labels = _pod_schema()["properties"]["labels"]
    keys, reserved = labels["x-kubernetes-validations"]
    assert keys["message"].startswith("keys must be qualified names") and "k.matches(" in keys["rule"]
    assert reserved["message"].startswith("must not set the labels the operator sets and selects pods by")
    for key in ("app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
        assert f"'{key}'" in reserved["rule"] and key in reserved["message"]
    assert "k.startsWith('modelpilot.io/')" in reserved["rule"]
    assert reserved["messageExpression"].startswith("'must not set ' + self.filter(k, ")
    assert (labels["additionalProperties"]["maxLength"], labels["maxProperties"]) == (63, 64)
    # The same key check on every other map of pod metadata and scheduling.
    for name in ("nodeSelector", "annotations"):
        (rule,) = _pod_schema()["properties"][name]["x-kubernetes-validations"]
        assert rule == keys


def test_only_affinity_is_passed_through():
    passed = [path for path, node in _walk(_pod_schema(), "pod") if node.get("x-kubernetes-preserve-unknown-fields")]
    assert passed == ["pod.affinity.nodeAffinity", "pod.affinity.podAffinity", "pod.affinity.podAntiAffinity"]
    toleration = _pod_schema()["properties"]["tolerations"]["items"]["properties"]
    assert toleration["operator"]["enum"] == ["Exists", "Equal"]
    assert toleration["effect"]["enum"] == ["NoSchedule", "PreferNoSchedule", "NoExecute"]
    spread = _pod_schema()["properties"]["topologySpreadConstraints"]
    assert spread["items"]["properties"]["whenUnsatisfiable"]["enum"] == ["DoNotSchedule", "ScheduleAnyway"]
    assert spread["x-kubernetes-list-map-keys"] == ["topologyKey", "whenUnsatisfiable"]


def test_names_and_columns():
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["mdep"]  # "md" is Cluster API's MachineDeployment
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns[:7] == ["Model", "Version", "Phase", "Rollout", "Canary", "Ready", "Age"]
    assert spec["versions"][0]["subresources"] == {"status": {}}


EXAMPLES = [p for p in sorted((Path(__file__).parents[2] / "manifests" / "examples").glob("*.yaml")) if "ModelDeployment" in p.read_text()]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_modeldeployment_is_a_valid_spec(example):
    import yaml

    for doc in yaml.safe_load_all(example.read_text()):
        if doc and doc.get("kind") == "ModelDeployment":
            ModelDeploymentSpec.model_validate(doc["spec"])
