"""Does a live object already hold everything we would apply? Pure, so no-op reconciles send no write."""

from __future__ import annotations

from typing import Any


def difference(live: Any, desired: Any, path: str = "") -> str | None:
    """The path of the first field of `desired` that `live` does not hold, or None when it holds them all.

    Fields the API server added (defaults, status, other managers' fields) are ignored. Lists must match
    element by element, since we own whole lists. Scalars compare as text, because the server stores
    quantities such as `cpu: 1` as strings.
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
    return None if str(live) == str(desired) else path
