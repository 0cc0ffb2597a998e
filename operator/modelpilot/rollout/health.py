"""Why a track's new pods cannot start, judged from Deployment and pod bodies as the API returns them.

Pure. A pod is judged failing only on evidence: a container that exited with an error (the fetch init
container says why through its exit code and termination message), a model server in a crash loop, an
image or container configuration the kubelet cannot use, or a Deployment past its progress deadline.
The normal waiting of the first seconds (ContainerCreating, PodInitializing) is not a failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Container names as render/workload.py renders them (a unit test holds the two together).
FETCH_CONTAINER = "fetch-model"
SERVER_CONTAINER = "model-server"
MESSAGE_LIMIT = 512

# The exit codes of modelpilot.serving.fetch; any other code is FetchFailed.
FETCH_EXIT_REASONS = {
    3: "FetchModelNotFound",
    4: "FetchCredentialsRefused",
    5: "FetchDiskFull",
    6: "RequirementsRefused",
    7: "FetchVerificationFailed",
    8: "RequirementsInstallFailed",
}

# Waiting reasons that no amount of waiting fixes. ErrImagePull and ImagePullBackOff alternate while the
# kubelet retries, so they share one reason: a flip would otherwise be a new Event every back-off.
WAITING_REASONS = {
    "ErrImagePull": "ImagePullFailed",
    "ImagePullBackOff": "ImagePullFailed",
    "ErrImageNeverPull": "ImageNotPresent",
    "InvalidImageName": "InvalidImageName",
    "CreateContainerConfigError": "ContainerConfigInvalid",
    "CreateContainerError": "ContainerCreateFailed",
    "RunContainerError": "ContainerStartFailed",
}

_URL_USERINFO = re.compile(r"//[^/@\s]+@")
_KEPT_METADATA = ("name", "namespace", "labels", "creationTimestamp", "deletionTimestamp")
_KEPT_STATUS = ("phase", "conditions", "initContainerStatuses", "containerStatuses")


@dataclass(frozen=True)
class StartFailure:
    """Why the pods of a track's current template do not come up."""

    reason: str
    message: str
    container: str | None = None
    exit_code: int | None = None


def start_failure(deployment: dict, pods: Iterable[dict], version_label: str) -> StartFailure | None:
    """The first failure among the pods of the Deployment's current template, else the Deployment's own
    word that it is stuck (pods cannot be created, or the progress deadline passed), else None."""
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return None  # the controller has not acted on the latest template: its pods say nothing yet
    for pod in _current_template_pods(deployment, pods, version_label):
        failure = pod_failure(pod)
        if failure is not None:
            return failure
    return _deployment_stuck(deployment)


def ready_versions(deployment: dict, pods: Iterable[dict], version_label: str) -> tuple[str, ...]:
    """Model versions with at least one ready pod on the Deployment's track, in order."""
    versions = {
        _labels(pod).get(version_label)
        for pod in track_pods(deployment, pods)
        if _condition_true(pod, "Ready")
    }
    return tuple(sorted((v for v in versions if v), key=lambda v: (len(v), v)))  # "9" before "10"


def lingering_pods(deployment: dict, pods: Iterable[dict], version_label: str) -> int:
    """Pods of the track still running another version than the template's, those on their way out
    included: until they are gone, a client may still be answered by the old version."""
    version = _template_version(deployment, version_label)
    return sum(1 for pod in _selected_running(deployment, pods) if _labels(pod).get(version_label) != version)


def track_pods(deployment: dict, pods: Iterable[dict]) -> list[dict]:
    """The pods the Deployment selects, leaving out those on their way out."""
    return [pod for pod in _selected_running(deployment, pods) if not (pod.get("metadata") or {}).get("deletionTimestamp")]


def pod_failure(pod: dict) -> StartFailure | None:
    """Why this pod cannot start, or None while nothing says it failed."""
    status = pod.get("status") or {}
    for container in status.get("initContainerStatuses") or ():
        failure = _init_failure(container)
        if failure is not None:
            return failure
    for container in status.get("containerStatuses") or ():
        failure = _server_failure(container)
        if failure is not None:
            return failure
    return None


