"""Operator-wide settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .serving import RUNTIME_VERSION


@dataclass(frozen=True)
class Settings:
    runtime_image: str = f"ghcr.io/modelpilot/runtime:{RUNTIME_VERSION}"
    # How often a ModelDeployment's reference is re-resolved, so a moved alias rolls out.
    resolve_interval_seconds: float = 60.0
    # Read timeout of one MLflow request; connecting has its own 5 s bound.
    registry_timeout_seconds: float = 10.0
    # Bounds on concurrent blocking calls across all ModelDeployments, one pool each, so a slow
    # registry cannot starve the Kubernetes work.
    registry_workers: int = 8
    kube_workers: int = 8
    # How many Secrets named by ModelDeployments are kept in memory between reads (see kube/secrets.py).
    secret_cache_entries: int = 4096
    # Glob patterns the runtime image of every ModelDeployment must match; empty allows any image.
    allowed_images: tuple[str, ...] = ()
    # The Prometheus canary analysis asks when a ModelDeployment names none.
    prometheus_address: str | None = None
    # The package index the Install requirements policy uses when a ModelDeployment names none.
    package_index: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()
        return cls(
            runtime_image=env.get("MODELPILOT_RUNTIME_IMAGE", defaults.runtime_image),
            resolve_interval_seconds=float(env.get("MODELPILOT_RESOLVE_INTERVAL", defaults.resolve_interval_seconds)),
            registry_timeout_seconds=float(env.get("MODELPILOT_REGISTRY_TIMEOUT", defaults.registry_timeout_seconds)),
            registry_workers=int(env.get("MODELPILOT_REGISTRY_WORKERS", defaults.registry_workers)),
            kube_workers=int(env.get("MODELPILOT_KUBE_WORKERS", defaults.kube_workers)),
            secret_cache_entries=int(env.get("MODELPILOT_SECRET_CACHE_ENTRIES", defaults.secret_cache_entries)),
            allowed_images=_patterns(env.get("MODELPILOT_ALLOWED_IMAGES", "")),
            prometheus_address=env.get("MODELPILOT_PROMETHEUS_ADDRESS") or None,
            package_index=env.get("MODELPILOT_PACKAGE_INDEX") or None,
        )


def _patterns(text: str) -> tuple[str, ...]:
    """Comma-separated patterns; blanks around them and empty ones are dropped."""
    return tuple(p.strip() for p in text.split(",") if p.strip())
