"""Names and labels shared by every object a ModelDeployment owns."""

from __future__ import annotations

import re

from ..api import GROUP

MANAGED_BY = "modelpilot"
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_MODEL_VERSION = f"{GROUP}/model-version"
LABEL_TRACK = f"{GROUP}/track"
STABLE = "stable"
CANARY = "canary"

_LABEL_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def label_value(text: str) -> str:
    """A valid label value (63 chars of [A-Za-z0-9._-], alphanumeric at both ends) derived from any text."""
    value = _LABEL_VALUE_UNSAFE.sub("-", text)[:63]
    return value.strip("-._")


def track_name(deployment: str, track: str) -> str:
    """Name of the Deployment for a track: the stable one keeps the ModelDeployment's own name."""
    return deployment if track == STABLE else f"{deployment}-{track}"


def selector_labels(deployment: str) -> dict[str, str]:
    """Labels that select every pod of a ModelDeployment, whatever its track."""
    return {"app.kubernetes.io/instance": deployment, LABEL_DEPLOYMENT: deployment}


def track_selector(deployment: str, track: str) -> dict[str, str]:
    return {**selector_labels(deployment), LABEL_TRACK: track}


def common_labels(deployment: str, model_name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": label_value(model_name) or "model",
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "modelpilot",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        **selector_labels(deployment),
    }


def track_labels(deployment: str, model_name: str, track: str, version: str) -> dict[str, str]:
    return {
        **common_labels(deployment, model_name),
        LABEL_TRACK: track,
        LABEL_MODEL_VERSION: label_value(version),
        "app.kubernetes.io/version": label_value(version),
    }
