"""Manual requests read from the annotation, and the plugin's status text."""

from __future__ import annotations

from datetime import datetime, timezone

from modelpilot.cli import render, render_history
from modelpilot.rollout.canary import Request
from modelpilot.rollout.requests import REQUEST_ANNOTATION, encode, pending


def test_a_request_round_trips_through_its_annotation():
    assert pending({REQUEST_ANNOTATION: encode("r1", "promote", full=True)}) == (Request("r1", "promote", True),)
    assert pending({"other": "x"}) == () and pending(None) == ()


def test_a_value_that_is_not_a_request_is_reported_once_under_a_stable_id():
    (first,) = pending({REQUEST_ANNOTATION: "promote please"})
    (again,) = pending({REQUEST_ANNOTATION: "promote please"})
    assert first == again and first.action == "malformed" and first.id.startswith("malformed-")


def test_status_text_names_versions_step_weights_and_recent_events():
    body = {
        "metadata": {"name": "fraud", "namespace": "ml"},
        "spec": {"rollout": {"steps": [{"setWeight": 25}, {"pause": {"duration": "20s"}}, {"setWeight": 50}]}},
        "status": {
            "phase": "Progressing", "message": "canary version 2: step 2/3: paused, 12s left",
            "model": {"name": "fraud-detector", "version": "2", "alias": "champion"},
            "stable": {"version": "1", "deployment": "fraud", "replicas": 2, "readyReplicas": 2},
            "canary": {"version": "2", "deployment": "fraud-canary", "replicas": 1, "readyReplicas": 1, "weight": 33},
            "rollout": {"phase": "Paused", "stepIndex": 1, "requestedWeight": 25, "message": "step 2/3: paused, 12s left"},
        },
    }  # fmt: skip
    event = {"type": "Normal", "reason": "RolloutStep", "message": "step 2/3: pause for 20s",
             "lastTimestamp": "2026-11-27T10:00:00Z"}  # fmt: skip
    text = render(body, [event], now=datetime(2026, 11, 27, 10, 0, 8, tzinfo=timezone.utc))
    assert "fraud (ml): Progressing" in text
    assert "model    fraud-detector alias champion -> version 2" in text
    assert "stable   version 1  2/2 ready" in text
    assert "canary   version 2  1/1 ready  weight: asked 25%, effective 33%" in text
    assert "step     2/3 [######..............] pause 20s" in text
    assert "8s  Normal   RolloutStep" in text


def test_history_text_lists_the_rollout_under_way_then_past_ones_newest_first():
    body = {
        "metadata": {"name": "fraud", "namespace": "ml"},
        "status": {"rollout": {
            "phase": "Paused", "stableVersion": "3", "canaryVersion": "4", "message": "step 2/3: paused",
            "history": [
                {"version": "2", "previousVersion": "1", "outcome": "Promoted", "reason": "every stable pod runs it",
                 "startedAt": "2026-11-27T10:00:00.000Z", "finishedAt": "2026-11-27T10:02:05.500Z"},
                {"version": "3", "previousVersion": "2", "outcome": "Aborted", "reason": "aborted by request r1",
                 "startedAt": "2026-11-27T11:00:00.000Z", "finishedAt": "2026-11-27T11:00:42.000Z"},
            ],
        }},
    }  # fmt: skip
    header, current, aborted, promoted = render_history(body).splitlines()
    assert header.split() == ["VERSION", "FROM", "OUTCOME", "DURATION", "FINISHED", "REASON"]
    assert current.split()[:4] == ["4", "3", "Paused", "-"] and current.endswith("step 2/3: paused")
    assert aborted.split()[:4] == ["3", "2", "Aborted", "42s"] and aborted.endswith("aborted by request r1")
    assert promoted.split()[:4] == ["2", "1", "Promoted", "2m05s"]
    assert render_history({"metadata": {"name": "fraud"}, "status": {}}) == "fraud: no rollouts yet"


def test_status_text_shows_the_analysis_counts_and_the_latest_verdicts():
    measurement = {"at": "2026-11-27T10:00:06Z", "bound": "max 0.05"}
    body = {
        "metadata": {"name": "scorer", "namespace": "ml"}, "spec": {"rollout": {"steps": [{"setWeight": 50}, {"analysis": {}}]}},
        "status": {"phase": "Progressing", "rollout": {"phase": "Baking", "message": "version 2 bakes, 40s left", "analysis": {
            "failures": 1, "inconclusive": 0, "passed": 0, "nextMeasurementAt": "2026-11-27T10:00:16Z",
            "measurements": [{**measurement, "at": "2026-11-27T09:59:56Z", "check": "errors", "verdict": "Pass", "value": 0.0},
                             {**measurement, "check": "errors", "verdict": "Fail", "value": 0.31, "reason": "errors 0.31 > max 0.05"},
                             {**measurement, "check": "drift", "verdict": "Pass", "value": 0.02}]}}},
    }  # fmt: skip
    lines = render(body, []).splitlines()
    assert "  analysis 1 failed, 0 inconclusive, 0 passed at this step; next at 2026-11-27T10:00:16Z" in lines
    assert lines[-2:] == ["           errors: Fail 0.31 (max 0.05)  errors 0.31 > max 0.05", "           drift: Pass 0.02 (max 0.05)"]
