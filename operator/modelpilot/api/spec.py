"""The ModelDeployment spec: the single source of the CRD schema and of what the operator reads.

Field docstrings become the CRD descriptions that `kubectl explain` prints, and `rules=` become CEL
validations the API server enforces at `kubectl apply`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import GROUP, KIND, PLURAL, VERSION  # noqa: F401 - re-exported: the API's names
from .base import DURATION_PATTERN, ApiModel, cel
from .pod import PodTemplate

Quantity = int | str


class ModelRef(ApiModel, rules=[cel("has(self.version) != has(self.alias)", "set exactly one of version or alias")]):
    """Which registered MLflow model to serve: its name plus exactly one of version or alias."""

    name: str = Field(min_length=1, max_length=256, description="Name of the registered model in the MLflow Model Registry.")
    version: str | None = Field(
        None, pattern=r"^[1-9][0-9]*$", description="Registry version number to serve, such as \"7\"."
    )
    alias: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="Registry alias to follow, such as \"champion\". When the alias moves, the new version is rolled out.",
    )


# `user:password@` before the host. A URL is copied into pod specs, logs and messages; a Secret is not.
_URL_USERINFO = r"^[a-zA-Z][-+.a-zA-Z0-9]*://[^/?#]*@"
_NO_URL_CREDENTIALS_RULE = {
    **cel(
        f"!self.matches('{_URL_USERINFO}')",
        "must not carry credentials (user:password@host): put them in the Secret named by credentialsSecret",
    ),
    # Reported as Forbidden, which does not echo the value: an Invalid error would print the password.
    "reason": "FieldValueForbidden",
}


def _without_credentials(url: str) -> str:
    # The same as the CEL rule, for objects stored before it existed. The error must not echo the URL.
    if re.match(_URL_USERINFO, url):
        raise ValueError(_NO_URL_CREDENTIALS_RULE["message"])
    return url


class MlflowSpec(ApiModel):
    """Where the MLflow tracking server and Model Registry live, and how to authenticate to it."""

    tracking_uri: str = Field(
        pattern=r"^https?://",
        # Bounded, so the API server can price the CEL rule.
        max_length=2048,
        description="Base URL of the MLflow tracking server, such as http://mlflow.mlflow:5000. No credentials in it.",
        json_schema_extra={"x-kubernetes-validations": [_NO_URL_CREDENTIALS_RULE]},
    )
    credentials_secret: str | None = Field(
        None,
        description=(
            "Name of a Secret in the same namespace holding MLflow credentials (MLFLOW_TRACKING_TOKEN, or "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD) and any artifact-store credentials "
            "(for example AWS_ACCESS_KEY_ID). The operator reads the MLflow keys; the init container that "
            "fetches the model gets every key as an environment variable; the model server gets none."
        ),
    )

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, uri: str) -> str:
        return _without_credentials(uri)


class Resources(ApiModel):
    """Compute resources of the model server container, as in a Pod's container resources."""

    requests: dict[str, Quantity] = Field(default_factory=dict, description="Minimum resources, such as cpu: 500m.")
    limits: dict[str, Quantity] = Field(default_factory=dict, description="Maximum resources, such as memory: 1Gi.")


