"""Does a live object already hold everything we would apply, and nothing we stopped wanting?

Pure, so no-op reconciles send no write.
"""

from __future__ import annotations

import json
import re
from decimal import InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# Values under a container's resources.requests or resources.limits are quantities.
_QUANTITY_PATH = re.compile(r"\.(requests|limits)\.[^.\[]+$")


def difference(live: Any, desired: Any, path: str = "") -> str | None:
    """The path of the first field of `desired` that `live` does not hold, or None when it holds them all.

    Fields the API server added (defaults, status, other managers' fields) are ignored. Lists must match
    element by element, since we own whole lists. Scalars compare as text, because the server stores
    quantities such as `cpu: 1` as strings; quantities compare by value (`0.5` is `500m`).
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return path or "."
        for key, value in desired.items():
            if key not in live:
                return f"{path}.{key}"
            found = difference(live[key], value, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return path
        for i, (have, want) in enumerate(zip(live, desired)):
            found = difference(have, want, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(desired, bool) or isinstance(live, bool):
        return None if live is desired else path
    if str(live) == str(desired):
        return None
    if _QUANTITY_PATH.search(path) and _same_quantity(live, desired):
        return None
    return path


def _same_quantity(a: Any, b: Any) -> bool:
    try:
        return parse_quantity(a) == parse_quantity(b)
    except (ValueError, TypeError, InvalidOperation):
        return False


def managed_fields(live: dict, manager: str) -> dict:
    """The fieldsV1 set `manager` owns through server-side apply (empty when it owns nothing)."""
    for entry in (live.get("metadata") or {}).get("managedFields") or ():
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            return entry.get("fieldsV1") or {}
    return {}


def no_longer_desired(fields: dict, desired: Any, path: str = "") -> str | None:
    """The path of the first field in a fieldsV1 set that `desired` no longer holds, or None.

    Server-side apply removes such a field only when we apply again, so finding one means: apply.
    """
    for key, child in fields.items():
        if key == ".":
            continue
        kind, _, name = key.partition(":")
        if kind == "f":
            if not isinstance(desired, dict) or name not in desired:
                return f"{path}.{name}"
            found = no_longer_desired(child, desired[name], f"{path}.{name}")
        elif kind == "k":
            element = _keyed_element(desired, json.loads(name))
            if element is None:
                return f"{path}[{name}]"
            found = no_longer_desired(child, element, f"{path}[{name}]")
        elif kind == "v":
            if not isinstance(desired, list) or json.loads(name) not in desired:
                return f"{path}[{name}]"
            found = None
        else:  # "i:<index>" is not written for apply; nothing to judge
            found = None
        if found:
            return found
    return None


def _keyed_element(desired: Any, keys: dict) -> dict | None:
    """The element of an associative list with these key values. A key we left out (such as a port's
    protocol) was defaulted by the server, so only the keys we wrote must match."""
    if not isinstance(desired, list):
        return None
    for element in desired:
        if isinstance(element, dict) and all(
            k not in element or str(element[k]) == str(v) for k, v in keys.items()
        ):
            return element
    return None


def drift(live: dict | None, desired: dict, manager: str) -> str | None:
    """Why `desired` must be applied over `live`, as a path and what is wrong there; None when it need not."""
    if live is None:
        return "(absent)"
    missing = difference(live, desired)
    if missing:
        return missing
    stale = no_longer_desired(managed_fields(live, manager), desired)
    return f"{stale} (no longer desired)" if stale else None
