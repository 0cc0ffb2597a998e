"""Verdicts, pure: one check's measured values in, pass, fail or inconclusive out, with the bound it was
held to, so status and Events can say "errorRate 0.31 > max 0.05"."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..api.spec import Check

PASS, FAIL, INCONCLUSIVE = "Pass", "Fail", "Inconclusive"


@dataclass(frozen=True)
class Reading:
    """What the provider answered for one track: a value, None for no series, or why it could not answer."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Measurement:
    check: str
    verdict: str
    # The canary's value and, for a relative bound, the stable track's; None when there was none.
    value: float | None
    stable_value: float | None
    # The bounds the value was held to, as people read them: "max 0.05", "max 1.2 x stable (0.031)".
    bound: str
    reason: str


def judge(check: Check, canary: Reading, stable: Reading | None, on_no_data: str = INCONCLUSIVE) -> Measurement:
    """The verdict of one check. Missing data (no series, NaN) gets `on_no_data`; a provider error is
    always inconclusive, never a pass: an outage must not promote a canary."""
    bounds = _bounds(check, stable)
    bound_text = ", ".join(text for _, _, text in bounds) or "no bound"

    def measured(verdict: str, reason: str, value: float | None = None) -> Measurement:
        stable_value = stable.value if stable is not None else None
        return Measurement(check.name, verdict, value, stable_value, bound_text, reason)

    if canary.error is not None:
        return measured(INCONCLUSIVE, canary.error)
    if _missing(canary.value):
        return measured(on_no_data, "no data for the canary (no series or NaN)")
    value = canary.value
    for kind, limit, text in bounds:
        if limit is None:
            why = stable.error if stable is not None and stable.error else "no data for the stable track"
            if stable is not None and stable.value is not None and math.isinf(stable.value):
                why = f"the stable track's value is {_fmt(stable.value)}, not a finite number"
            return measured(INCONCLUSIVE, f"cannot check {text}: {why}", value)
        if (kind == "max" and value > limit) or (kind == "min" and value < limit):
            return measured(FAIL, f"{check.name} {_fmt(value)} {'>' if kind == 'max' else '<'} {text}", value)
    if math.isinf(value):
        # +Inf fails a max bound (a p99 above the largest bucket), but passes nothing: it is not a measurement.
        return measured(INCONCLUSIVE, f"{check.name} is {_fmt(value)}, not a finite number", value)
    return measured(PASS, "", value)


def _bounds(check: Check, stable: Reading | None) -> list[tuple[str, float | None, str]]:
    """(kind, limit, text) of each bound; a relative bound's limit is None when the stable value is missing."""
    bounds: list[tuple[str, float | None, str]] = []
    if check.max is not None:
        bounds.append(("max", check.max, f"max {_fmt(check.max)}"))
    if check.min is not None:
        bounds.append(("min", check.min, f"min {_fmt(check.min)}"))
    if check.max_relative_to_stable is not None:
        factor = check.max_relative_to_stable
        # An infinite stable value would make any canary value pass: it is no yardstick.
        usable = stable is not None and stable.error is None and not _missing(stable.value) and not math.isinf(stable.value)
        base = stable.value if usable else None
        limit = None if base is None else base * factor
        shown = f"max {_fmt(factor)} x stable" + (f" ({_fmt(base)})" if base is not None else "")
        bounds.append(("max", limit, shown))
    return bounds


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def _fmt(value: float) -> str:
    return f"{value:.4g}"
