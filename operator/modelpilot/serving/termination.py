"""Kubernetes shows /dev/termination-log in the pod's status: the one line `kubectl describe` prints."""

from __future__ import annotations

TERMINATION_LOG = "/dev/termination-log"


def write_termination_message(message: str) -> None:
    """Best effort: outside a pod there is no termination log, and that is fine."""
    try:
        with open(TERMINATION_LOG, "w", encoding="utf-8") as handle:
            handle.write(message[:4000])
    except OSError:
        pass
