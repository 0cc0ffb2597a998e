"""Does a live object already hold everything we would apply? Pure, so no-op reconciles send no write."""

from __future__ import annotations

from typing import Any


def holds(live: Any, desired: Any) -> bool:
    """True when every field of `desired` has the same value in `live`.

    Fields the API server added (defaults, status, other managers' fields) are ignored. Lists must match
    element by element, since we own whole lists. Scalars compare as text, because the server stores
    quantities such as `cpu: 1` as strings.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and holds(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(holds, live, desired))
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    return str(live) == str(desired)
