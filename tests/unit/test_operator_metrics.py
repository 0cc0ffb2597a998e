"""The operator's own series: phase counts, canary weight and step following the objects; pool depths."""

from __future__ import annotations

import asyncio
import threading

from prometheus_client import REGISTRY

from modelpilot.metrics import ObjectGauges
from modelpilot.pools import Slots, ThreadPool


def sample(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def test_phases_are_counted_and_canary_series_follow_the_rollout_then_the_object():
    gauges = ObjectGauges()
    gauges.record("ml", "fraud", "Progressing", weight=25, step=0)
    gauges.record("ml", "scorer", "Ready", weight=0, step=None)
    assert sample("modelpilot_modeldeployments", phase="Progressing") == 1
    assert sample("modelpilot_modeldeployments", phase="Ready") == 1
    assert sample("modelpilot_modeldeployments", phase="Failed") == 0
    assert (sample("modelpilot_canary_weight", namespace="ml", name="fraud"), sample("modelpilot_canary_step", namespace="ml", name="fraud")) == (25, 0)
    assert sample("modelpilot_canary_step", namespace="ml", name="scorer") is None
    # Promoted: no canary, so no step; then deleted: no series at all.
    gauges.record("ml", "fraud", "Ready", weight=0, step=None)
    assert sample("modelpilot_modeldeployments", phase="Ready") == 2 and sample("modelpilot_modeldeployments", phase="Progressing") == 0
    assert sample("modelpilot_canary_step", namespace="ml", name="fraud") is None
    gauges.forget("ml", "fraud")
    gauges.forget("ml", "fraud")  # a second delete event changes nothing
    assert sample("modelpilot_canary_weight", namespace="ml", name="fraud") is None
    assert sample("modelpilot_modeldeployments", phase="Ready") == 1
    gauges.forget("ml", "scorer")


def test_a_thread_pool_reports_work_waiting_and_busy_and_forgets_a_cancelled_wait():
    pool = ThreadPool("test-threads", workers=1)
    release = threading.Event()

    async def go():
        first = asyncio.ensure_future(pool.run(release.wait, 5))
        second = asyncio.ensure_future(pool.run(lambda: "second"))
        third = asyncio.ensure_future(pool.run(lambda: "third"))
        await asyncio.sleep(0.2)
        depth = sample("modelpilot_pool_waiting", pool="test-threads"), sample("modelpilot_pool_busy", pool="test-threads")
        third.cancel()  # given up while still queued: it must not count as waiting any longer
        await asyncio.sleep(0)
        after_cancel = sample("modelpilot_pool_waiting", pool="test-threads")
        release.set()
        return depth, after_cancel, await first, await second

    depth, after_cancel, first, second = asyncio.run(go())
    assert depth == (2, 1)
    assert after_cancel == 1
    assert (first, second) == (True, "second")
    assert (sample("modelpilot_pool_waiting", pool="test-threads"), sample("modelpilot_pool_busy", pool="test-threads")) == (0, 0)
    assert sample("modelpilot_pool_size", pool="test-threads") == 1


def test_slots_report_holders_waiting_and_busy():
    slots = Slots("test-slots", size=1)

    async def go():
        release = asyncio.Event()

        async def hold():
            async with slots.held():
                await release.wait()

        holders = [asyncio.ensure_future(hold()) for _ in range(3)]
        await asyncio.sleep(0.05)
        depth = sample("modelpilot_pool_waiting", pool="test-slots"), sample("modelpilot_pool_busy", pool="test-slots")
        release.set()
        await asyncio.gather(*holders)
        return depth

    assert asyncio.run(go()) == (2, 1)
    assert (sample("modelpilot_pool_waiting", pool="test-slots"), sample("modelpilot_pool_busy", pool="test-slots")) == (0, 0)