class Autoscaling(
    ApiModel, rules=[cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas")]
):
    """Horizontal autoscaling of the stable track; rendered as an autoscaling/v2 HorizontalPodAutoscaler."""

    min_replicas: int = Field(1, ge=1, le=1000, description="Fewest replicas the autoscaler may run.")
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas the autoscaler may run.")
    target_cpu_utilization: int = Field(
        80, ge=1, le=100, description="Average CPU utilization, in percent of requests, the autoscaler aims for."
    )


class EnvVar(ApiModel):
    """An environment variable set on the model server container."""

    name: str = Field(min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str = Field("", description="Variable value.")


def _index_url(description: str):
    return Field(
        pattern=r"^https?://",
        max_length=2048,
        description=description,
        json_schema_extra={"x-kubernetes-validations": [_NO_URL_CREDENTIALS_RULE]},
    )


class PackageIndex(ApiModel):
    """A Python package index (PyPI or a mirror of it) for the Install requirements policy."""

    url: str = _index_url("Base URL of the index's simple API, such as https://pypi.example.com/simple. No credentials in it.")
    extra_urls: list[Annotated[str, _index_url("Another index to look in.")]] = Field(
        default_factory=list, max_length=8, description="More indexes to look in, after url."
    )
    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description="Secret in the same namespace with `username` and `password` for the indexes (basic auth).",
    )
    installer: Literal["uv", "pip"] = Field("uv", description="The installer: uv (fast) or pip.")

    @field_validator("url", "extra_urls")
    @classmethod
    def _no_credentials(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            _without_credentials(url)
        return value


class EnvironmentCache(ApiModel):
    """A PersistentVolumeClaim (ReadWriteMany when pods share it across nodes) holding built environments."""

    claim_name: str = Field(min_length=1, max_length=253, description="Name of a PersistentVolumeClaim in the same namespace.")


# A request log sink URL goes into the pod's arguments: a token for it belongs in a Secret.
_NO_SINK_CREDENTIALS_RULE = {
    **cel(
        f"!self.matches('{_URL_USERINFO}')",
        "must not carry credentials (user:password@host): put a token in the Secret named by sinkCredentialsSecret",
    ),
    "reason": "FieldValueForbidden",
}
# One field name per item: the server takes them comma-separated.
RedactedField = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^,]+$")]


class RequestLogging(
    ApiModel,
    rules=[
        cel(
            "!has(self.sinkCredentialsSecret) || self.sink != 'stdout'",
            "sinkCredentialsSecret goes with an http(s) sink",
        )
    ],
):
    """Log a sampled share of scoring requests with their responses as JSON lines, for monitoring and retraining."""

    fraction: float = Field(
        ge=0, le=1, description="Share of scoring requests logged with their responses, from 0 to 1 (0.05: one in twenty)."
    )
    sink: str = Field(
        "stdout",
        pattern=r"^(stdout|https?://\S+)$",
        max_length=2048,
        description=(
            "Where records go: stdout (the model server's log) or an http(s) URL that receives batches of JSON "
            "lines by POST. No credentials in it: put a token in sinkCredentialsSecret."
        ),
        json_schema_extra={"x-kubernetes-validations": [_NO_SINK_CREDENTIALS_RULE]},
    )
    redact: list[RedactedField] = Field(
        default_factory=list,
        max_length=256,
        description=(
            "Input and output fields (columns, record keys, tensor names) whose values are logged as [REDACTED], "
            "in every request format."
        ),
    )
    sink_credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description=(
            "Secret in the same namespace whose `token` key the model server sends to the sink as a bearer token. "
            "The model's own code runs in that container too: give it a token that can only write logs."
        ),
    )
    queue_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Records waiting for the sink at most; beyond, records are dropped and counted, never waited for.",
    )

    @field_validator("sink")
    @classmethod
    def _no_credentials(cls, sink: str) -> str:
        # The same as the CEL rule, for objects stored before it existed. The error must not echo the URL.
        if re.match(_URL_USERINFO, sink):
            raise ValueError(_NO_SINK_CREDENTIALS_RULE["message"])
        return sink

    @model_validator(mode="after")
    def _credentials_need_a_url(self) -> RequestLogging:
        if self.sink_credentials_secret and self.sink == "stdout":
            raise ValueError("sinkCredentialsSecret goes with an http(s) sink")
        return self


class Runtime(ApiModel):
    """The model server that runs the model; every field falls back to the operator-wide default."""

    image: str | None = Field(None, description="Container image of the model runtime. Defaults to the operator's runtime image.")
    args: list[str] = Field(default_factory=list, description="Extra arguments appended to the model server command.")
    env: list[EnvVar] = Field(default_factory=list, description="Extra environment variables for the model server.")
    port: int = Field(8080, ge=1024, le=65535, description="Port the model server listens on inside the pod.")
    requirements_policy: Literal["Warn", "Refuse", "Install"] = Field(
        "Warn",
        description=(
            "What to do when the model's recorded requirements differ from the packages the runtime image has: "
            "Warn logs the mismatch and serves, Refuse stops the pod from starting, Install installs what the "
            "runtime lacks into a virtual environment layered over the runtime's own packages (from packageIndex, "
            "else the operator's default index) and serves the model from it."
        ),
    )
    package_index: PackageIndex | None = Field(
        None, description="Where the Install policy takes packages from. Defaults to the operator's default index."
    )
    environment_cache: EnvironmentCache | None = Field(
        None,
        description=(
            "A shared volume for the environments the Install policy builds, keyed by a hash of what they hold: "
            "a pod whose environment is already there installs nothing. Without it each pod builds its own."
        ),
    )
    request_logging: RequestLogging | None = Field(
        None,
        description=(
            "Log a sampled share of scoring requests with their responses, as JSON lines to stdout or an HTTP "
            "sink. Off when absent."
        ),
    )


class PauseStep(ApiModel):
    """Hold the current canary weight for a while, or until promoted when no duration is given."""

    duration: str | None = Field(
        None, pattern=DURATION_PATTERN, description="How long to hold, such as 60s or 5m. Omit to wait for a promote."
    )


