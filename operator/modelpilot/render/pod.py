"""What `spec.pod` adds to every pod of a ModelDeployment: scheduling, identity and extra metadata.

Pure. Nothing empty is rendered where the API server would drop it: an object we apply must read back
the same, or it would look like drift forever.
"""

from __future__ import annotations

from typing import Any

from ..api.pod import PodTemplate, TopologySpreadConstraint

# Maps in the Kubernetes types: the API server drops them when empty. Empty structs, such as a
# labelSelector {} that selects every pod, are kept, and they mean something, so they stay.
_DROPPED_WHEN_EMPTY = {"matchLabels", "nodeSelector"}


def template_metadata(pod: PodTemplate, labels: dict[str, str], annotations: dict[str, str]) -> dict:
    """The pod template's metadata: the user's extra labels, then the operator's, which always win; the
    operator's annotations, then the user's, which win (to turn scraping off, say)."""
    metadata: dict[str, Any] = {"labels": {**pod.labels, **labels}}
    merged = {**annotations, **pod.annotations}
    if merged:
        metadata["annotations"] = merged
    return metadata


def pod_fields(pod: PodTemplate, own_pods: dict[str, str]) -> dict:
    """The pod spec fields `spec.pod` sets. `own_pods` selects the track's pods: the default spread selector."""
    fields = {
        "automountServiceAccountToken": pod.automount_service_account_token,
        "serviceAccountName": pod.service_account_name,
        "priorityClassName": pod.priority_class_name,
        "nodeSelector": dict(pod.node_selector),
        "tolerations": [t.to_wire() for t in pod.tolerations],
        "affinity": pod.affinity.to_wire() if pod.affinity else None,
        "topologySpreadConstraints": [_spread(c, own_pods) for c in pod.topology_spread_constraints],
        "imagePullSecrets": [s.to_wire() for s in pod.image_pull_secrets],
    }
    return {key: value for key, value in _compact(fields).items() if value not in ({}, [])}


def _spread(constraint: TopologySpreadConstraint, own_pods: dict[str, str]) -> dict:
    wire = constraint.to_wire()
    if constraint.label_selector is None:
        # Without a selector Kubernetes counts no pods at all; the track's own pods are what users mean.
        wire["labelSelector"] = {"matchLabels": dict(own_pods)}
    return wire


def _compact(node: Any) -> Any:
    """`node` without nulls, empty lists and empty maps, at any depth (affinity is passed through as written)."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            value = _compact(value)
            if value is None or value == [] or (value == {} and key in _DROPPED_WHEN_EMPTY):
                continue
            out[key] = value
        return out
    if isinstance(node, list):
        return [_compact(item) for item in node]
    return node
