"""`spec.pod`: where the model's pods run and what they carry, on every track.

Typed where the Kubernetes shape is small and easy to get wrong (tolerations, topology spread, pull
secrets), so mistakes fail at `kubectl apply`; affinity, whose schema is huge, is passed through as
written under its three known keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from .base import GROUP, ApiModel, cel

# Kubernetes' own limits. `[.]` rather than `\.` keeps the patterns free of escapes in YAML and CEL.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUALIFIED_NAME_MAX = 253 + 1 + 63

# Labels the operator puts on every pod; it selects pods and tells tracks and versions apart by them.
RESERVED_LABELS = tuple(
    f"app.kubernetes.io/{name}" for name in ("name", "instance", "component", "part-of", "managed-by", "version")
)
RESERVED_LABEL_PREFIX = f"{GROUP}/"

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
QualifiedName = Annotated[str, Field(min_length=1, max_length=QUALIFIED_NAME_MAX, pattern=QUALIFIED_NAME_PATTERN)]
DnsSubdomain = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]
# Stored as written, unpruned: for parts of the Kubernetes schema too large to copy.
PassThrough = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})]

# For maps: the schema cannot constrain keys, CEL can. Key sizes do not count in CEL's cost estimate.
_QUALIFIED_KEYS_RULE = cel(
    f"self.all(k, k.matches('{QUALIFIED_NAME_PATTERN}') && (!k.contains('/') || k.indexOf('/') <= 253))",
    "keys must be qualified names: an optional DNS subdomain prefix (at most 253 characters) and '/', then at "
    "most 63 characters of letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
)

_IS_RESERVED = "k in [{}] || k.startsWith('{}')".format(
    ", ".join(f"'{key}'" for key in RESERVED_LABELS), RESERVED_LABEL_PREFIX
)
_RESERVED_LIST = f"{', '.join(RESERVED_LABELS)} and every {RESERVED_LABEL_PREFIX} label"
_RESERVED_LABELS_RULE = {
    **cel(
        f"!self.exists(k, {_IS_RESERVED})",
        f"must not set the labels the operator sets and selects pods by: {_RESERVED_LIST}",
    ),
    # The same, naming the offending key.
    "messageExpression": f"'must not set ' + self.filter(k, {_IS_RESERVED})[0] + "
    f"': the operator sets it and selects pods by it (reserved: {_RESERVED_LIST})'",
}


class Toleration(
    ApiModel,
    rules=[
        cel("has(self.key) || self.operator == 'Exists'", "a toleration without a key must use operator Exists"),
        cel(
            "self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "a toleration with operator Exists takes no value",
        ),
        cel(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute",
        ),
    ],
):
    """Lets the pods run on nodes with a matching taint, as a Pod's toleration."""

    key: QualifiedName | None = Field(
        None, description="Taint key to tolerate. Omit, with operator Exists, to tolerate every taint."
    )
    operator: Literal["Exists", "Equal"] = Field(
        "Equal", description="Equal matches the taint's value; Exists matches any value of the key."
    )
    value: LabelValue | None = Field(None, description="Taint value to match with operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate. Omit to tolerate every effect."
    )
    toleration_seconds: int | None = Field(
        None,
        ge=0,
        description="With effect NoExecute: how long the pod stays on the node after the taint appears. Omit for ever.",
    )


