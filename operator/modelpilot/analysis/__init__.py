"""Canary analysis: metric providers (one module each, behind `Provider`) and the pure verdicts.

Each measurement asks the provider for every check's value on the canary track (and on the stable track
over the same window, for checks relative to it), plus the canary's request count in the window. The
verdicts (`verdict.py`) are pure; the rollout state machine only counts them.
"""

from __future__ import annotations

from typing import Protocol


class ProviderError(Exception):
    """The provider could not answer: unreachable, refused, timed out, or a query it cannot run. The message
    says which, for status; it never holds credentials."""


class Provider(Protocol):
    async def query(self, promql: str) -> float | None:
        """The single value of an instant query; None when it returns no series. Raises ProviderError."""
