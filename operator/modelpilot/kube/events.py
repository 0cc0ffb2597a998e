"""Kubernetes Events on a ModelDeployment: what `kubectl describe` shows people."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone

from kubernetes.client.exceptions import ApiException

from .objects import call, path

COMPONENT = "modelpilot"
log = logging.getLogger(__name__)


def post_event(involved: dict, warning: bool, reason: str, message: str) -> None:
    """Create a core/v1 Event about `involved` (apiVersion, kind, name, namespace, uid). Best effort:
    a lost Event must never fail a reconcile."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    namespace = involved["namespace"]
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
        "involvedObject": involved,
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        call("POST", path("v1", "Event", namespace), body=body)
    except ApiException as exc:
        log.warning("could not post Event %s on %s/%s: HTTP %s", reason, namespace, involved["name"], exc.status)
