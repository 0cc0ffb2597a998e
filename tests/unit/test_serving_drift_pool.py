"""Drift pooled over worker processes: the sum of the workers' windows scores as one window of their rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from modelpilot.serving.baseline import DriftMonitor, build_baseline_profile
from modelpilot.serving.drift_pool import PooledDrift, forget


@pytest.fixture
def profile() -> dict:
    rng = np.random.default_rng(0)
    training = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 4000),
            "age": rng.integers(18, 90, 4000).astype(float),
            "country": rng.choice(["fr", "de", "it", "es"], 4000, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    return build_baseline_profile(training)


def served(n: int, seed: int = 1) -> pd.DataFrame:
    """Rows unlike the training data, so every feature has a PSI well above zero."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3.5, 1, n),
            "age": rng.integers(30, 90, n).astype(float),
            "country": rng.choice(["fr", "de", "us"], n),
        }
    )


def workers(profile: dict, directory, count: int, window: int, min_rows: int = 1) -> list[PooledDrift]:
    """`count` workers' pools, each over its share of `window`, as the server sets them up."""
    share = -(-window // count)
    return [
        PooledDrift(DriftMonitor(profile, window=share, min_rows=min_rows), str(directory), min_rows=min_rows, pid=pid)
        for pid in range(1000, 1000 + count)
    ]


def test_pooled_psi_equals_one_window_of_the_same_rows(profile, tmp_path):
    rows = served(900)
    single = DriftMonitor(profile, window=1000, min_rows=1)
    pools = workers(profile, tmp_path, 3, window=1000)
    rng = np.random.default_rng(2)
    for start in range(0, len(rows), 30):  # requests of 30 rows, each to a worker chosen at random
        request = rows.iloc[start : start + 30]
        single.observe(request)
        pools[rng.integers(3)].monitor.observe(request)
    for pool in pools[1:]:
        pool.publish()
    assert [p.monitor.rows for p in pools] != [300, 300, 300]  # the load was uneven
    pooled, expected = pools[0].scores(), single.scores()
    assert pooled == expected  # exactly: the same bin counts give the same floats
    assert min(expected[1].values()) > 0.01


def test_equal_shares_of_alternating_requests_slide_like_one_window(profile, tmp_path):
    rows = served(3000)
    single = DriftMonitor(profile, window=1000, min_rows=1)
    pools = workers(profile, tmp_path, 2, window=1000)
    for number, start in enumerate(range(0, len(rows), 20)):
        request = rows.iloc[start : start + 20]
        single.observe(request)
        pools[number % 2].monitor.observe(request)
        if number == 40:  # part-way, an earlier window is published; it is replaced, not added
            pools[1].publish()
    pools[1].publish()
    # Each worker's last 500 rows are its half of the last 1,000 rows served.
    assert pools[0].scores() == single.scores()


def test_the_pooled_window_needs_min_rows_in_total(profile, tmp_path):
    pools = workers(profile, tmp_path, 2, window=1000, min_rows=50)
    for pool, rows in zip(pools, (served(30, seed=3), served(30, seed=4))):
        pool.monitor.observe(rows)
    assert pools[0].monitor.scores() is None and pools[1].monitor.scores() is None
    assert pools[0].scores() is None  # the other worker has not published yet: 30 rows
    pools[1].publish()
    assert pools[0].scores() is not None  # 60 rows together


def test_a_dead_workers_window_leaves_the_pool(profile, tmp_path):
    pools = workers(profile, tmp_path, 2, window=1000)
    pools[0].monitor.observe(served(200, seed=5))
    pools[1].monitor.observe(served(200, seed=6).assign(country="it"))
    pools[1].publish()
    assert pools[0].scores() != pools[0].monitor.scores()
    forget(str(tmp_path), 1001)
    assert pools[0].scores() == pools[0].monitor.scores()
    forget(str(tmp_path), 1001)  # already gone: nothing to do
