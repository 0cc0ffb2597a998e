"""What the API server says about one track's Deployment, as the pure decisions read it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrackObservation:
    """What the API server says about one track's Deployment."""

    name: str
    version: str | None
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    # Pods of any template, old ones included: a rollout is done only when no old pod is left.
    total_replicas: int
    # The Deployment controller has observed the latest pod template (its observedGeneration caught up).
    current: bool

    @classmethod
    def from_deployment(cls, body: dict, version_label: str) -> TrackObservation:
        meta, spec, status = body.get("metadata", {}), body.get("spec", {}), body.get("status", {}) or {}
        template_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        return cls(
            name=meta.get("name", ""),
            version=template_labels.get(version_label),
            replicas=spec.get("replicas", 1),
            ready_replicas=status.get("readyReplicas", 0),
            updated_replicas=status.get("updatedReplicas", 0),
            available_replicas=status.get("availableReplicas", 0),
            total_replicas=status.get("replicas", 0),
            current=status.get("observedGeneration", 0) >= meta.get("generation", 0),
        )

    @property
    def rolled_out(self) -> bool:
        """Every replica runs the latest template and is ready, with no old pod left."""
        return (
            self.current
            and self.updated_replicas == self.replicas
            and self.total_replicas == self.replicas
            and self.ready_replicas == self.replicas
        )
