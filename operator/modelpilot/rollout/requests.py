"""Manual rollout requests (promote, abort, retry, pause, resume), read from an annotation. Pure.

A request is an annotation, not a spec field, so GitOps tools see no drift when someone promotes. Its
value is JSON, `{"id": "...", "action": "promote", "full": false}`; the id makes each request act once,
and status records the ids it acted on, so a request left on the object does nothing after a restart.
"""

from __future__ import annotations

import hashlib
import json

from ..api import GROUP
from .canary import Request

REQUEST_ANNOTATION = f"{GROUP}/request"
ACTIONS = ("promote", "abort", "retry", "pause", "resume")


def encode(request_id: str, action: str, full: bool = False) -> str:
    """The annotation value for a request."""
    return json.dumps({"id": request_id, "action": action, "full": full}, separators=(",", ":"))


def pending(annotations: dict | None) -> tuple[Request, ...]:
    """The request the annotations hold, if any. A value that is not a request is still one, with an action
    no one knows: the state machine reports it once, under an id derived from the value."""
    raw = (annotations or {}).get(REQUEST_ANNOTATION)
    if not raw:
        return ()
    try:
        data = json.loads(raw)
        request = Request(str(data["id"]), str(data["action"]), bool(data.get("full", False)))
    except (ValueError, TypeError, KeyError):
        digest = hashlib.sha256(raw.encode()).hexdigest()[:12]
        return (Request(f"malformed-{digest}", "malformed"),)
    return (request,) if request.id else ()
