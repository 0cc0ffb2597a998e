"""Baseline profiles and the sliding-window PSI monitor (pure computation, no I/O but temp files)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from modelpilot.serving.baseline import (
    DriftMonitor,
    ProfileError,
    _bin_numeric,
    build_baseline_profile,
    load_baseline_profile,
    psi,
    save_baseline_profile,
)


@pytest.fixture
def training() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 4000),
            "age": rng.integers(18, 90, 4000).astype(float),
            "country": rng.choice(["fr", "de", "it", "es"], 4000, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


def test_profile_has_quantile_bins_and_proportions(training):
    profile = build_baseline_profile(training, bins=10)
    amount, age, country = profile["features"]
    assert amount["kind"] == "numeric" and len(amount["edges"]) == 9
    assert len(amount["expected"]) == 11  # ten bins plus "missing"
    assert np.isclose(sum(amount["expected"]), 1.0)
    assert max(amount["expected"][:10]) < 0.12  # quantile bins hold about a tenth each
    assert amount["expected"][10] == 0.0
    assert country["kind"] == "categorical" and country["categories"][0] == "fr"
    assert len(country["expected"]) == 4 + 2  # categories, "other", "missing"
    assert age["name"] == "age"


def test_profile_round_trips_and_bad_files_are_rejected(training, tmp_path):
    path = save_baseline_profile(build_baseline_profile(training), str(tmp_path))
    assert load_baseline_profile(path)["features"][0]["name"] == "amount"
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(ProfileError, match="is not a"):
        load_baseline_profile(str(tmp_path / "bad.json"))
    with pytest.raises(ProfileError, match="non-empty"):
        build_baseline_profile(pd.DataFrame())


def test_psi_is_zero_for_identical_distributions_and_grows_with_shift():
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    assert psi(np.array([100, 100, 100, 100]), expected) == pytest.approx(0.0)
    small = psi(np.array([110, 100, 95, 95]), expected)
    large = psi(np.array([10, 40, 100, 250]), expected)
    assert 0 < small < 0.01 < 0.25 < large
    assert psi(np.array([0, 0, 0, 0]), expected) == 0.0


def brute_force_counts(monitor: DriftMonitor, rows: pd.DataFrame) -> np.ndarray:
    """Bin counts of the last `window` rows, recomputed from scratch."""
    fresh = DriftMonitor(
        {"format": "x", "positional": monitor.positional, "features": _features(monitor)},
        window=monitor.window,
    )
    fresh.observe(rows.iloc[-monitor.window :])
    assert fresh.rows == min(len(rows), monitor.window)
    return fresh._counts.copy()


def _features(monitor: DriftMonitor) -> list[dict]:
    out = []
    for i, name in enumerate(monitor.names):
        width = int(monitor._valid[i].sum())
        feature = {"name": name, "kind": monitor._kinds[i], "expected": list(monitor._expected[i, :width])}
        if monitor._kinds[i] == "numeric":
            feature["edges"] = list(monitor._edges[i])
        else:
            feature["categories"] = list(monitor._lookups[i])
        out.append(feature)
    return out


@pytest.mark.parametrize("numeric_only", [False, True])
@pytest.mark.parametrize("batch", [1, 7, 64, 250, 900])
def test_sliding_window_counts_match_a_recount(training, batch, numeric_only):
    if numeric_only:  # the queued fast path rather than per-request binning
        training = training[["amount", "age"]]
    monitor = DriftMonitor(build_baseline_profile(training), window=250, min_rows=10, batch_rows=100)
    data = training.sample(frac=1, random_state=1).reset_index(drop=True)
    seen = 0
    for start in range(0, 1300, batch):
        chunk = data.iloc[start : start + batch]
        monitor.observe(chunk)
        seen = start + len(chunk)
        assert monitor.rows == min(seen, 250)  # also folds pending rows into the window
        np.testing.assert_array_equal(monitor._counts, brute_force_counts(monitor, data.iloc[:seen]))
    assert monitor.rows == 250
    assert monitor._counts.reshape(training.shape[1], -1).sum(axis=1).tolist() == [250] * training.shape[1]


def test_drift_low_on_baseline_like_data_high_on_shifted(training):
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(build_baseline_profile(training), window=1000, min_rows=100)
    assert monitor.scores() is None  # nothing exported before the window has enough rows
    like = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, 1000),
            "age": rng.integers(18, 90, 1000).astype(float),
            "country": rng.choice(["fr", "de", "it", "es"], 1000, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )
    for start in range(0, 1000, 20):
        monitor.observe(like.iloc[start : start + 20])
    overall, features = monitor.scores()
    assert overall < 0.05 and max(features.values()) < 0.05, features

    shifted = like.copy()
    shifted["amount"] *= 3
    shifted["country"] = rng.choice(["fr", "us"], 1000)
    for start in range(0, 1000, 20):
        monitor.observe(shifted.iloc[start : start + 20])
    overall, features = monitor.scores()
    assert features["amount"] > 0.25 and features["country"] > 0.25 and features["age"] < 0.05, features
    assert overall == pytest.approx(np.mean(list(features.values())))


def test_fast_and_general_paths_bin_identically(training):
    numeric = training[["amount", "age"]].copy()
    numeric.loc[3, "amount"] = np.nan
    monitor = DriftMonitor(build_baseline_profile(numeric), window=100)
    reordered = numeric[["age", "amount"]].iloc[:50]
    fast = monitor._bin(reordered)
    columns = monitor._columns(reordered)  # the per-column path, used for mixed-type tables
    slow = np.column_stack([_bin_numeric(np.asarray(c, float), monitor._edges[i]) for i, c in enumerate(columns)])
    np.testing.assert_array_equal(fast, slow)
    assert fast[3, 0] == len(monitor._edges[0]) + 1  # profile order: amount first; NaN lands in the missing bin


def test_inputs_that_do_not_match_the_profile_are_skipped_with_one_warning(training, caplog):
    monitor = DriftMonitor(build_baseline_profile(training), window=100, min_rows=1)
    for _ in range(3):
        monitor.observe(pd.DataFrame({"other": [1.0, 2.0]}))
        monitor.observe("a string")
    assert monitor.rows == 0
    warnings = [r for r in caplog.records if "cannot match" in r.getMessage()]
    assert len(warnings) == 2  # one per kind of input, not one per request
    monitor.observe(np.asarray(training.iloc[:5]))  # positional 2-D arrays work
    monitor.observe(training.iloc[:5].to_dict(orient="list"))  # and dicts of columns
    assert monitor.rows == 10


def test_positional_profiles_from_arrays(training):
    array = training[["amount", "age"]].to_numpy()
    profile = build_baseline_profile(array)
    assert profile["positional"] and [f["name"] for f in profile["features"]] == ["0", "1"]
    monitor = DriftMonitor(profile, window=50, min_rows=1)
    monitor.observe(pd.DataFrame(array[:20], columns=["a", "b"]))
    monitor.observe(array[20:40])
    assert monitor.rows == 40
