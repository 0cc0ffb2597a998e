"""Drift pooled over the worker processes of one server (``--workers N``, N > 1).

Each worker runs its own :class:`~modelpilot.serving.baseline.DriftMonitor` over its share of the pod's
window and publishes the window's row count and bin counts to ``drift_<pid>.bin`` in the directory the
workers share: once a second when they changed, and just before it answers a scrape. The worker that
answers ``/metrics`` sums the counts in every file and scores the sum. PSI depends on the rows only
through their per-bin counts, so the pooled score is exactly what one monitor holding every worker's
rows would export. The supervisor deletes the file of a worker that died (:func:`forget`): its rows
leave the window with it.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time

import numpy as np

from .baseline import DriftMonitor

PUBLISH_SECONDS = 1.0

log = logging.getLogger(__name__)


def replace_atomically(path: str, data: bytes) -> None:
    """Write `path` whole: readers in other processes see the old content or the new, never half of it."""
    partial = f"{path}.partial"
    with open(partial, "wb") as handle:
        handle.write(data)
    os.replace(partial, path)


def _path(directory: str, pid: int | str) -> str:
    return os.path.join(directory, f"drift_{pid}.bin")


def forget(directory: str, pid: int) -> None:
    """Leave a dead worker's window out of the pool."""
    try:
        os.remove(_path(directory, pid))
    except FileNotFoundError:
        pass


class PooledDrift:
    """One worker's side of the pool: publishes its monitor's window, scores the sum of everyone's."""

    def __init__(
        self,
        monitor: DriftMonitor,
        directory: str,
        *,
        min_rows: int,
        period: float = PUBLISH_SECONDS,
        pid: int | None = None,
    ) -> None:
        self.monitor = monitor
        self.directory = directory
        self.min_rows = min_rows  # rows the pooled window needs before a score is exported
        self.period = period
        self._path = _path(directory, os.getpid() if pid is None else pid)  # the worker's, which `forget` names
        self._published: np.ndarray | None = None
        self._lock = threading.Lock()  # the publishing thread and a scrape may publish at once

    def start(self) -> None:
        threading.Thread(target=self._publish_periodically, name="drift-publisher", daemon=True).start()

    def _publish_periodically(self) -> None:
        while True:  # as long as the worker lives
            time.sleep(self.period)
            try:
                self.publish()
            except OSError:
                log.exception("drift: cannot publish this worker's window to %s; trying again", self.directory)

    def publish(self) -> None:
        """Write this worker's window (rows, then bin counts) where the other workers read it."""
        rows, counts = self.monitor.window_counts()
        record = np.concatenate(([rows], counts.ravel())).astype(np.int64)
        with self._lock:
            if self._published is not None and np.array_equal(record, self._published):
                return
            replace_atomically(self._path, record.tobytes())
            self._published = record

    def scores(self) -> tuple[float, dict[str, float]] | None:
        """(overall, per-feature PSI) of every live worker's window together, or None below `min_rows`."""
        self.publish()
        size = self._published.size
        total = np.zeros(size, dtype=np.int64)
        for path in glob.glob(_path(self.directory, "*")):
            try:
                record = np.fromfile(path, dtype=np.int64)
            except OSError:  # deleted since listed: its worker died
                continue
            if record.size == size:
                total += record
        rows, counts = int(total[0]), total[1:]
        if rows < self.min_rows:
            return None
        return self.monitor.scores_of(counts.reshape(len(self.monitor.names), -1))
