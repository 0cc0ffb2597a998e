"""Generates the ModelDeployment CustomResourceDefinition from the pydantic models.

`python -m modelpilot.api.crd` prints it; `make crds` writes it to crds/. The schema is made structural:
references inlined, optional fields flattened, int-or-string quantities marked the Kubernetes way.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from .spec import GROUP, KIND, PLURAL, VERSION, ModelDeploymentSpec
from .status import ModelDeploymentStatus

_DROPPED_KEYS = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        # Keys on the referring property (its own description, default) win over the model's.
        node = {**target, **node}
    variants = node.pop("anyOf", None)
    if variants is not None:
        non_null = [v for v in variants if v.get("type") != "null"]
        if {v.get("type") for v in non_null} == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        elif len(non_null) == 1:
            return _structural({**non_null[0], **node}, defs)
        else:
            raise ValueError(f"cannot express anyOf {variants!r} in a structural schema")
    if node.get("default", 0) is None:
        del node["default"]
    # JSON Schema 2020 writes exclusive bounds as numbers; OpenAPI v3.0 wants a bound plus a flag.
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(flag), (int, float)) and not isinstance(node[flag], bool):
            node[bound], node[flag] = node[flag], True
    out = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _structural(prop, defs) for name, prop in value.items()}
        else:
            out[key] = _structural(value, defs)
    return out


def openapi_schema(model: type) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one pydantic model."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


# Owned objects are named after the ModelDeployment plus a track suffix such as "-canary" (7 chars):
# the name must stay a valid Service name (DNS-1035 label, 63 chars) with it.
_NAME_RULE = {
    "rule": "self.metadata.name.size() <= 56 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": "metadata.name must be a DNS label of at most 56 characters: it names the model's Service and Deployments",
}


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
        {"name": "Version", "type": "string", "jsonPath": ".status.model.version", "description": "Resolved model version"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Rollout", "type": "string", "jsonPath": ".status.rollout.phase", "description": "Canary rollout phase"},
        {"name": "Canary", "type": "integer", "jsonPath": ".status.canary.weight", "description": "Canary traffic %"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["mdep"],  # not "md": Cluster API's MachineDeployment has it
                "categories": ["modelpilot"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model from the MLflow Model Registry served behind a Service, "
                            "with new versions rolled out as metric-judged canaries.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [_NAME_RULE],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(ModelDeploymentSpec),
                                "status": openapi_schema(ModelDeploymentStatus),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated from operator/modelpilot/api by `make crds`. Do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render_yaml())
