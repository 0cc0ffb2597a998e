"""Baseline input profiles (recorded at training time) and the drift monitor the server runs.

At training time::

    from modelpilot.serving.baseline import log_baseline_profile

    info = mlflow.sklearn.log_model(model, name="model", input_example=X[:5], registered_model_name="fraud")
    log_baseline_profile(X_train, model_info=info)

writes ``modelpilot_baseline.json`` next to the model's ``MLmodel`` file, so it travels with every
registered version of that model. The profile is small: for each feature, bin edges taken from the
training quantiles (or the most frequent categories) and the proportion of training rows in each bin.

At serving time :class:`DriftMonitor` bins every scored row into the same bins, keeps the last ``window``
rows per feature in a ring buffer of bin indices plus running bin counts, and computes the population
stability index (PSI) of the window against the baseline when Prometheus scrapes. Per request the cost is
one vectorised binning pass over the request's rows and a bin-count update: O(rows x features), no
allocation proportional to the window.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

BASELINE_FILE = "modelpilot_baseline.json"
# Where a profile logged to a run (rather than to a model) lives among the run's artifacts.
RUN_ARTIFACT_DIR = "modelpilot"
FORMAT = "modelpilot.baseline/v1"
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 20
# Proportions are floored at this value before taking logarithms, the usual PSI smoothing.
EPSILON = 1e-4

log = logging.getLogger(__name__)
_UNKNOWN = object()


class ProfileError(ValueError):
    """A baseline profile that cannot be built or read."""


# --------------------------------------------------------------------------------------------------
# Building and logging profiles (training time)
# --------------------------------------------------------------------------------------------------


def build_baseline_profile(
    data: Any, *, bins: int = DEFAULT_BINS, max_categories: int = DEFAULT_MAX_CATEGORIES
) -> dict[str, Any]:
    """A JSON-serialisable profile of ``data`` (a pandas DataFrame, or a 2-D array-like).

    Numeric features get up to ``bins`` quantile bins plus a bin for missing values; other features get
    one bin per category among the ``max_categories`` most frequent, one for every other value and one
    for missing values.
    """
    import pandas as pd

    if bins < 2:
        raise ProfileError(f"bins must be at least 2, got {bins}")
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(np.asarray(data))
    if frame.ndim != 2 or frame.shape[1] == 0 or frame.shape[0] == 0:
        raise ProfileError(f"need a non-empty 2-D table of training inputs, got shape {frame.shape}")
    features = []
    for column in frame.columns:
        series = frame[column]
        name = str(column)
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            features.append(_categorical_feature(name, series, max_categories))
        else:
            features.append(_numeric_feature(name, series, bins))
    return {
        "format": FORMAT,
        "rows": int(frame.shape[0]),
        "positional": not isinstance(data, pd.DataFrame),
        "features": features,
    }


def _numeric_feature(name: str, series: Any, bins: int) -> dict[str, Any]:
    values = np.asarray(series, dtype=np.float64)
    present = values[~np.isnan(values)]
    if present.size:
        quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
        edges = np.unique(quantiles)
    else:
        edges = np.array([], dtype=np.float64)
    counts = np.bincount(_bin_numeric(values, edges), minlength=len(edges) + 2)
    return {
        "name": name,
        "kind": "numeric",
        "edges": [float(e) for e in edges],
        "expected": _proportions(counts),
    }


def _categorical_feature(name: str, series: Any, max_categories: int) -> dict[str, Any]:
    present = series.dropna().astype(str)
    categories = [str(c) for c in present.value_counts().index[:max_categories]]
    lookup = {c: i for i, c in enumerate(categories)}
    counts = np.bincount(_bin_categorical(series, lookup), minlength=len(categories) + 2)
    return {
        "name": name,
        "kind": "categorical",
        "categories": categories,
        "expected": _proportions(counts),
    }


def _proportions(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [float(c) / total for c in counts] if total else [0.0] * len(counts)


def save_baseline_profile(profile: Mapping[str, Any], path: str) -> str:
    """Write ``profile`` as JSON to ``path`` (a file, or a directory that receives BASELINE_FILE)."""
    if os.path.isdir(path):
        path = os.path.join(path, BASELINE_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(profile, handle, indent=1)
    return path


def log_baseline_profile(
    data: Any,
    *,
    model_info: Any = None,
    model_id: str | None = None,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> dict[str, Any]:
    """Profile ``data`` and log it where the model server finds it; returns the profile.

    The profile is written as ``modelpilot_baseline.json`` into the artifacts of the logged model
    (``model_info`` from ``log_model``, or ``model_id``, or else MLflow's last logged model), so every
    model version registered from that model carries it. When a run is active it is also logged to the
    run as ``modelpilot/modelpilot_baseline.json``; the fetch step falls back to that copy for versions
    whose model has none.
    """
    import mlflow

    profile = build_baseline_profile(data, bins=bins, max_categories=max_categories)
    if model_id is None and model_info is not None:
        model_id = getattr(model_info, "model_id", None)
    if model_id is None:
        last = mlflow.last_logged_model()
        model_id = last.model_id if last is not None else None
    run = mlflow.active_run()
    if model_id is None and run is None:
        raise ProfileError("no model to attach the baseline profile to: pass model_info= or start a run")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_baseline_profile(profile, os.path.join(tmp, BASELINE_FILE))
        if model_id is not None:
            mlflow.MlflowClient().log_model_artifact(model_id, path)
        if run is not None:
            mlflow.log_artifact(path, artifact_path=RUN_ARTIFACT_DIR)
    return profile


def load_baseline_profile(path: str) -> dict[str, Any]:
    """Read and validate a profile file; raises ProfileError saying what is wrong."""
    try:
        with open(path, encoding="utf-8") as handle:
            profile = json.load(handle)
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read baseline profile {path}: {exc}") from exc
    if not isinstance(profile, dict) or profile.get("format") != FORMAT:
        raise ProfileError(f"{path} is not a {FORMAT} profile")
    features = profile.get("features")
    if not isinstance(features, list) or not features:
        raise ProfileError(f"{path} lists no features")
    for feature in features:
        kind = feature.get("kind")
        width = len(feature.get("edges", [])) + 2 if kind == "numeric" else len(feature.get("categories", [])) + 2
        if kind not in ("numeric", "categorical") or len(feature.get("expected", [])) != width:
            raise ProfileError(f"{path}: feature {feature.get('name')!r} is malformed")
    return profile


# --------------------------------------------------------------------------------------------------
# Binning, shared by profile building and the monitor so both bin values identically
# --------------------------------------------------------------------------------------------------


def _bin_numeric(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin i < len(edges)+1 holds edges[i-1] < x <= edges[i]; the last bin holds missing values."""
    bins = np.searchsorted(edges, values, side="left")
    bins[np.isnan(values)] = len(edges) + 1
    return bins


def _bin_categorical(values: Any, lookup: Mapping[str, int]) -> np.ndarray:
    """One bin per known category, then "other", then missing."""
    other, missing = len(lookup), len(lookup) + 1
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out[i] = missing
        else:
            out[i] = lookup.get(str(value), other)
    return out


def psi(actual_counts: np.ndarray, expected: np.ndarray) -> float:
    """Population stability index of observed bin counts against expected proportions."""
    total = actual_counts.sum()
    if total == 0:
        return 0.0
    actual = np.maximum(actual_counts / total, EPSILON)
    expected = np.maximum(expected, EPSILON)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


# --------------------------------------------------------------------------------------------------
# The serving-time monitor
# --------------------------------------------------------------------------------------------------


class DriftMonitor:
    """PSI of the last ``window`` scored rows against a baseline profile, per feature and overall.

    Thread-safe: ``observe`` runs on the scoring threads, ``scores`` on the metrics scrape.
    """

    def __init__(
        self, profile: Mapping[str, Any], *, window: int = 1000, min_rows: int = 50, batch_rows: int = 256
    ) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self.window = window
        self.batch_rows = max(1, min(batch_rows, window))
        self._pending: list[np.ndarray] = []  # float matrices or int bin arrays, oldest first
        self._pending_rows = 0
        self.min_rows = min(min_rows, window)
        self.positional = bool(profile.get("positional"))
        self.names = [f["name"] for f in profile["features"]]
        self._kinds = [f["kind"] for f in profile["features"]]
        self._edges = [np.asarray(f.get("edges", []), dtype=np.float64) for f in profile["features"]]
        self._lookups = [{c: i for i, c in enumerate(f.get("categories", []))} for f in profile["features"]]
        widths = [len(f["expected"]) for f in profile["features"]]
        self._width = max(widths)
        n = len(self.names)
        # Expected proportions padded to a common width; padding bins are never hit.
        self._expected = np.zeros((n, self._width))
        self._valid = np.zeros((n, self._width), dtype=bool)
        for i, feature in enumerate(profile["features"]):
            self._expected[i, : widths[i]] = feature["expected"]
            self._valid[i, : widths[i]] = True
        self._missing_bin = np.asarray([w - 1 for w in widths], dtype=np.int64)
        # Flat bin ids (feature * width + bin) of the rows in the window, oldest overwritten first.
        self._ring = np.zeros((window, n), dtype=np.int64)
        self._offsets = np.arange(n, dtype=np.int64) * self._width
        self._counts = np.zeros(n * self._width, dtype=np.int64)
        self._filled = 0
        self._next = 0
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._all_numeric = all(kind == "numeric" for kind in self._kinds)
        self._padded_edges = np.full((n, max((len(e) for e in self._edges), default=0)), np.inf)
        for i, edges in enumerate(self._edges):
            self._padded_edges[i, : len(edges)] = edges
        self._orders: dict[tuple, Any] = {}  # column order of request tables -> profile order (or False)

    @property
    def rows(self) -> int:
        """Rows in the window (after folding in any pending ones)."""
        with self._lock:
            self._flush_locked()
            return self._filled

    def observe(self, data: Any) -> None:
        """Add the rows of one scoring request (DataFrame, 2-D array, or dict of columns) to the window.

        Numeric tables are only converted to a float matrix here and queued; binning and the window
        update run once per ``batch_rows`` queued rows (or at scrape time), as one vectorised pass, so
        numpy's fixed per-call cost is paid per batch rather than per request.
        """
        pending = self._numeric_matrix(data) if self._all_numeric else None
        if pending is None:
            pending = self._bin(data)  # general path: bin now, queue the bin indices
            if pending is None:
                return
        if not len(pending):
            return
        if len(pending) > self.window:
            pending = pending[-self.window :]
        with self._lock:
            self._pending.append(pending)
            self._pending_rows += len(pending)
            if self._pending_rows >= self.batch_rows:
                self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        parts = [self._bin_matrix(p) if p.dtype.kind == "f" else p for p in self._pending]
        self._pending.clear()
        self._pending_rows = 0
        bins = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if len(bins) > self.window:
            bins = bins[-self.window :]
        flat = bins + self._offsets
        m = len(flat)
        slots = (self._next + np.arange(m)) % self.window
        evicted = max(0, self._filled + m - self.window)
        if evicted:
            # Slots still empty come first; the last `evicted` slots hold the oldest rows.
            old = self._ring[slots[m - evicted :]]
            self._counts -= np.bincount(old.ravel(), minlength=self._counts.size)
        self._ring[slots] = flat
        self._counts += np.bincount(flat.ravel(), minlength=self._counts.size)
        self._next = (self._next + m) % self.window
        self._filled = min(self.window, self._filled + m)

    def scores(self) -> tuple[float, dict[str, float]] | None:
        """(overall, per-feature PSI), or None while the window holds fewer than ``min_rows`` rows."""
        rows, counts = self.window_counts()
        return None if rows < self.min_rows else self.scores_of(counts)

    def window_counts(self) -> tuple[int, np.ndarray]:
        """Rows in the window and their bin counts (features x bins), pending rows folded in first."""
        with self._lock:
            self._flush_locked()
            return self._filled, self._counts.reshape(len(self.names), self._width).copy()

    def scores_of(self, counts: np.ndarray) -> tuple[float, dict[str, float]]:
        """(overall, per-feature PSI) of a window's bin counts, as `window_counts` gives them: PSI depends on
        the rows only through these counts, so counts summed over several windows score their union."""
        counts = counts.astype(np.float64)
        per_feature = {}
        for i, name in enumerate(self.names):
            valid = self._valid[i]
            per_feature[name] = psi(counts[i, valid], self._expected[i, valid])
        overall = float(np.mean(list(per_feature.values()))) if per_feature else 0.0
        return overall, per_feature

    def _bin_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Bins of a float matrix in profile column order: the same bins as _bin_numeric (the number of
        edges strictly below x), for all features at once; padding edges are +inf and never counted."""
        out = (matrix[:, :, None] > self._padded_edges[None, :, :]).sum(axis=2)
        missing = np.isnan(matrix)
        if missing.any():
            out = np.where(missing, self._missing_bin[None, :], out)
        return out

    def _bin(self, data: Any) -> np.ndarray | None:
        if self._all_numeric:
            matrix = self._numeric_matrix(data)
            if matrix is not None:
                return self._bin_matrix(matrix)
        columns = self._columns(data)
        if columns is None:
            return None
        rows = len(columns[0]) if columns else 0
        out = np.empty((rows, len(self.names)), dtype=np.int64)
        for i, values in enumerate(columns):
            if values is None:
                out[:, i] = self._missing_bin[i]
            elif self._kinds[i] == "numeric":
                try:
                    numeric = np.asarray(values, dtype=np.float64)
                except (TypeError, ValueError):
                    numeric = np.full(rows, np.nan)
                out[:, i] = _bin_numeric(numeric, self._edges[i])
            else:
                out[:, i] = _bin_categorical(values, self._lookups[i])
        return out

    def _numeric_matrix(self, data: Any) -> np.ndarray | None:
        """Fast path for the common case, a numeric table holding every profiled column: one conversion
        of the whole table instead of one pandas column access per feature."""
        import pandas as pd

        if isinstance(data, np.ndarray):
            matrix = data
        elif isinstance(data, pd.DataFrame):
            key = tuple(data.columns)
            order = self._orders.get(key, _UNKNOWN)
            if order is _UNKNOWN:
                names = [str(c) for c in key]
                if self.positional and not set(names) & set(self.names):
                    order = np.arange(len(names)) if len(names) == len(self.names) else False
                else:
                    position = {name: i for i, name in enumerate(names)}
                    order = np.asarray([position[n] for n in self.names]) if all(n in position for n in self.names) else False
                if order is not False and len(order) == len(names) and (order == np.arange(len(names))).all():
                    order = None  # already in profile order: no column selection needed
                if len(self._orders) < 64:
                    self._orders[key] = order
            if order is False:
                return None
            try:
                matrix = data.to_numpy(dtype=np.float64)
            except (TypeError, ValueError):
                return None
            return matrix if order is None else matrix[:, order]
        else:
            return None
        if matrix.ndim != 2 or matrix.shape[1] != len(self.names):
            return None
        try:
            return np.array(matrix, dtype=np.float64)
        except (TypeError, ValueError):
            return None

    def _columns(self, data: Any) -> list[Any] | None:
        """The request's values for each profiled feature, in profile order (None for absent ones)."""
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            if self.positional and not any(str(c) in self.names for c in data.columns):
                if data.shape[1] != len(self.names):
                    return self._unusable("a table whose columns do not match the baseline's")
                return [data.iloc[:, i].to_numpy() for i in range(data.shape[1])]
            by_name = {str(c): c for c in data.columns}
            present = [by_name.get(name) for name in self.names]
            if all(c is None for c in present):
                return self._unusable("a table with none of the baseline's columns")
            return [data[c].to_numpy() if c is not None else None for c in present] if len(data) else None
        if isinstance(data, dict):
            if not all(name in data for name in self.names):
                return self._unusable("a dict of inputs not keyed by the baseline's features")
            return [np.asarray(data[name]).reshape(-1) for name in self.names]
        if isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == len(self.names):
            return [data[:, i] for i in range(data.shape[1])]
        return self._unusable(f"inputs of type {type(data).__name__}")

    def _unusable(self, what: str) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning("drift: cannot match %s to the baseline profile; such requests are not profiled", what)
        return None
