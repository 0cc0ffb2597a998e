"""The C allocator's share of the operator's memory: few arenas, and free pages handed back.

Converging thousands of objects at once decodes thousands of API responses on the Kubernetes workers'
threads. glibc gives each thread an arena of its own (up to eight per core) and keeps what was freed in
each for reuse, so the resident size stays at the peak long after the work is done. Two arenas serve a
pool whose threads mostly wait on the network; a trim once per resync pass returns the rest to the kernel.
Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h
ARENAS = 2


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()


def limit_arenas(count: int = ARENAS) -> bool:
    """Cap glibc's arenas; to be called before the threads start that would each take one."""
    if _LIBC is None:
        return False
    done = bool(_LIBC.mallopt(_M_ARENA_MAX, count))
    if not done:
        log.warning("could not limit the allocator to %d arenas", count)
    return done


def release() -> bool:
    """Hand the pages the allocator holds free back to the kernel; True if any went."""
    return _LIBC is not None and bool(_LIBC.malloc_trim(0))
