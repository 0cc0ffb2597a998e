"""The canary state survives the trip through status, and the spec's steps read as the state machine's."""

from __future__ import annotations

import pytest

from modelpilot.api import ModelDeploymentSpec, ModelDeploymentStatus
from modelpilot.api.base import seconds
from modelpilot.rollout import records
from modelpilot.rollout.canary import Analysis, CanaryState, Finished, Pause, Rejection, SetWeight


@pytest.mark.parametrize("text, expected", [("20s", 20), ("1m30s", 90), ("250ms", 0.25), ("1h", 3600), ("1.5m", 90)])
def test_durations(text, expected):
    assert seconds(text) == expected


def test_spec_steps_read_as_state_machine_steps():
    spec = ModelDeploymentSpec.model_validate({
        "model": {"name": "m", "alias": "champion"},
        "mlflow": {"trackingUri": "http://mlflow"},
        "rollout": {"steps": [
            {"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50, "canaryReplicas": 2},
            {"pause": {}}, {"analysis": {}}, {"analysis": {"duration": "2m"}},
        ], "analysis": {"interval": "30s", "count": 3}},
    })  # fmt: skip
    # An analysis step takes analysis.count measurements, or one per interval of its duration.
    assert records.steps(spec.rollout) == (
        SetWeight(25), Pause(20.0), SetWeight(50, 2), Pause(None), Analysis((), 3), Analysis((), 4)
    )


def test_a_state_round_trips_through_the_status_written_to_the_api_server():
    state = CanaryState(
        phase="Paused", stable_version="1", canary_version="2", step_index=1,
        step_started_at=1_790_000_000.125, pause_started_at=1_790_000_005.5, paused_manually=True,
        requested_weight=25, canary_replicas_override=1, last_promoted="1",
        rejected=(Rejection("3", "aborted by request r1", 4),), handled_requests=("r1", "r2"), generation=5,
        message="canary version 2: step 2/4: paused, 15s left", started_at=1_789_999_990.0,
        history=(Finished("3", "1", "Aborted", "aborted by request r1", 1_789_999_000.0, 1_789_999_100.25),),
    )  # fmt: skip
    wire = ModelDeploymentStatus(rollout=records.to_status(state)).to_wire()
    assert wire["rollout"]["stepStartedAt"] == "2026-09-21T14:13:20.125Z"
    read_back = ModelDeploymentStatus.model_validate(wire).rollout
    assert records.from_status(read_back) == state
    assert records.from_status(None) is None