class AnalysisStep(ApiModel):
    """Judge the canary with the rollout's analysis checks before going on."""

    duration: str | None = Field(
        None,
        pattern=DURATION_PATTERN,
        description="How long to keep measuring: the step takes one measurement per interval in it. Defaults to analysis.count measurements.",
    )


class RolloutStep(
    ApiModel,
    rules=[
        cel(
            "[has(self.setWeight), has(self.pause), has(self.analysis)].filter(x, x).size() == 1",
            "each step sets exactly one of setWeight, pause or analysis",
        ),
        cel("!has(self.canaryReplicas) || has(self.setWeight)", "canaryReplicas goes with a setWeight step"),
    ],
):
    """One step of a canary rollout: exactly one of setWeight, pause or analysis."""

    set_weight: int | None = Field(None, ge=0, le=100, description="Send this percentage of traffic to the canary.")
    canary_replicas: int | None = Field(
        None,
        ge=0,
        le=1000,
        description=(
            "Pods of the canary at this setWeight step, instead of the count whose share of all pods is closest "
            "to the weight."
        ),
    )
    pause: PauseStep | None = Field(None, description="Hold the current weight.")
    analysis: AnalysisStep | None = Field(None, description="Judge the canary against the analysis checks.")


class PrometheusProvider(ApiModel):
    """A Prometheus server to query for the analysis metrics."""

    address: str | None = Field(
        None, pattern=r"^https?://", description="Base URL of the Prometheus HTTP API. Defaults to the operator's."
    )
    credentials_secret: str | None = Field(
        None,
        min_length=1,
        max_length=253,
        description=(
            "Secret in the same namespace: `token` (a bearer token) or `username` and `password` (basic auth), "
            "and `ca.crt` to trust a private CA."
        ),
    )
    timeout: str = Field("10s", pattern=DURATION_PATTERN, description="Bound on each query, connecting included.")


# Every `{{` opens one of the placeholders a measurement fills in (analysis/queries.py).
_KNOWN_PLACEHOLDERS_RULE = cel(
    "self.matches('^([^{]|\\\\{[^{]|\\\\{\\\\{\\\\s*(namespace|deployment|track|version|window)\\\\s*\\\\}\\\\})*\\\\{?$')",
    "a query template may only use the placeholders {{namespace}}, {{deployment}}, {{track}}, {{version}} and {{window}}",
)


class Check(
    ApiModel,
    rules=[
        cel(
            "has(self.max) || has(self.min) || has(self.maxRelativeToStable)",
            "a check needs at least one of max, min or maxRelativeToStable",
        )
    ],
):
    """A metric the canary must keep within bounds, absolutely or relative to the stable track."""

    name: str = Field(min_length=1, max_length=63, description="Name of the check, shown in status and Events.")
    metric: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "A built-in metric (errorRate, latencyP50, latencyP99, predictionErrorRate, drift) or a PromQL query "
            "template with the placeholders {{namespace}}, {{deployment}}, {{track}}, {{version}} and {{window}}."
        ),
        json_schema_extra={"x-kubernetes-validations": [_KNOWN_PLACEHOLDERS_RULE]},
    )
    max: float | None = Field(None, description="The canary fails when the metric is above this value.")
    min: float | None = Field(None, description="The canary fails when the metric is below this value.")
    max_relative_to_stable: float | None = Field(
        None,
        gt=0,
        description=(
            "The canary fails when the metric exceeds the stable track's value over the same window times this "
            "factor (built-in errorRate, latency and predictionErrorRate, and custom queries)."
        ),
    )


class Analysis(ApiModel):
    """How canaries are judged: which metrics, from where, how often, how many failures are tolerated."""

    prometheus: PrometheusProvider = Field(
        default_factory=PrometheusProvider, description="Prometheus server the metrics come from."
    )
    interval: str = Field(
        "30s",
        pattern=DURATION_PATTERN,
        description="How often the checks are measured, and the window each measurement covers.",
    )
    count: int = Field(3, ge=1, le=100, description="Passing measurements an analysis step needs, unless it sets a duration.")
    failure_limit: int = Field(0, ge=0, le=100, description="Failed measurements tolerated before rolling back.")
    inconclusive_limit: int = Field(
        2, ge=0, le=100, description="Inconclusive measurements tolerated (each pauses the rollout) before rolling back."
    )
    min_sample_size: int = Field(
        20,
        ge=0,
        le=1_000_000,
        description="Requests the canary must have answered in the window before any verdict; until then the rollout waits.",
    )
    on_no_data: Literal["Inconclusive", "Fail", "Pass"] = Field(
        "Inconclusive",
        description="The verdict when a query returns no series or NaN. Provider errors are always inconclusive.",
    )
    background: bool = Field(
        True, description="Measure through the whole rollout, not only at analysis steps: a failure rolls back at any step."
    )
    tag_rollbacks: bool = Field(
        False,
        description=(
            "Tag a version the analysis rolled back in the MLflow Model Registry (`modelpilot.io/rolled-back`, "
            "with the reason). The credentials Secret must allow editing the model."
        ),
    )
    checks: list[Check] = Field(default_factory=list, max_length=32, description="The checks the canary must pass.")


