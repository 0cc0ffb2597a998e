"""Adaptive micro-batching: fast-path requests that arrive together are scored in one ``predict`` call.

With ``--max-batch-size`` above 1, fast-path requests (``fast_path``) go to one scoring thread through a
queue. The thread takes the first request waiting, then every other one already queued, up to the
maximum; if fewer than the maximum are queued while more fast-path requests are still arriving (their
bodies being read), it waits for them, at most ``--max-batch-wait-ms`` after it took the first. A lone
request on an idle server is therefore scored at once, and under load the batch is whatever queued up
while the previous one was scored: the fixed per-call cost of ``predict`` (pandas' input checks, most of
it for small tables) is paid once per batch rather than once per request.

The batch's rows are scored as one DataFrame and the predictions split back by row counts. Only a
prediction with one row per input row (an array, list, Series or DataFrame of that length, pandas ones
with the batch's RangeIndex) can be split: any other shape turns batching off for the process, logged
once, and requests are scored one by one from then on. If a batch's ``predict`` raises, each of its
requests is scored on its own, so one bad request never fails its neighbours; a request the fast path
cannot score is answered by MLflow's app, as without batching.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from .fast_path import FastPath, Parsed

log = logging.getLogger("modelpilot.serving.batching")


def score_one(fast: FastPath, observe: Callable[[Any], None], parsed: Parsed) -> bytes | None:
    """The answer to one parsed request, or None to let MLflow's app answer it (the model raised)."""
    try:
        frame = fast.build(*parsed)
        answer = fast.answer(fast.predict(frame))
    except Exception:  # MLflow's app scores it again and answers the error its own way
        return None
    observe(frame)
    return answer


def split_rows(predictions: Any, sizes: list[int]) -> list[Any] | None:
    """`predictions` of a batch split into one prediction per request of `sizes` rows, each what the
    model returns for those rows alone; None if the predictions do not map one-to-one to the rows."""
    import numpy as np
    import pandas as pd

    total = sum(sizes)
    if isinstance(predictions, np.ndarray):
        if predictions.ndim == 0 or predictions.shape[0] != total:
            return None
        cut = lambda a, b: predictions[a:b]  # noqa: E731
    elif isinstance(predictions, (pd.Series, pd.DataFrame)):
        if len(predictions) != total or not predictions.index.equals(pd.RangeIndex(total)):
            return None
        cut = lambda a, b: predictions.iloc[a:b].reset_index(drop=True)  # noqa: E731
    elif type(predictions) is list:
        if len(predictions) != total:
            return None
        cut = lambda a, b: predictions[a:b]  # noqa: E731
    else:
        return None
    parts, start = [], 0
    for size in sizes:
        parts.append(cut(start, start + size))
        start += size
    return parts


class Batcher:
    """The scoring thread and its queue; `answer` is called on the event loop."""

    def __init__(
        self, fast: FastPath, observe: Callable[[Any], None], *, max_size: int, max_wait: float
    ) -> None:
        self._fast = fast
        self._observe = observe
        self.max_size = max_size
        self.max_wait = max_wait
        self.enabled = True  # until a batch's predictions do not map one-to-one to its rows
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.arriving = 0  # fast-path requests whose bodies are being read; changed on the event loop only
        self._thread = threading.Thread(target=self._run, name="batch-scorer", daemon=True)
        self._thread.start()

    async def answer(self, body: bytes) -> bytes | None:
        """The fast path's answer to `body`, scored with whatever arrived with it; None for MLflow's app."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((body, future, loop))
        return await future

    # -- the scoring thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if self.enabled:
                self._gather(batch)
            try:
                answers = self._score([body for body, _, _ in batch])
            except Exception:  # never lose the thread: MLflow's app answers these requests
                log.exception("batching: scoring a batch failed; MLflow's app answers its requests")
                answers = [None] * len(batch)
            by_loop: dict[Any, list[Any]] = {}  # one wake-up per event loop (the server has one)
            for (_, future, loop), answer in zip(batch, answers):
                by_loop.setdefault(loop, []).append((future, answer))
            for loop, results in by_loop.items():
                loop.call_soon_threadsafe(_deliver, results)

    def _gather(self, batch: list[Any]) -> None:
        """Add what is queued, and what is still arriving within the wait, up to the maximum size."""
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if self.arriving <= 0 or remaining <= 0:
                return
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                return

    def _score(self, bodies: list[bytes]) -> list[bytes | None]:
        parsed = [self._fast.parse(body) for body in bodies]
        answers: list[bytes | None] = [None] * len(bodies)
        alone = [i for i, p in enumerate(parsed) if p is not None]
        if self.enabled and len(alone) > 1:
            columns = parsed[alone[0]][0]
            together = [i for i in alone if parsed[i][0] == columns]
            if len(together) > 1 and self._score_together(together, parsed, answers):
                alone = [i for i in alone if i not in set(together)]
        for i in alone:
            answers[i] = score_one(self._fast, self._observe, parsed[i])
        return answers

    def _score_together(self, indices: list[int], parsed: list[Any], answers: list[bytes | None]) -> bool:
        """Score the requests at `indices` in one predict call; False if they must be scored one by one."""
        columns = parsed[indices[0]][0]
        sizes = [len(parsed[i][1]) for i in indices]
        rows = [row for i in indices for row in parsed[i][1]]
        try:
            frame = self._fast.build(columns, rows)
            predictions = self._fast.predict(frame)
        except Exception:  # one of the requests may be at fault: each is scored on its own
            return False
        parts = split_rows(predictions, sizes)
        if parts is None:
            self.enabled = False
            log.warning(
                "batching: the model's predictions (%s) do not map one-to-one to its input rows; "
                "scoring requests one by one from now on",
                type(predictions).__name__,
            )
            return False
        try:
            encoded = [self._fast.answer(part) for part in parts]
        except Exception:
            return False
        self._observe(frame)
        for i, answer in zip(indices, encoded):
            answers[i] = answer
        return True


def _deliver(results: list[tuple[asyncio.Future, bytes | None]]) -> None:
    for future, answer in results:
        if not future.done():  # a request that timed out has stopped waiting
            future.set_result(answer)
