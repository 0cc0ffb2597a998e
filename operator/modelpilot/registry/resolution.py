"""What a ModelDeployment's model reference came to on one ask: a concrete version, or why there is none.

One type from the resolver through the plan to status. Pure, so the plan can take it as an observation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ..api.status import ResolvedModel
from .errors import RegistryError

_asks = itertools.count(1)


def next_ask() -> int:
    """A stamp for a registry ask about to start; later asks get larger stamps, process-wide."""
    return next(_asks)


@dataclass(frozen=True)
class Resolution:
    model: ResolvedModel | None = None
    # Why there is no model: the status condition reason, a message for people, and whether waiting helps.
    reason: str = ""
    message: str = ""
    retryable: bool = False
    # When the registry was asked (a `next_ask` stamp). Of two answers to the same reference, the one
    # asked later is the truer one, whichever of them arrived last.
    asked: int = 0

    @classmethod
    def failed(cls, reason: str, message: str, retryable: bool, asked: int = 0) -> Resolution:
        return cls(reason=reason, message=message, retryable=retryable, asked=asked)

    @classmethod
    def of_error(cls, error: RegistryError, asked: int = 0) -> Resolution:
        return cls.failed(error.reason, str(error), error.retryable, asked)
