"""Kubernetes shows /dev/termination-log in the pod's status: the one line `kubectl describe` prints."""

from __future__ import annotations

import argparse
import os

TERMINATION_LOG = "/dev/termination-log"


def write_termination_message(message: str) -> None:
    """Best effort. In a pod the kubelet has mounted the file; outside one there is none, and none is made
    (so a server run by hand never leaves a stray /dev/termination-log behind)."""
    try:
        fd = os.open(TERMINATION_LOG, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return
    with open(fd, "w", encoding="utf-8") as handle:
        handle.write(message[:4000])


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors end up as the termination message, alone: the kubelet would
    otherwise take the log's tail, and a long usage text crowds the error out of the status."""

    def error(self, message: str):
        write_termination_message(f"{self.prog}: error: {message}")
        super().error(message)
