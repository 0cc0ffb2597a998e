"""ModelDeployment specs for fuzzing, drawn with hypothesis from the CRD's own openAPIV3Schema, then often
pushed past it: wrong types, numbers out of range, unknown fields, huge or unicode strings, required
fields left out. Each drawn spec says which mutation it carries, so a run can count them."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

CRD = Path(__file__).resolve().parents[2] / "crds" / "modelpilot.io_modeldeployments.yaml"
MUTATIONS = ("none", "wrong type", "out of range", "unknown field", "huge string", "unicode", "missing required")


@functools.cache
def spec_schema() -> dict:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


scalars = st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
# Map keys: mostly what Kubernetes takes (qualified names), sometimes anything.
keys = st.from_regex(r"[a-z][-a-z0-9.]{0,12}(/[a-z]{1,8})?", fullmatch=True) | st.text(min_size=1, max_size=12)
quantities = st.integers(-5, 10**6) | st.from_regex(r"[0-9]{1,4}(m|Mi|Gi|k)?", fullmatch=True) | st.text(max_size=10)


@functools.cache
def _spec_values() -> st.SearchStrategy[dict]:
    return from_schema(spec_schema())


def from_schema(schema: dict) -> st.SearchStrategy[Any]:
    """Values the schema describes; patterns and bounds are followed, CEL rules are not (the API server
    judges those)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("x-kubernetes-int-or-string"):
        return quantities
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return st.dictionaries(st.text(max_size=10), scalars, max_size=3)
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties")
        if properties:
            required = set(schema.get("required", []))
            return st.fixed_dictionaries(
                {k: from_schema(v) for k, v in properties.items() if k in required},
                optional={k: from_schema(v) for k, v in properties.items() if k not in required},
            )
        extra = schema.get("additionalProperties")
        values = from_schema(extra) if isinstance(extra, dict) else scalars
        return st.dictionaries(keys, values, max_size=3)
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(from_schema(schema.get("items", {})), min_size=low, max_size=max(low, min(schema.get("maxItems", 3), 3)))
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10**9)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"]).filter(lambda s: low <= len(s) <= high)
        return st.text(min_size=low, max_size=max(low, min(high, 40)))
    if kind == "integer":
        return st.integers(schema.get("minimum", -(10**6)), schema.get("maximum", 10**6))
    if kind == "number":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.floats(low, high, allow_nan=False, allow_infinity=False,
                         exclude_min=bool(schema.get("exclusiveMinimum")), exclude_max=bool(schema.get("exclusiveMaximum")))  # fmt: skip
    if kind == "boolean":
        return st.booleans()
    return scalars


def _nodes(value: Any, schema: dict, path: tuple = ()) -> list[tuple[tuple, Any, dict]]:
    """Every (path, value, schema) in a drawn spec, the spec itself first."""
    found = [(path, value, schema)]
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties") if isinstance(schema.get("additionalProperties"), dict) else {}
        for key, item in value.items():
            found += _nodes(item, properties.get(key, extra), (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _nodes(item, schema.get("items", {}), (*path, index))
    return found


def _replace(spec: dict, path: tuple, new: Any) -> dict:
    spec = copy.deepcopy(spec)
    if not path:
        return new
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = new
    return spec


def _wrong_type(value: Any) -> st.SearchStrategy[Any]:
    others = [1, -7, 2.5, "text", True, [], {}, ["a"], {"x": 1}]
    return st.sampled_from([o for o in others if type(o) is not type(value)])


def _out_of_range(schema: dict) -> st.SearchStrategy[Any]:
    kind = schema.get("type")
    if kind in ("integer", "number"):
        edges = [schema.get("minimum", 0) - 1, schema.get("maximum", 10**9) + 1, -(2**63), 2**63, 10**30]
        return st.sampled_from(edges)
    if kind == "string" and "maxLength" in schema:
        return st.just("a" * (schema["maxLength"] + 1))
    if kind == "array" and "maxItems" in schema:
        return st.just([{}] * (schema["maxItems"] + 1))
    return st.sampled_from([-1, 10**30, ""])


@st.composite
def specs(draw, schema: dict | None = None) -> tuple[str, dict]:
    """(mutation, spec): a spec drawn from the schema, and one mutation of it, or none."""
    spec = draw(_spec_values() if schema is None else from_schema(schema))
    schema = schema or spec_schema()
    model = spec.get("model")
    if isinstance(model, dict) and "version" in model and "alias" in model and draw(st.booleans()):
        # Half the time, the one CEL rule most drawn specs break is kept, so more of them get past it.
        del model[draw(st.sampled_from(["version", "alias"]))]
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation == "none":
        return mutation, spec
    nodes = _nodes(spec, schema)
    if mutation == "unknown field":
        objects = [n for n in nodes if isinstance(n[1], dict)]
        path, value, _ = draw(st.sampled_from(objects))
        return mutation, _replace(spec, path, {**value, draw(st.sampled_from(["fuzzUnknown", "Replicas", "modelName", "é"])): 1})
    if mutation == "missing required":
        holders = [(p, v, s) for p, v, s in nodes if isinstance(v, dict) and set(s.get("required", [])) & set(v)]
        if not holders:
            return "none", spec
        path, value, node = draw(st.sampled_from(holders))
        gone = draw(st.sampled_from(sorted(set(node["required"]) & set(value))))
        return mutation, _replace(spec, path, {k: v for k, v in value.items() if k != gone})
    if mutation in ("huge string", "unicode"):
        strings = [n for n in nodes if isinstance(n[1], str)]
        if not strings:
            return "none", spec
        path = draw(st.sampled_from(strings))[0]
        new = ("x" * draw(st.integers(10_000, 300_000))) if mutation == "huge string" else draw(
            st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=60)
        )
        return mutation, _replace(spec, path, new)
    path, value, node = draw(st.sampled_from(nodes[1:] or nodes))
    new = draw(_wrong_type(value) if mutation == "wrong type" else _out_of_range(node))
    return mutation, _replace(spec, path, new)
