"""Desired Deployment, Services, HorizontalPodAutoscaler and PodDisruptionBudget of a ModelDeployment, as
plain dicts.

Pure: the same inputs always give the same objects, so the apply layer can tell a no-op from a change.
Pods meet the Pod Security "restricted" profile.
"""

from __future__ import annotations

from ..api.spec import ModelDeploymentSpec, Runtime
from ..api.status import ResolvedModel
from .labels import (
    CANARY,
    LABEL_TRACK,
    STABLE,
    common_labels,
    selector_labels,
    track_labels,
    track_name,
    track_selector,
)
from ..serving import ENVIRONMENTS_DIR, MODEL_DIR
from .owner import Owner
from .pod import pod_fields, template_metadata

TRACKS = (STABLE, CANARY)
SERVICE_PORT = 80
RUN_AS = 10001
PRE_STOP_SECONDS = 5
# A container that dies before writing its termination message (a bad flag, a crash at import) still
# says why: the kubelet takes the last lines of its log, and the ModelDeployment's status shows them.
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"

_RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def deployment(
    owner: Owner,
    spec: ModelDeploymentSpec,
    model: ResolvedModel,
    runtime_image: str,
    track: str = STABLE,
    replicas: int | None = None,
    package_index: str | None = None,
) -> dict:
    """The Deployment serving `model` on `track`: `replicas` pods (a canary's count), else the spec's count,
    or no count at all when an autoscaler owns it. `package_index` is the operator's default index for the
    Install requirements policy."""
    name = track_name(owner.name, track)
    labels = track_labels(owner.name, spec.model.name, track, model.version)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": owner.metadata(name, labels),
        "spec": {
            "selector": {"matchLabels": track_selector(owner.name, track)},
            "revisionHistoryLimit": 3,
            # Never drop below the serving capacity while a new version starts.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "template": {
                "metadata": template_metadata(spec.pod, labels, scrape_annotations(spec.runtime.port)),
                "spec": _pod_spec(owner, spec, model, runtime_image, track, package_index),
            },
        },
    }
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    elif spec.autoscaling is None:
        body["spec"]["replicas"] = spec.replicas
    return body


def runtime_image(spec: ModelDeploymentSpec, default: str) -> str:
    """The image the model's pods run: the spec's own, or the operator's default."""
    return spec.runtime.image or default


