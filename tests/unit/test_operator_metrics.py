"""The operator's per-object series: phase counts, canary weight and step, following the objects."""

from __future__ import annotations

from prometheus_client import REGISTRY

from modelpilot.metrics import ObjectGauges


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
