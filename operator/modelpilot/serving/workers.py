"""Worker processes of the model server (``--workers N``, N > 1): the supervisor, and what workers share.

The process the container starts becomes a supervisor: it binds the listening socket once, creates a
private directory, and starts N workers, each ``python -m modelpilot.serving.server`` with the same
arguments and, in its environment, the socket's file descriptor and the directory. Every worker accepts
connections on that one socket (the kernel gives each connection to one of them), loads its own model
and serves as a single-process server does, except for what the directory shares:

- Prometheus multiprocess files (``PROMETHEUS_MULTIPROC_DIR``): every worker's counters, histograms and
  gauges, which the worker answering ``/metrics`` adds up;
- every worker's drift window (``drift_pool``);
- a marker per worker whose model has loaded: ``/ready`` says ready once every worker has its model;
- the supervisor's state (``workers.json``): the live processes and how many workers were restarted.

A worker that dies on a signal (SIGKILL, the OOM killer, a crash in native code) or exits unasked is
replaced, after a growing delay when replacements keep dying soon after they start; a replacement loads
its model before it takes connections, so the others serve meanwhile. A worker that exits with an error
status (its model failed to load, which it wrote to the termination message) stops the server with that
status. SIGTERM or SIGINT stops every worker (each finishes the requests it holds) within a bound, and
the directory is removed; a supervisor killed outright takes its workers with it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from prometheus_client.multiprocess import mark_process_dead

from . import drift_pool
from .parent_death import signal_when_parent_dies

DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it when it is imported
SOCKET_ENV = "MODELPILOT_WORKER_FD"
LOAD_FIRST_ENV = "MODELPILOT_WORKER_LOAD_FIRST"
STATE_FILE = "workers.json"
BACKLOG = 2048  # uvicorn's default
POLL_SECONDS = 0.1
STOP_SECONDS = 30.0  # for the workers to finish their requests once told to stop; then they are killed
STABLE_SECONDS = 10.0  # a worker that dies sooner than this after it started is replaced after a delay
MAX_DELAY_SECONDS = 5.0

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# The supervisor
# --------------------------------------------------------------------------------------------------


def supervise(command: list[str], host: str, port: int, workers: int) -> int:
    """Serve on host:port with `workers` processes running `command` until told to stop; the exit status."""
    try:
        sock = listen(host, port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", host, port, exc)
        return 1
    with sock:
        return Supervisor(command, sock, workers).run()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket the workers share, bound the way uvicorn binds one for its own workers."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)  # connections wait here while no worker is accepting yet
    sock.set_inheritable(True)
    return sock


@dataclass
class _Slot:
    proc: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0  # in a row, each sooner than STABLE_SECONDS after its start
    start_at: float = 0.0  # when to start a replacement


class Supervisor:
    def __init__(self, command: list[str], sock: socket.socket, workers: int) -> None:
        self.command = command
        self.sock = sock
        self.directory = tempfile.mkdtemp(prefix="modelpilot-workers-")
        self.slots = [_Slot() for _ in range(workers)]
        self.restarts = 0
        self.stopping = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        log.info("starting %d workers; shared directory %s", len(self.slots), self.directory)
        try:
            for slot in self.slots:
                self._start(slot, load_first=False)
            return self._watch()
        finally:
            self._stop_workers()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _watch(self) -> int:
        while not self.stopping:
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is None:
                    if now >= slot.start_at:
                        self._start(slot, load_first=True)
                    continue
                status = slot.proc.poll()
                if status is None:
                    continue
                self._forget(slot.proc.pid)
                if status > 0:
                    log.error("worker %d exited with status %d; stopping the server", slot.proc.pid, status)
                    return status
                self._replace_later(slot, status, now)
            time.sleep(POLL_SECONDS)
        log.info("stopping %d workers", len(self.slots))
        return 0

    def _start(self, slot: _Slot, load_first: bool) -> None:
        fd = self.sock.fileno()
        env = {**os.environ, DIRECTORY_ENV: self.directory, SOCKET_ENV: str(fd)}
        if load_first:
            env[LOAD_FIRST_ENV] = "1"
        # A worker stops when the supervisor dies, even killed, so none outlives it holding the port (the
        # supervisor has no threads, so the forking thread lives as long as it does).
        stop_with_supervisor = signal_when_parent_dies(os.getpid(), signal.SIGTERM)
        slot.proc = subprocess.Popen(self.command, env=env, pass_fds=(fd,), preexec_fn=stop_with_supervisor)
        slot.started = time.monotonic()
        self._write_state()

    def _replace_later(self, slot: _Slot, status: int, now: float) -> None:
        lived = now - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < STABLE_SECONDS else 0
        delay = min(MAX_DELAY_SECONDS, 0.1 * 2**slot.quick_deaths) if slot.quick_deaths else 0.0
        how = f"was killed by {signal.Signals(-status).name}" if status < 0 else "exited"
        self.restarts += 1
        log.warning(
            "worker %d %s after %.1fs; starting another in %.1fs (%d restarts so far)",
            slot.proc.pid, how, lived, delay, self.restarts,
        )  # fmt: skip
        slot.proc = None
        slot.start_at = now + delay
        self._write_state()

    def _stop_workers(self) -> None:
        running = [slot.proc for slot in self.slots if slot.proc is not None and slot.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop within %gs; killing it", proc.pid, STOP_SECONDS)
                proc.kill()
                proc.wait()

    def _forget(self, pid: int) -> None:
        """What a dead worker leaves behind: its live gauges, its drift window, its loaded marker. Its
        counters and histograms stay, so totals never go down."""
        mark_process_dead(pid, self.directory)
        drift_pool.forget(self.directory, pid)
        try:
            os.remove(_loaded_marker(self.directory, pid))
        except FileNotFoundError:
            pass

    def _write_state(self) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # every worker waited for so far
        state = {
            "pids": [os.getpid(), *(slot.proc.pid for slot in self.slots if slot.proc is not None)],
            "restarts": self.restarts,
            "reaped_cpu_seconds": usage.ru_utime + usage.ru_stime,
        }
        drift_pool.replace_atomically(os.path.join(self.directory, STATE_FILE), json.dumps(state).encode())


# --------------------------------------------------------------------------------------------------
# What a worker knows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class State:
    """The supervisor's latest word: its pid then the live workers', workers restarted, and the CPU time
    of the workers that have exited (so the pod's CPU total does not drop when one dies)."""

    pids: list[int]
    restarts: int = 0
    reaped_cpu_seconds: float = 0.0


def read_state(directory: str) -> State:
    """The supervisor's state; this process alone if there is none to read."""
    try:
        with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as handle:
            return State(**json.load(handle))
    except (OSError, ValueError, TypeError):
        return State(pids=[os.getpid()])


def _loaded_marker(directory: str, pid: int | str) -> str:
    return os.path.join(directory, f"loaded_{pid}")


@dataclass
class Worker:
    """This process as one of the supervisor's `count` workers."""

    directory: str
    count: int
    fd: int
    load_first: bool  # a replacement: load the model before taking connections
    _all_loaded: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, count: int) -> Worker | None:
        """This process's place among the workers, or None when no supervisor started it."""
        if SOCKET_ENV not in os.environ:
            return None
        return cls(os.environ[DIRECTORY_ENV], count, int(os.environ[SOCKET_ENV]), LOAD_FIRST_ENV in os.environ)

    def socket(self) -> socket.socket:
        return socket.socket(fileno=self.fd)

    @property
    def stdout_lock(self) -> str:
        """A file whose flock the workers take to write to the standard output they share."""
        return os.path.join(self.directory, "stdout.lock")

    def window_share(self, window: int) -> int:
        """Rows of the pod's drift window this worker keeps: an equal share, rounded up."""
        return -(-window // self.count)

    def model_loaded(self) -> None:
        with open(_loaded_marker(self.directory, os.getpid()), "w"):
            pass

    def all_loaded(self) -> bool:
        """Whether every worker has loaded its model, now or once: a worker started later loads it before
        it takes connections, so the others keep the server ready meanwhile."""
        if not self._all_loaded:
            self._all_loaded = len(glob.glob(_loaded_marker(self.directory, "*"))) >= self.count
        return self._all_loaded
