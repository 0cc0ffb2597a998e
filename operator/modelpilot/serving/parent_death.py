"""A child that dies with its parent, even a parent killed with SIGKILL (Linux's parent-death signal)."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def signal_when_parent_dies(parent: int, sig: signal.Signals) -> Callable[[], None]:
    """A preexec_fn for a child of `parent`: the child gets `sig` when the parent dies. The kernel sends it
    when the *thread* that forked exits, so fork from a thread that lives as long as the parent."""
    libc = ctypes.CDLL(None, use_errno=True)

    def in_the_child() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the signal was set up
            os._exit(1)

    return in_the_child
