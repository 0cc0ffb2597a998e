"""Is a live object ours to apply over? Pure.

A ModelDeployment renders fixed names. An object of that name that someone else made (a user's own
Service, a Deployment another controller runs) must not be taken over: a forced apply would rewrite its
selector, and the garbage collector would delete it with the ModelDeployment.
"""

from __future__ import annotations


def foreign(live: dict, owner_uid: str, manager: str) -> str | None:
    """Why `live` is not ours, for status and an Event; None when it is ours.

    Ours: controlled by this ModelDeployment, or with no controller at all and fields applied by our field
    manager (someone removed our ownerReference by hand: we put it back).
    """
    meta = live.get("metadata") or {}
    what = f"{live.get('kind', 'object')} {meta.get('namespace')}/{meta.get('name')}"
    references = meta.get("ownerReferences") or []
    controller = next((ref for ref in references if ref.get("controller")), None)
    if controller is not None:
        if controller.get("uid") == owner_uid:
            return None
        return f"{what} exists and is controlled by {controller.get('kind')} {controller.get('name')!r}"
    managers = {entry.get("manager") for entry in meta.get("managedFields") or ()}
    if manager in managers:
        return None
    made_by = ", ".join(sorted(m for m in managers if m)) or "someone else"
    return f"{what} exists and was not made by this ModelDeployment (fields managed by {made_by})"
