"""Kubernetes-style conditions: set one, keep lastTransitionTime when nothing changed, list transitions."""

from __future__ import annotations

from dataclasses import dataclass

from ..api.status import Condition


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    now: str,
    generation: int | None,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set; its transition time moves only when its status does."""
    text = {True: "True", False: "False", None: "Unknown"}[status]
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == text else now
    updated = Condition(
        type=type_,
        status=text,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


@dataclass(frozen=True)
class Notice:
    """Something worth a Kubernetes Event: a condition that changed reason or status."""

    warning: bool
    reason: str
    message: str


# Which transitions are news, and whether they are bad news.
_NEWSWORTHY = {
    ("ModelResolved", "True"): False,
    ("ModelResolved", "False"): True,
    ("Ready", "True"): False,
    ("Degraded", "True"): True,
    # A rollout that stopped for a reason other than being done: the only news when nothing serves.
    ("Progressing", "False"): True,
}
_UNREMARKABLE = {("Progressing", "RolloutComplete")}


def _identity(cond: Condition) -> tuple:
    # A newly resolved version is news even when the condition stays True/Resolved.
    if cond.type == "ModelResolved":
        return cond.status, cond.reason, cond.message
    return cond.status, cond.reason


def notices(before: list[Condition], after: list[Condition]) -> list[Notice]:
    """Events for conditions whose status or reason changed between two statuses, one per reason:
    a failure usually moves several conditions at once, and one Event says it."""
    out: dict[str, Notice] = {}
    for cond in after:
        old = get_condition(before, cond.type)
        if old is not None and _identity(old) == _identity(cond):
            continue
        warning = _NEWSWORTHY.get((cond.type, cond.status))
        if warning is not None and (cond.type, cond.reason) not in _UNREMARKABLE:
            out.setdefault(cond.reason, Notice(warning=warning, reason=cond.reason, message=cond.message))
    return list(out.values())
