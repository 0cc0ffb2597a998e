"""Handing `spec.replicas` of a Deployment over to its HorizontalPodAutoscaler without a drop in capacity.

Server-side apply resets a field to its default (1 replica) when its only applier stops applying it. The
Kubernetes documentation ("Transferring ownership" in Server-Side Apply) avoids that: first apply the
current value under a second field manager, so the field has another owner, then apply without it. The
HPA controller's own writes of the scale take the field over from there. Pure: it only says what to apply.
"""

from __future__ import annotations

from ..api import GROUP
from .diff import managed_fields

HANDOVER_MANAGER = f"{GROUP}/handover-to-hpa"


def replicas_handover(desired: dict, live: dict | None, manager: str) -> dict | None:
    """The replicas-only object to apply under HANDOVER_MANAGER before `desired`, or None when not needed:
    `desired` leaves replicas out while `manager` still owns the live count."""
    if live is None or "replicas" in desired.get("spec", {}):
        return None
    owned = managed_fields(live, manager).get("f:spec", {})
    replicas = (live.get("spec") or {}).get("replicas")
    if "f:replicas" not in owned or replicas is None:
        return None
    meta = desired["metadata"]
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }
