"""Copies of API objects kept in memory for long: packed small, or sharing their strings. Pure.

The caches hold a copy of every ModelDeployment, owned object and pod: thousands of them. What is read
only when its owner is reconciled is kept packed, as compressed JSON: a Deployment costs about 12 KiB of
Python objects decoded, and about 1.6 KiB packed; unpacking it takes tens of microseconds. What stays
decoded (ModelDeployments, which kopf indexes, and labels) is compacted: decoded from JSON one by one,
each copy has strings of its own for every key (`apiVersion`, `f:metadata`, ...) and every common value
(`IfNotPresent`, `TCP`, label values); interned, all copies share one of each.
"""

from __future__ import annotations

import json
import sys
import zlib
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


# Fast rather than smallest: every watch event of an owned object or pod is packed once.
_LEVEL = 1
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def pack(value: Any) -> bytes:
    """JSON-shaped `value`, compressed; `unpack` gives back an equal copy."""
    return zlib.compress(_ENCODER.encode(value).encode(), _LEVEL)


def unpack(packed: bytes) -> Any:
    """A fresh copy of what `pack` was given: the caller may change it freely."""
    return json.loads(zlib.decompress(packed))
