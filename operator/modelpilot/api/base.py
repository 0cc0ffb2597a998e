"""Shared base of every API model: camelCase on the wire, snake_case in Python, CEL rules in the schema."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

GROUP = "modelpilot.io"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"

# Go-style durations as Kubernetes writes them: 30s, 5m, 1h30m, 250ms.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")


def seconds(duration: str) -> float:
    """A duration as the CRD accepts it (`90s`, `1m30s`, `250ms`) in seconds."""
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(duration))


def cel(rule: str, message: str) -> dict[str, str]:
    """One `x-kubernetes-validations` entry: a CEL rule and the message kubectl shows when it fails."""
    return {"rule": rule, "message": message}


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    cel_rules: ClassVar[tuple[dict[str, str], ...]] = ()

    def __init_subclass__(cls, rules: list[dict[str, str]] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.cel_rules = tuple(rules or ())

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):  # noqa: ANN001 - pydantic's hook signature
        schema = handler(core_schema)
        if cls.cel_rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = list(cls.cel_rules)
        return schema

    def to_wire(self) -> dict[str, Any]:
        """The camelCase dict as stored in the Kubernetes object, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")
