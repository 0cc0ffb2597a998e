"""Asks folded per key: one run at a time, one more after the last ask, keys independent, failures contained."""

from __future__ import annotations

import asyncio

from modelpilot.coalesce import Coalescer


class Runs:
    """Records each run, which waits for the test to let it finish."""

    def __init__(self, fail: bool = False):
        self.started: list = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, key) -> None:
        self.started.append(key)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the API server said no")


async def settle(coalescer: Coalescer) -> None:
    while len(coalescer):
        await asyncio.sleep(0)


def test_asks_while_a_run_goes_make_exactly_one_more_run():
    async def scenario():
        runs = Runs()
        coalescer = Coalescer(runs)
        coalescer.ask("a")
        await asyncio.sleep(0)
        for _ in range(100):
            coalescer.ask("a")
        runs.release.set()
        await settle(coalescer)
        return runs.started

    assert asyncio.run(scenario()) == ["a", "a"]


def test_an_ask_after_a_run_ended_runs_again_and_keys_run_side_by_side():
    async def scenario():
        runs = Runs()
        coalescer = Coalescer(runs)
        coalescer.ask("a")
        coalescer.ask("b")
        await asyncio.sleep(0)
        side_by_side = sorted(runs.started)
        runs.release.set()
        await settle(coalescer)
        coalescer.ask("a")
        await settle(coalescer)
        return side_by_side, runs.started

    side_by_side, started = asyncio.run(scenario())
    assert side_by_side == ["a", "b"]
    assert started[2:] == ["a"]


def test_a_failed_run_is_logged_and_later_asks_still_run(caplog):
    async def scenario():
        runs = Runs(fail=True)
        coalescer = Coalescer(runs)
        coalescer.ask("a")
        await asyncio.sleep(0)
        coalescer.ask("a")
        runs.release.set()
        await settle(coalescer)
        coalescer.ask("a")
        await settle(coalescer)
        return runs.started

    assert asyncio.run(scenario()) == ["a", "a", "a"]
    assert "the API server said no" in caplog.text


def test_cancel_stops_the_runs_going():
    async def scenario():
        runs = Runs()
        coalescer = Coalescer(runs)
        coalescer.ask("a")
        await asyncio.sleep(0)
        coalescer.ask("a")
        coalescer.cancel()
        await settle(coalescer)
        return runs.started

    assert asyncio.run(scenario()) == ["a"]