def essentials(pod: dict) -> dict:
    """The parts of a pod body this module reads, in the same shape: what the operator keeps in memory."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    kept_meta = {k: meta[k] for k in _KEPT_METADATA if k in meta}
    kept_status = {k: status[k] for k in _KEPT_STATUS if k in status}
    return {"metadata": _plain(kept_meta), "status": _plain(kept_status)}


# --------------------------------------------------------------------------------------------------


def _selected_running(deployment: dict, pods: Iterable[dict]) -> list[dict]:
    """The pods the Deployment selects that have not finished, stopping ones included. Evicted or otherwise
    finished pods are replaced by the ReplicaSet: they neither stop a start nor answer anyone."""
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return [
        pod
        for pod in pods
        if all(_labels(pod).get(k) == v for k, v in selector.items())
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def _template_version(deployment: dict, version_label: str) -> str | None:
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return (template.get("labels") or {}).get(version_label)


def _current_template_pods(deployment: dict, pods: Iterable[dict], version_label: str) -> list[dict]:
    version = _template_version(deployment, version_label)
    if version is None:
        return []
    candidates = [pod for pod in track_pods(deployment, pods) if _labels(pod).get(version_label) == version]
    if not candidates:
        return []
    # A spec change that keeps the version (another image, env or requirements policy) makes a new
    # ReplicaSet; the newest pod's template hash tells its pods from the ones on their way out.
    newest = max(candidates, key=lambda pod: (pod.get("metadata") or {}).get("creationTimestamp") or "")
    template_hash = _labels(newest).get("pod-template-hash")
    current = [pod for pod in candidates if _labels(pod).get("pod-template-hash") == template_hash]
    return sorted(current, key=lambda pod: (pod.get("metadata") or {}).get("name") or "")


def _init_failure(container: dict) -> StartFailure | None:
    failure = _waiting_failure(container)
    if failure is not None:
        return failure
    state = container.get("state") or {}
    # While the kubelet restarts a failed init container (back-off, then running again) the failure
    # stays in lastState: it counts until an attempt succeeds, so the report does not flap.
    terminated = state.get("terminated") if "terminated" in state else _last_terminated(container)
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    name, code = container.get("name", ""), terminated.get("exitCode")
    if name == FETCH_CONTAINER:
        reason = FETCH_EXIT_REASONS.get(code, "FetchFailed")
    else:  # an init container injected by the cluster (a mesh, a policy agent...)
        reason = "InitContainerFailed"
    return StartFailure(reason, _exited(name, terminated), name, code)


def _server_failure(container: dict) -> StartFailure | None:
    failure = _waiting_failure(container)
    if failure is not None:
        return failure
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    last = _last_terminated(container)
    if "terminated" in state:
        terminated = state["terminated"]  # a serving container that stopped: the kubelet backs off next
    elif waiting.get("reason") == "CrashLoopBackOff":
        terminated = last
    elif last and container.get("restartCount", 0) > 0 and not container.get("ready"):
        terminated = last  # running again between crashes: still the same crash loop
    else:
        return None
    name = container.get("name", "")
    reason = "ModelServerCrashLoop" if name == SERVER_CONTAINER else "ContainerCrashLoop"
    if terminated is None:
        return StartFailure(reason, _clean(f"{name}: {waiting.get('message') or 'CrashLoopBackOff'}"), name)
    return StartFailure(reason, _exited(name, terminated), name, terminated.get("exitCode"))


def _waiting_failure(container: dict) -> StartFailure | None:
    waiting = (container.get("state") or {}).get("waiting") or {}
    reason = WAITING_REASONS.get(waiting.get("reason", ""))
    if reason is None:
        return None
    name = container.get("name", "")
    return StartFailure(reason, _clean(f"{name}: {waiting.get('message') or waiting['reason']}"), name)


def _deployment_stuck(deployment: dict) -> StartFailure | None:
    conditions = {c.get("type"): c for c in (deployment.get("status") or {}).get("conditions") or ()}
    failed_create = conditions.get("ReplicaFailure") or {}
    if failed_create.get("status") == "True":
        # No pod to judge: the ReplicaSet could not create one (quota, admission, Pod Security...).
        return StartFailure("PodCreateFailed", _clean(failed_create.get("message") or failed_create.get("reason", "")))
    progressing = conditions.get("Progressing") or {}
    if progressing.get("status") == "False" and progressing.get("reason") == "ProgressDeadlineExceeded":
        name = (deployment.get("metadata") or {}).get("name", "")
        detail = progressing.get("message") or "no progress within its deadline"
        return StartFailure("ProgressDeadlineExceeded", _clean(f"Deployment {name}: {detail}"))
    return None


def _exited(name: str, terminated: dict) -> str:
    code, why = terminated.get("exitCode"), terminated.get("reason")
    # "Error" and "Completed" say nothing the exit code does not; OOMKilled, StartError... do.
    detail = f" ({why})" if why and why not in ("Error", "Completed") else ""
    message = (terminated.get("message") or "").strip()
    return _clean(f"{name} exited {code}{detail}" + (f": {message}" if message else ""))


def _clean(text: str) -> str:
    """One line, no URL credentials, bounded: a container writes its termination message as it likes."""
    text = _URL_USERINFO.sub("//", " ".join(text.split()))
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def _last_terminated(container: dict) -> dict | None:
    return (container.get("lastState") or {}).get("terminated")


def _labels(pod: dict) -> dict:
    return (pod.get("metadata") or {}).get("labels") or {}


def _condition_true(pod: dict, type_: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)


def _plain(value):
    """A copy made of plain dicts and lists, detached from the watch's body."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
