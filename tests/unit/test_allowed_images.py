"""The operator-wide allow-list of runtime images: the decision, the setting, and what the plan makes of it."""

from __future__ import annotations

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ModelDeploymentStatus, ResolvedModel
from modelpilot.reconcile import _screen_image
from modelpilot.rollout.conditions import Notice, get_condition, notices
from modelpilot.rollout.images import IMAGE_NOT_ALLOWED, image_allowed, image_refusal
from modelpilot.registry.resolution import Resolution
from modelpilot.rollout.plan import Observations, plan
from modelpilot.rollout.tracks import TrackObservation
from modelpilot.settings import Settings

OURS = ("ghcr.io/modelpilot/*", "registry.example/ml/runtime:*")
SPEC = ModelDeploymentSpec.model_validate({"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": "http://mlflow:5000"}})
V1 = ResolvedModel(name="m", version="1", source="s")
V2 = ResolvedModel(name="m", version="2", source="s")


def test_no_patterns_allow_every_image():
    assert image_allowed("anything.example/evil:latest", ())
    assert image_refusal("anything.example/evil:latest", ()) is None


def test_images_must_match_a_pattern_as_written():
    assert image_allowed("ghcr.io/modelpilot/runtime:0.1.0", OURS)
    assert image_allowed("registry.example/ml/runtime:2@sha256:" + "a" * 64, OURS)
    assert not image_allowed("registry.example/ml/other:2", OURS)
    assert not image_allowed("ghcr.io/modelpilot-fork/runtime:1", OURS)
    assert not image_allowed("GHCR.IO/modelpilot/runtime:1", OURS)  # no case folding
    # No registry defaulting: the short name is not docker.io/library/runtime.
    assert not image_allowed("runtime:1", ("docker.io/library/runtime:*",))


def test_a_refusal_names_the_image_and_the_patterns():
    refusal = image_refusal("evil.example/miner:1", OURS)
    assert refusal.reason == IMAGE_NOT_ALLOWED and not refusal.retryable
    assert "'evil.example/miner:1'" in refusal.message
    assert "ghcr.io/modelpilot/*, registry.example/ml/runtime:*" in refusal.message


def test_the_setting_is_a_comma_separated_list():
    assert Settings.from_env({}).allowed_images == ()
    assert Settings.from_env({"MODELPILOT_ALLOWED_IMAGES": ""}).allowed_images == ()
    parsed = Settings.from_env({"MODELPILOT_ALLOWED_IMAGES": " ghcr.io/modelpilot/* ,, registry.example/ml/runtime:*,"})
    assert parsed.allowed_images == OURS


def spec(image: str | None = None) -> ModelDeploymentSpec:
    runtime = {"image": image} if image else {}
    return ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "version": "2"}, "mlflow": {"trackingUri": "http://mlflow"}, "runtime": runtime}
    )


def test_the_spec_image_or_the_default_is_screened():
    settings = Settings(runtime_image="ghcr.io/modelpilot/runtime:1", allowed_images=OURS)
    resolved = Resolution(model=V2)
    assert _screen_image(spec(), resolved, settings) is resolved
    refused = _screen_image(spec("evil.example/miner:1"), resolved, settings)
    assert refused.model is None and refused.reason == IMAGE_NOT_ALLOWED
    # The default image is screened too: an allow-list without it refuses every spec that relies on it.
    assert _screen_image(spec(), resolved, Settings(runtime_image="other:1", allowed_images=OURS)).model is None
    # A resolution failure stays what it was.
    failure = Resolution.failed("ModelNotFound", "no model", False)
    assert _screen_image(spec("evil.example/miner:1"), failure, settings) is failure


def test_a_refused_image_leaves_the_serving_version_alone_and_says_why():
    serving = TrackObservation("m", "1", 2, 2, 2, 2, 2, True)
    ready = plan(SPEC, ModelDeploymentStatus(), Observations(generation=1, now="t", resolution=Resolution(model=V1), stable=serving)).status
    refusal = image_refusal("evil.example/miner:1", OURS)
    result = plan(SPEC, ready, Observations(generation=2, now="t", resolution=refusal, stable=serving))
    assert result.serve is None  # nothing is applied: the serving Deployment keeps its image
    assert result.status.phase == "Degraded" and result.status.model == V1
    assert "still serving version 1" in result.status.message and "evil.example/miner:1" in result.status.message
    degraded = get_condition(result.status.conditions, "Degraded")
    assert (degraded.status, degraded.reason) == ("True", IMAGE_NOT_ALLOWED)
    assert get_condition(result.status.conditions, "Ready").status == "True"
    # One Warning Event says it.
    assert notices(ready.conditions, result.status.conditions) == [
        Notice(warning=True, reason=IMAGE_NOT_ALLOWED, message=refusal.message)
    ]


def test_a_refused_image_with_nothing_serving_fails():
    result = plan(SPEC, ModelDeploymentStatus(), Observations(generation=1, now="t", resolution=image_refusal("evil:1", OURS)))
    assert result.serve is None and result.status.phase == "Failed"
    assert get_condition(result.status.conditions, "Ready").reason == IMAGE_NOT_ALLOWED
