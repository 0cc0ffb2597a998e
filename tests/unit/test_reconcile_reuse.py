"""When an owned object changes, the last resolution is reused only if it answers the current spec."""

from __future__ import annotations

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.rollout.plan import resolved_for
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.plan import Observations, plan
from modelpilot.rollout.tracks import TrackObservation

SPEC = ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": "http://mlflow:5000"}})
V1 = ResolvedModel(name="m", version="1", source="s")
SERVING = TrackObservation("m", "1", 1, 1, 1, 1, 1, True)


def test_a_resolution_of_the_current_generation_is_reused():
    status = plan(SPEC, ModelDeploymentStatus(), Observations(generation=1, now="t", resolution=Resolution(model=V1), stable=SERVING)).status
    assert resolved_for(status, 1)
    assert not resolved_for(status, 2)  # the spec changed since


def test_the_last_good_version_kept_through_a_failure_is_not_a_resolution():
    good = plan(SPEC, ModelDeploymentStatus(), Observations(generation=1, now="t", resolution=Resolution(model=V1), stable=SERVING)).status
    failure = Resolution.failed("VersionNotFound", "no version 42", False)
    degraded = plan(SPEC, good, Observations(generation=2, now="t", resolution=failure, stable=SERVING)).status
    assert degraded.model == V1 and degraded.observed_generation == 2
    # Reusing it on pod churn would report Ready for a spec that names a missing version.
    assert not resolved_for(degraded, 2)
