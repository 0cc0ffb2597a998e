"""Copies of API objects kept in memory for long, sharing their strings. Pure.

The indexes hold a copy of every ModelDeployment, owned object and pod: thousands of them. Decoded from
JSON one by one, each copy has strings of its own for every key (`apiVersion`, `f:metadata`, ...) and every
common value (`IfNotPresent`, `TCP`, label values); interned, all copies share one of each. Strings are a
large part of what a decoded object costs, and most of them repeat from object to object.
"""

from __future__ import annotations

import sys
from typing import Any

# Longer strings (a message, a configuration kept in an annotation) seldom repeat: not worth a lookup.
SHARED_UP_TO = 64


def compact(value: Any) -> Any:
    """A deep copy of JSON-shaped `value` whose dict keys and short strings are interned."""
    if isinstance(value, dict):
        return {_shared(k): compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return _shared(value)


def _shared(value: Any) -> Any:
    # type() rather than isinstance: sys.intern takes exact strings only.
    return sys.intern(value) if type(value) is str and len(value) <= SHARED_UP_TO else value