def _pod_spec(owner: Owner, spec: ModelDeploymentSpec, model: ResolvedModel, image: str, track: str,
              package_index: str | None) -> dict:  # fmt: skip
    runtime = spec.runtime
    image = runtime_image(spec, image)
    # Only the fetch step gets the credentials: the model server runs the model's own (pickled) code,
    # which must not read registry or artifact-store credentials, ones that may move aliases among them.
    secret_env = {"envFrom": [{"secretRef": {"name": spec.mlflow.credentials_secret}}]} if spec.mlflow.credentials_secret else {}
    model_mount = {"name": "model", "mountPath": MODEL_DIR}
    tmp_mount = {"name": "tmp", "mountPath": "/tmp"}
    fetch = {
        "name": "fetch-model",
        "image": image,
        "command": ["python", "-m", "modelpilot.serving.fetch"],
        "args": [
            "--model-uri", f"models:/{model.name}/{model.version}",
            "--dest", MODEL_DIR,
            "--requirements-policy", runtime.requirements_policy,
        ],
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": spec.mlflow.tracking_uri}],
        **secret_env,
        "volumeMounts": [model_mount, tmp_mount],
        "securityContext": _RESTRICTED_CONTAINER,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    server = {
        "name": "model-server",
        "image": image,
        "command": ["python", "-m", "modelpilot.serving.server"],
        "args": ["--model-dir", MODEL_DIR, "--host", "0.0.0.0", "--port", str(runtime.port),
                 *request_logging_args(runtime), *runtime.args],  # fmt: skip
        "env": [
            {"name": "MODELPILOT_DEPLOYMENT", "value": owner.name},
            {"name": "MODELPILOT_MODEL_NAME", "value": model.name},
            {"name": "MODELPILOT_MODEL_VERSION", "value": model.version},
            {"name": "MODELPILOT_TRACK", "value": track},
            {"name": "MLFLOW_TRACKING_URI", "value": spec.mlflow.tracking_uri},
            *request_logging_env(runtime),
            *({"name": e.name, "value": e.value} for e in runtime.env),
        ],
        "ports": [{"name": "http", "containerPort": runtime.port, "protocol": "TCP"}],
        # A new pod takes traffic within a second of its model being loaded (the startup probe stops once
        # it passes, so its short period costs nothing after), and leaves it within 6 s of turning unready.
        "readinessProbe": _probe("/ready", runtime.port, period=2),
        "livenessProbe": _probe("/health", runtime.port, period=10, failures=6),
        "startupProbe": _probe("/health", runtime.port, period=1, failures=300),
        # Endpoints drop a terminating pod a moment after it is told to stop; it keeps serving meanwhile,
        # so a rollout loses no request that was already routed to it.
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        "volumeMounts": [{**model_mount, "readOnly": True}, tmp_mount],
        "securityContext": _RESTRICTED_CONTAINER,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    volumes = [{"name": "model", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]
    if runtime.requirements_policy == "Install":
        _install_environment(spec, package_index, fetch, server, volumes)
    # The API server drops empty maps and lists; rendering them would look like drift forever.
    resources = {k: v for k, v in spec.resources.to_wire().items() if v}
    if resources:
        server["resources"] = resources
    return {
        **pod_fields(spec.pod, track_selector(owner.name, track)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [fetch],
        "containers": [server],
        "volumes": volumes,
    }


INDEX_CREDENTIAL_KEYS = {"MODELPILOT_INDEX_USERNAME": "username", "MODELPILOT_INDEX_PASSWORD": "password"}


def _install_environment(spec: ModelDeploymentSpec, default_index: str | None, fetch: dict, server: dict,
                         volumes: list[dict]) -> None:  # fmt: skip
    """The Install requirements policy: the fetch step builds the environment on a volume of its own (the
    shared cache when the spec names one), the server reads it; index credentials reach the fetch step only."""
    index = spec.runtime.package_index
    if index is not None:
        fetch["args"] += ["--index-url", index.url, *(a for url in index.extra_urls for a in ("--extra-index-url", url))]
        fetch["args"] += ["--installer", index.installer]
        if index.credentials_secret:
            fetch["env"] += [
                {"name": name, "valueFrom": {"secretKeyRef": {"name": index.credentials_secret, "key": key, "optional": True}}}
                for name, key in INDEX_CREDENTIAL_KEYS.items()
            ]
    elif default_index:
        fetch["args"] += ["--index-url", default_index]
    fetch["args"] += ["--environments", ENVIRONMENTS_DIR]
    cache = spec.runtime.environment_cache
    source = {"persistentVolumeClaim": {"claimName": cache.claim_name}} if cache else {"emptyDir": {}}
    volumes.append({"name": "environments", **source})
    mount = {"name": "environments", "mountPath": ENVIRONMENTS_DIR}
    fetch["volumeMounts"].append(mount)
    server["volumeMounts"].append({**mount, "readOnly": True})


# The variable the request log reads its sink's token from (TOKEN_ENV in serving/request_log/sinks.py).
REQUEST_LOG_TOKEN_ENV = "MODELPILOT_REQUEST_LOG_TOKEN"


def request_logging_args(runtime: Runtime) -> list[str]:
    """The model server's --log-requests-* flags, only when request logging is configured."""
    config = runtime.request_logging
    if config is None:
        return []
    args = ["--log-requests-fraction", str(config.fraction), "--log-requests-sink", config.sink,
            "--log-requests-queue", str(config.queue_size)]  # fmt: skip
    if config.redact:
        args += ["--log-requests-redact", ",".join(config.redact)]
    return args


def request_logging_env(runtime: Runtime) -> list[dict]:
    """The sink's token, from its Secret's `token` key by reference: never in the pod spec, nor an argument."""
    config = runtime.request_logging
    if config is None or not config.sink_credentials_secret:
        return []
    ref = {"secretKeyRef": {"name": config.sink_credentials_secret, "key": "token"}}
    return [{"name": REQUEST_LOG_TOKEN_ENV, "valueFrom": ref}]


def scrape_annotations(port: int) -> dict[str, str]:
    """The conventional annotations Prometheus' Kubernetes pod discovery keys on (docs/metrics.md)."""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _probe(path: str, port: int, period: int, failures: int = 3) -> dict:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def service(owner: Owner, spec: ModelDeploymentSpec, canary_too: bool = True) -> dict:
    """The model's Service: clients call this name whatever version serves. It selects the pods of both
    tracks when the canary's share is its share of pods (`canary_too`), else the stable track's only."""
    selector = selector_labels(owner.name) if canary_too else track_selector(owner.name, STABLE)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(owner.name, common_labels(owner.name, spec.model.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def track_service(owner: Owner, spec: ModelDeploymentSpec, track: str) -> dict:
    """A Service in front of one track only (`<name>-stable`, `<name>-canary`): users and analysis can reach
    one version directly, whichever share of the main Service's traffic it has."""
    labels = {**common_labels(owner.name, spec.model.name), LABEL_TRACK: track}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.metadata(track_service_name(owner.name, track), labels),
        "spec": {
            "type": "ClusterIP",
            "selector": track_selector(owner.name, track),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def track_service_name(name: str, track: str) -> str:
    return f"{name}-{track}"


def autoscaler(owner: Owner, spec: ModelDeploymentSpec) -> dict | None:
    """The stable track's HorizontalPodAutoscaler, or None when the spec asks for a fixed count."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": owner.metadata(owner.name, common_labels(owner.name, spec.model.name)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": track_name(owner.name, STABLE)},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu_utilization},
                    },
                }
            ],
        },
    }


def disruption_budget(owner: Owner, spec: ModelDeploymentSpec) -> dict | None:
    """With more than one stable pod, a PodDisruptionBudget lets a drain evict one of the model's pods (any
    track) at a time; with one there is none, since it would block every drain."""
    pods = spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.replicas
    if pods <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": owner.metadata(owner.name, common_labels(owner.name, spec.model.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(owner.name)}},
    }
