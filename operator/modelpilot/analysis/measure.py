"""One measurement of a canary (or of a promoted version while it bakes), the I/O half: ask the provider
for its request count and every check's value (the stable track's too, for relative bounds) over one
window, concurrently, then judge each check with the pure `verdict.judge`."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from ..api.spec import Analysis, Check
from . import Provider, ProviderError
from .queries import Target, query, sample_query
from .verdict import Measurement, Reading, judge


@dataclass(frozen=True)
class Taken:
    # Requests the canary answered in the window; None when it could not be read (see `error`).
    sample: float | None
    measurements: tuple[Measurement, ...] = ()
    error: str | None = None


async def take(provider: Provider, analysis: Analysis, namespace: str, deployment: str, version: str,
               stable_version: str | None, track: str = "canary") -> Taken:  # fmt: skip
    """Measure `version` on `track` against the stable track's `stable_version`. With no stable version to
    compare with (a promoted version baking alone), relative bounds are left out, and checks that have
    nothing else are skipped."""
    window = analysis.interval
    canary = Target(namespace, deployment, track, version, window)
    stable = Target(namespace, deployment, "stable", stable_version, window) if stable_version else None
    checks = analysis.checks if stable else [_absolute(c) for c in analysis.checks if c.max is not None or c.min is not None]
    sample = await _read(provider, sample_query(canary))
    if sample.error is None and sample.value is not None and not 0 <= sample.value < math.inf:
        # NaN would pass the minimum-sample gate below; no count of requests is negative or infinite.
        sample = Reading(error=f"the request count {sample.value} is not a count")
    if sample.error is not None:
        return Taken(sample=None, error=sample.error)
    if (sample.value or 0) < analysis.min_sample_size:
        return Taken(sample=sample.value or 0)  # no verdict below the minimum sample: nothing else is asked
    relative = [c.max_relative_to_stable is not None for c in checks]
    readings = await asyncio.gather(
        *(_read(provider, query(c.metric, canary)) for c in checks),
        *(_read(provider, query(c.metric, stable)) for c, r in zip(checks, relative) if r),
    )
    canary_readings, stable_readings = readings[: len(checks)], iter(readings[len(checks):])
    measurements = tuple(
        judge(check, reading, next(stable_readings) if rel else None, analysis.on_no_data)
        for check, reading, rel in zip(checks, canary_readings, relative)
    )
    return Taken(sample=sample.value, measurements=measurements)


def _absolute(check: Check) -> Check:
    return check.model_copy(update={"max_relative_to_stable": None})


async def _read(provider: Provider, promql: str) -> Reading:
    try:
        return Reading(value=await provider.query(promql))
    except ProviderError as exc:
        return Reading(error=str(exc))
