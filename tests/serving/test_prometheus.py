"""A real Prometheus scrapes the real model server: the error-rate and latency queries canary analysis
will run give the numbers the traffic produced, labelled with deployment, version and track."""

from __future__ import annotations

import pytest

from .conftest import RegisteredModels, ServerProcess, split

pytestmark = pytest.mark.prometheus


def test_prometheus_sees_error_rate_and_latency_per_track(
    prometheus, main_server: ServerProcess, registered: RegisteredModels
):
    prometheus.scrape(f"127.0.0.1:{main_server.port}")
    selector = '{deployment="fraud",model_version="1",track="canary"}'
    prometheus.wait_for_value(f"sum(modelpilot_requests_total{selector})", lambda v: v >= 0, "a first scrape")
    before = float(prometheus.query(f"sum(modelpilot_requests_total{selector})")[0]["value"][1])

    rows = split(registered.holdout.iloc[:10])
    for _ in range(30):
        assert main_server.client.post("/invocations", json=rows).status_code == 200
    for _ in range(10):
        bad = main_server.client.post("/invocations", json={"dataframe_split": {"columns": ["x"], "data": [[1]]}})
        assert bad.status_code == 400

    total, labels = prometheus.wait_for_value(
        f"sum by (deployment, model_version, track) (modelpilot_requests_total{selector})",
        lambda v: v - before >= 40, "40 more scoring requests",
    )
    assert total - before == 40
    assert (labels["deployment"], labels["model_version"], labels["track"]) == ("fraud", "1", "canary")
    errors, _ = prometheus.wait_for_value(
        'sum(modelpilot_requests_total{code=~"4..|5..",track="canary"})', lambda v: v >= 10, "10 errors"
    )
    assert errors >= 10
    # The canary's error ratio over the window, as an analysis check computes it.
    ratio, _ = prometheus.wait_for_value(
        'sum(increase(modelpilot_requests_total{code!="200",track="canary"}[5m]))'
        ' / sum(increase(modelpilot_requests_total{track="canary"}[5m]))',
        lambda v: v > 0, "a non-zero error ratio",
    )
    assert 0.2 <= ratio <= 0.3  # 10 of 40; increase() extrapolates a little at window edges
    p99, _ = prometheus.wait_for_value(
        'histogram_quantile(0.99, sum by (le) (rate(modelpilot_request_duration_seconds_bucket{track="canary"}[5m])))',
        lambda v: v > 0, "a p99 latency",
    )
    assert p99 < 30  # within the histogram's finite buckets, so a relative check has a number to compare
