"""The chart's admission policy as rendered: off by default, on with one value, bound where the release
serves, and its image rule the same decision as the operator's own allow-list."""

from __future__ import annotations

import json
import re

import pytest
from modelpilot.rollout.images import image_allowed

from tests.unit.test_helm_render import CHART, helm, only, render

POLICY_KINDS = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
PATTERNS = ["ghcr.io/modelpilot/runtime:*", "registry.example/ml/*", "mirror.example/rt:1.?", "pinned.example/[a-c]x:[!0]"]


def policy(*args: str) -> dict:
    return only(render("--set", "admissionPolicy.enabled=true", *args), "ValidatingAdmissionPolicy")


def test_off_by_default():
    assert not POLICY_KINDS & {d["kind"] for d in render()}


def test_on_it_binds_the_policy_with_the_chosen_actions_cluster_wide():
    documents = render("--set", "admissionPolicy.enabled=true", "--set", "admissionPolicy.validationActions={Warn,Audit}")
    binding = only(documents, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == only(documents, "ValidatingAdmissionPolicy")["metadata"]["name"] == "mp-modelpilot"
    assert binding["spec"]["validationActions"] == ["Warn", "Audit"]
    assert "matchResources" not in binding["spec"]


def test_with_watched_namespaces_it_judges_those_only():
    documents = render("--set", "admissionPolicy.enabled=true", "--set", "watchNamespaces={team-a,team-b}")
    selector = only(documents, "ValidatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"]
    assert selector == {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]}]}


def test_only_creates_and_spec_changes_are_judged():
    spec = policy()["spec"]
    assert spec["matchConstraints"]["resourceRules"][0]["resources"] == ["modeldeployments"]  # never status
    assert [c["expression"] for c in spec["matchConditions"]] == ["request.operation == 'CREATE' || object.spec != oldObject.spec"]


def test_without_an_allow_list_there_is_no_image_rule():
    spec = policy()["spec"]
    assert not [v for v in spec["variables"] if v["name"] == "allowedImages"]
    assert not [v for v in spec["validations"] if "runtime.image" in v["expression"]]


def _regexes(patterns: list[str]) -> list[str]:
    variables = {v["name"]: v["expression"] for v in policy("--set-json", f"allowedRuntimeImages={json.dumps(patterns)}")["spec"]["variables"]}
    assert json.loads(variables["allowedGlobs"]) == patterns
    # A CEL list of string literals; its JSON spelling is the same.
    return json.loads(variables["allowedImages"])


IMAGES = [
    "ghcr.io/modelpilot/runtime:0.1.0", "ghcr.io/modelpilot/runtime-fork:1", "ghcr.io/modelpilot/runtime:",
    "registry.example/ml/runtime:2@sha256:" + "a" * 64, "registry.example/ml", "registry.example/mlx/r:1",
    "GHCR.IO/modelpilot/runtime:1", "mirror.example/rt:1.7", "mirror.example/rt:1.77", "mirror.example/rt:1.",
    "pinned.example/bx:1", "pinned.example/dx:1", "pinned.example/ax:0", "ghcrxio/modelpilot/runtime:1",
    "evil.example/miner:1\nghcr.io/modelpilot/runtime:1", "ghcr.io/modelpilot/runtime:1\n",
]  # fmt: skip


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_rule_decides_as_the_operator_does(image):
    """The API server's RE2 and Python's re agree on these expressions: no look-around, no back-references."""
    admitted = any(re.search(regex, image) for regex in _regexes(PATTERNS))
    assert admitted == image_allowed(image, tuple(PATTERNS))


def test_the_schema_refuses_unknown_actions_by_name():
    result = helm("template", str(CHART), "--set", "admissionPolicy.validationActions={Block}")
    assert result.returncode != 0 and "/admissionPolicy/validationActions" in result.stderr, result.stderr

