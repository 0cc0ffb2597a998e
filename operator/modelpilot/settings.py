"""Operator-wide settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import __version__


@dataclass(frozen=True)
class Settings:
    runtime_image: str = f"ghcr.io/modelpilot/runtime:{__version__}"
    # How often a ModelDeployment's reference is re-resolved, so a moved alias rolls out.
    resolve_interval_seconds: float = 60.0
    # Read timeout of one MLflow request; connecting has its own 5 s bound.
    registry_timeout_seconds: float = 10.0
    # Bound on concurrent blocking calls (MLflow, Kubernetes) across all ModelDeployments.
    max_workers: int = 16

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            runtime_image=env.get("MODELPILOT_RUNTIME_IMAGE", defaults.runtime_image),
            resolve_interval_seconds=float(env.get("MODELPILOT_RESOLVE_INTERVAL", defaults.resolve_interval_seconds)),
            registry_timeout_seconds=float(env.get("MODELPILOT_REGISTRY_TIMEOUT", defaults.registry_timeout_seconds)),
            max_workers=int(env.get("MODELPILOT_MAX_WORKERS", defaults.max_workers)),
        )