class LabelSelectorRequirement(
    ApiModel,
    rules=[
        cel(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) "
            ": (!has(self.values) || size(self.values) == 0)",
            "operators In and NotIn need values; Exists and DoesNotExist take none",
        )
    ],
):
    """One expression of a label selector: a key, an operator and, for In and NotIn, values."""

    key: QualifiedName = Field(description="Label key the expression tests.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="How the label is tested.")
    values: list[LabelValue] = Field(default_factory=list, max_length=64, description="Label values for In and NotIn.")


class LabelSelector(
    ApiModel,
    rules=[
        cel(
            "(has(self.matchLabels) && size(self.matchLabels) > 0) "
            "|| (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
            "a labelSelector needs matchLabels or matchExpressions; leave it out to select the track's own pods",
        )
    ],
):
    """Which pods a topology spread constraint counts."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Labels the pods must have, all of them.",
        json_schema_extra={"x-kubernetes-validations": [_QUALIFIED_KEYS_RULE]},
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=32, description="Expressions the pods' labels must satisfy, all of them."
    )


class TopologySpreadConstraint(
    ApiModel,
    rules=[
        cel(
            "!has(self.minDomains) || self.whenUnsatisfiable == 'DoNotSchedule'",
            "minDomains needs whenUnsatisfiable DoNotSchedule",
        )
    ],
):
    """Spreads the pods across a topology (zones, nodes...), as a Pod's topologySpreadConstraint."""

    max_skew: int = Field(ge=1, description="Largest allowed difference in matching pods between two topology domains.")
    topology_key: QualifiedName = Field(
        description="Node label whose values are the domains, such as topology.kubernetes.io/zone or kubernetes.io/hostname."
    )
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="DoNotSchedule keeps a pod pending rather than break maxSkew; ScheduleAnyway only prefers less skew."
    )
    label_selector: LabelSelector | None = Field(
        None,
        description=(
            "Pods counted when spreading. Defaults to the pods of the same ModelDeployment and track, "
            "so each track spreads on its own."
        ),
    )
    match_label_keys: list[QualifiedName] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Pod label keys whose values, taken from the incoming pod, narrow the pods counted, "
            "such as pod-template-hash."
        ),
    )
    min_domains: int | None = Field(
        None, ge=1, description="With DoNotSchedule: fewest domains to spread over, counting empty ones."
    )
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(
        None,
        description="Whether the pod's nodeSelector and node affinity limit the domains counted (Kubernetes default: Honor).",
    )
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(
        None,
        description="Whether nodes with taints the pod does not tolerate are counted (Kubernetes default: Ignore).",
    )


class LocalObjectReference(ApiModel):
    """A Secret in the ModelDeployment's namespace, by name."""

    name: DnsSubdomain = Field(description="Name of the Secret.")


class Affinity(ApiModel):
    """Node and pod affinity as in a Pod's spec.affinity; each part is passed through unchanged."""

    node_affinity: PassThrough | None = Field(
        None, description="Node affinity as in a Pod: requiredDuringSchedulingIgnoredDuringExecution and preferred terms."
    )
    pod_affinity: PassThrough | None = Field(None, description="Pod affinity as in a Pod: run near pods matching the terms.")
    pod_anti_affinity: PassThrough | None = Field(
        None, description="Pod anti-affinity as in a Pod: run away from pods matching the terms."
    )


class PodTemplate(ApiModel):
    """Scheduling, identity and metadata applied to every pod of the ModelDeployment, on every track."""

    node_selector: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description="Node labels the pods require, such as nvidia.com/gpu.present: \"true\".",
        json_schema_extra={"x-kubernetes-validations": [_QUALIFIED_KEYS_RULE]},
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=64, description="Taints the pods tolerate, such as those of dedicated GPU nodes."
    )
    affinity: Affinity | None = Field(None, description="Node affinity, pod affinity and pod anti-affinity of the pods.")
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "How the pods spread across zones or nodes. Each constraint counts the pods of its own track "
            "unless it sets labelSelector."
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["topologyKey", "whenUnsatisfiable"],
        },
    )
    priority_class_name: DnsSubdomain | None = Field(None, description="PriorityClass of the pods.")
    service_account_name: DnsSubdomain | None = Field(
        None,
        description=(
            "ServiceAccount the pods run as, for example one bound to a cloud identity. "
            "Defaults to the namespace's default ServiceAccount."
        ),
    )
    automount_service_account_token: bool = Field(
        False,
        description=(
            "Mount the ServiceAccount's Kubernetes API token into the pods. Off by default: the model server does not "
            "call the Kubernetes API, and cloud workload identity webhooks inject their own token volume."
        ),
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list,
        max_length=32,
        description="Secrets holding registry credentials for the runtime image, as [{name: regcred}].",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description=(
            "Extra labels on the pods. The labels the operator sets (app.kubernetes.io/name, instance, component, "
            "part-of, managed-by, version and every modelpilot.io/ label) are rejected."
        ),
        json_schema_extra={"x-kubernetes-validations": [_QUALIFIED_KEYS_RULE, _RESERVED_LABELS_RULE]},
    )
    annotations: dict[str, str] = Field(
        default_factory=dict,
        max_length=128,
        description="Extra annotations on the pods, such as those a sidecar injector or a cost tool reads.",
        json_schema_extra={"x-kubernetes-validations": [_QUALIFIED_KEYS_RULE]},
    )
