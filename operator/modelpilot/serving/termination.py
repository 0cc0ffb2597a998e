"""Kubernetes shows /dev/termination-log in the pod's status: the one line `kubectl describe` prints."""

from __future__ import annotations

import argparse

TERMINATION_LOG = "/dev/termination-log"


def write_termination_message(message: str) -> None:
    """Best effort: outside a pod there is no termination log, and that is fine."""
    try:
        with open(TERMINATION_LOG, "w", encoding="utf-8") as handle:
            handle.write(message[:4000])
    except OSError:
        pass


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors end up as the termination message, alone: the kubelet would
    otherwise take the log's tail, and a long usage text crowds the error out of the status."""

    def error(self, message: str):
        write_termination_message(f"{self.prog}: error: {message}")
        super().error(message)
