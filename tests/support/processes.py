"""Processes the suite starts: free loopback ports, bounded readiness waits, clean stops."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx

from modelpilot.serving.parent_death import signal_when_parent_dies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_to_rebind() -> int:
    """A free loopback port below the kernel's ephemeral range. A port that is let go and bound again
    later (a proxy cut and restored) must not meanwhile become some outgoing connection's local port,
    which any port of that range may on a busy machine."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(1000):
        port = random.randrange(max(1024, low // 2), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {max(1024, low // 2)} and {low}")


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies, so no server outlives a
    killed test run. Only from the main thread: the signal comes when the forking thread exits."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    return signal_when_parent_dies(parent_pid, signal.SIGKILL)


def processes_running(command: str, environment: frozenset[str] = frozenset()) -> dict[int, str]:
    """Processes on this machine whose command line contains `command` and whose environment holds every
    `NAME=value` of `environment` (pods' processes too: the real node's containers share this kernel).
    Their pids, with the command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if command not in cmdline:
                continue
            if environment and not {e.encode() for e in environment} <= set((entry / "environ").read_bytes().split(b"\0")):
                continue
        except OSError:  # gone meanwhile
            continue
        found[int(entry.name)] = cmdline
    return found


def start_process(cmd: list[str], env: dict[str, str] | None, log_path: Path) -> subprocess.Popen:
    """Start `cmd` in its own process group, stdout and stderr to `log_path`, dying with this process."""
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=die_with_parent(os.getpid()),
        )  # fmt: skip


def wait_http_ok(url: str, proc: subprocess.Popen, log_path: Path | None, timeout: float) -> None:
    """Wait until `url` answers 200; fail early with the log tail if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout}s:\n{_tail(log_path)}")


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM the process group, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _tail(path: Path | None) -> str:
    return path.read_text(errors="replace")[-3000:] if path and path.exists() else "(no log)"


@contextmanager
def exclusive_lock(path: Path, timeout: float, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An flock on `path` held for the block, waited for with a bound (another run may hold it: a build of
    the same cache); `on_wait` is called once if it must wait. TimeoutError when the bound passes."""
    with open(path, "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} still held after {timeout:g}s") from None
                if on_wait is not None:
                    on_wait()
                    on_wait = None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
