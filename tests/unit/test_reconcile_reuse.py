"""When an owned object changes, the last resolution is reused only if it answers the current spec."""

from __future__ import annotations

from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.reconcile import _resolved_for
from modelpilot.rollout.plan import Observations, ResolveFailure, TrackObservation, plan

V1 = ResolvedModel(name="m", version="1", source="s")
SERVING = TrackObservation("m", "1", 1, 1, 1, 1, 1, True)


def test_a_resolution_of_the_current_generation_is_reused():
    status = plan(ModelDeploymentStatus(), Observations(generation=1, now="t", resolved=V1, stable=SERVING)).status
    assert _resolved_for(status, 1)
    assert not _resolved_for(status, 2)  # the spec changed since


def test_the_last_good_version_kept_through_a_failure_is_not_a_resolution():
    good = plan(ModelDeploymentStatus(), Observations(generation=1, now="t", resolved=V1, stable=SERVING)).status
    failure = ResolveFailure("VersionNotFound", "no version 42", False)
    degraded = plan(good, Observations(generation=2, now="t", failure=failure, stable=SERVING)).status
    assert degraded.model == V1 and degraded.observed_generation == 2
    # Reusing it on pod churn would report Ready for a spec that names a missing version.
    assert not _resolved_for(degraded, 2)