class ParentRef(ApiModel):
    """A Gateway (or one of its listeners) the model's HTTPRoute attaches to, as Gateway API names it."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Gateway.")
    namespace: str | None = Field(
        None, min_length=1, max_length=63, description="Namespace of the Gateway. Defaults to the ModelDeployment's."
    )
    section_name: str | None = Field(
        None, min_length=1, max_length=253, description="The Gateway listener to attach to. Defaults to every listener."
    )
    port: int | None = Field(None, ge=1, le=65535, description="Attach to the Gateway's listeners on this port only.")


class GatewayAPIRouting(ApiModel):
    """Split traffic with a Gateway API HTTPRoute the operator owns: per-track Services as weighted backends."""

    parent_refs: list[ParentRef] = Field(
        min_length=1, max_length=32, description="The Gateways the HTTPRoute attaches to."
    )
    hostnames: list[str] = Field(
        default_factory=list, max_length=16, description="Host names the HTTPRoute answers. Empty answers every host."
    )
    path: str = Field("/", pattern=r"^/", max_length=1024, description="Path prefix the HTTPRoute matches.")
    scale_down_delay: str = Field(
        "10s",
        pattern=DURATION_PATTERN,
        description=(
            "How long canary pods outlive the end of a rollout once the HTTPRoute sends them nothing, so the "
            "Gateway has seen the new weights before their endpoints go."
        ),
    )


class TrafficRouting(ApiModel):
    """How a canary's weight becomes its share of requests. Without a router, by the ratio of ready pods."""

    gateway_api: GatewayAPIRouting | None = Field(
        None,
        alias="gatewayAPI",
        description="Split through a Gateway API HTTPRoute, at the exact weight of each step.",
    )


class Rollout(ApiModel):
    """How a new model version replaces the serving one. Without steps it replaces it at once."""

    steps: list[RolloutStep] = Field(default_factory=list, max_length=64, description="Canary steps, run in order.")
    analysis: Analysis = Field(default_factory=Analysis, description="How analysis steps judge the canary.")
    traffic_routing: TrafficRouting = Field(
        default_factory=TrafficRouting,
        description="The traffic router. Without one, the canary's share is its share of ready pods (replica ratio).",
    )
    bake_time: str | None = Field(
        None,
        pattern=DURATION_PATTERN,
        description=(
            "How long a promoted version stays under analysis once every stable pod runs it. Meanwhile the "
            "previous version is kept scaled down, and a failed check or an abort rolls back to it."
        ),
    )


class ModelDeploymentSpec(ApiModel):
    """Desired state of a ModelDeployment: which MLflow model to serve, how, and how to roll out new versions."""

    model: ModelRef = Field(description="The registered MLflow model to serve.")
    mlflow: MlflowSpec = Field(description="The MLflow tracking server that holds the model.")
    replicas: int = Field(1, ge=0, le=1000, description="Replicas of the serving model when autoscaling is not set.")
    resources: Resources = Field(default_factory=Resources, description="Resources of the model server container.")
    autoscaling: Autoscaling | None = Field(None, description="Scale replicas on CPU with a HorizontalPodAutoscaler.")
    runtime: Runtime = Field(default_factory=Runtime, description="The model server runtime.")
    pod: PodTemplate = Field(
        default_factory=PodTemplate,
        description="Scheduling (nodeSelector, tolerations, affinity, spread, priority), identity and extra metadata of every pod.",
    )
    rollout: Rollout = Field(default_factory=Rollout, description="How new model versions are rolled out.")
    progress_deadline: str = Field(
        "10m",
        pattern=DURATION_PATTERN,
        description=(
            "How long nothing may serve while a failure that waiting may cure lasts (MLflow unreachable, a "
            "Secret not created yet) before the Progressing condition turns False with reason "
            "ProgressDeadlineExceeded, which Argo CD shows as Degraded. The operator keeps retrying."
        ),
    )
