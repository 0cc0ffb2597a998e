"""The allocator's knobs: on glibc they take effect, and a trim after a freed peak hands pages back."""

from __future__ import annotations

import ctypes
import platform

import pytest

from modelpilot import allocator

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the knobs are glibc's")


def resident_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@glibc
def test_the_arena_cap_is_accepted():
    assert allocator.limit_arenas(allocator.ARENAS) is True


@glibc
def test_a_trim_returns_what_a_freed_peak_left_behind():
    # Many small blocks with every 64th kept: free() keeps the holes, only a trim gives their pages back.
    blocks = [ctypes.create_string_buffer(4000) for _ in range(40_000)]
    kept = blocks[::64]
    del blocks
    before = resident_kib()
    assert allocator.release() is True
    assert resident_kib() < before - 50_000  # of about 160 MiB freed, most pages go back
    del kept


def test_without_glibc_both_are_no_ops(monkeypatch):
    monkeypatch.setattr(allocator, "_LIBC", None)
    assert allocator.limit_arenas() is False and allocator.release() is False
