"""Why a new version's pods cannot start, judged from pod and Deployment bodies as the API server returns them."""

from __future__ import annotations

import pytest

from modelpilot.api import ModelDeploymentSpec
from modelpilot.api.status import ResolvedModel
from modelpilot.render import workload
from modelpilot.render.labels import LABEL_MODEL_VERSION
from modelpilot.render.owner import Owner
from modelpilot.rollout import health
from modelpilot.rollout.health import (
    MESSAGE_LIMIT,
    StartFailure,
    essentials,
    lingering_pods,
    ready_versions,
    start_failure,
)

IMAGE = "ghcr.io/modelpilot/runtime:0.1.0"
IMAGE_ID = "ghcr.io/modelpilot/runtime@sha256:4f1c2a9e8b7d6c5b4a3928170f6e5d4c3b2a19081726354a5b6c7d8e9f0a1b2c"
REFUSED = (
    "requirements mismatch (policy Refuse): scikit-learn: wanted ==1.5.2, found 1.4.0. Use a runtime image "
    "that satisfies them, or set the requirements policy to Warn"
)


def deployment(version="3", generation=4, observed=4, conditions=None) -> dict:
    """The stable Deployment as the API server returns it mid-rollout from version 2 to `version`."""
    labels = {
        "app.kubernetes.io/instance": "fraud",
        "app.kubernetes.io/managed-by": "modelpilot",
        "modelpilot.io/deployment": "fraud",
        "modelpilot.io/track": "stable",
        "modelpilot.io/model-version": version,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "fraud", "namespace": "ml", "generation": generation, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {
                "matchLabels": {
                    "app.kubernetes.io/instance": "fraud",
                    "modelpilot.io/deployment": "fraud",
                    "modelpilot.io/track": "stable",
                }
            },
            "template": {"metadata": {"labels": labels}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}},
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": observed,
            "replicas": 3,
            "updatedReplicas": 1,
            "readyReplicas": 2,
            "availableReplicas": 2,
            "unavailableReplicas": 1,
            "conditions": conditions
            or [
                {
                    "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": "2026-03-01T09:00:00Z", "lastTransitionTime": "2026-03-01T09:00:00Z",
                },
                {
                    "type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                    "message": 'ReplicaSet "fraud-7c9d8f6b5" is progressing.',
                    "lastUpdateTime": "2026-03-01T10:00:00Z", "lastTransitionTime": "2026-03-01T09:00:00Z",
                },
            ],
        },
    }


def pod_condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict:
    cond = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": "2026-03-01T10:00:02Z"}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def container_status(name: str, state: dict, last: dict | None = None, restarts: int = 0, ready: bool = False) -> dict:
    status = {
        "name": name,
        "state": state,
        "lastState": last or {},
        "ready": ready,
        "restartCount": restarts,
        "image": IMAGE,
        "imageID": "",
        "started": "running" in state,
    }
    if restarts or "waiting" not in state:  # the container ran at least once
        status["imageID"] = IMAGE_ID
        status["containerID"] = "containerd://8a1f0c3e5d7b9a2c4e6f8a0b1c3d5e7f9a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d"
    return status


def terminated(code: int, message: str | None = None, reason: str = "Error") -> dict:
    out = {
        "exitCode": code,
        "reason": reason,
        "startedAt": "2026-03-01T10:00:41Z",
        "finishedAt": "2026-03-01T10:00:44Z",
        "containerID": "containerd://3c5e7a9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a3c5e7b9d1f3a5c",
    }
    if message is not None:
        out["message"] = message
    return out


def pod(
    name="fraud-7c9d8f6b5-x2x7q",
    version="3",
    template_hash="7c9d8f6b5",
    created="2026-03-01T10:00:00Z",
    init=None,
    server=None,
    phase="Pending",
    ready=False,
    deleting=False,
) -> dict:
    """A pod of the stable track as the API server returns it."""
    init = init or container_status("fetch-model", {"terminated": terminated(0, reason="Completed")})
    server = server or container_status("model-server", {"waiting": {"reason": "PodInitializing"}})
    meta = {
        "name": name,
        "generateName": f"fraud-{template_hash}-",
        "namespace": "ml",
        "uid": "5b0e7c1a-2f4d-4c8e-9a6b-3d1f0e2c4a68",
        "resourceVersion": "48213",
        "creationTimestamp": created,
        "labels": {
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/instance": "fraud",
            "app.kubernetes.io/managed-by": "modelpilot",
            "app.kubernetes.io/name": "fraud-detector",
            "app.kubernetes.io/part-of": "modelpilot",
            "app.kubernetes.io/version": version,
            "modelpilot.io/deployment": "fraud",
            "modelpilot.io/model-version": version,
            "modelpilot.io/track": "stable",
            "pod-template-hash": template_hash,
        },
        "ownerReferences": [
            {
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"fraud-{template_hash}",
                "uid": "0f3b6c2e-8d1a-4e7b-9c5f-2a4d6e8b0c1f", "controller": True, "blockOwnerDeletion": True,
            }
        ],
        "managedFields": [{"manager": "kubelet", "operation": "Update", "subresource": "status"}],
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-03-01T10:05:00Z"
        meta["deletionGracePeriodSeconds"] = 30
    initialized = init["state"].get("terminated", {}).get("exitCode") == 0
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"nodeName": "node-1", "restartPolicy": "Always", "containers": [{"name": "model-server", "image": IMAGE}]},
        "status": {
            "phase": phase,
            "conditions": [
                pod_condition("PodReadyToStartContainers", "True"),
                pod_condition("Initialized", "True" if initialized else "False",
                              None if initialized else "ContainersNotInitialized",
                              None if initialized else "containers with incomplete status: [fetch-model]"),
                pod_condition("Ready", "True" if ready else "False", None if ready else "ContainersNotReady",
                              None if ready else "containers with unready status: [model-server]"),
                pod_condition("ContainersReady", "True" if ready else "False"),
                pod_condition("PodScheduled", "True"),
            ],
            "hostIP": "10.0.0.5",
            "hostIPs": [{"ip": "10.0.0.5"}],
            "podIP": "10.244.0.17",
            "podIPs": [{"ip": "10.244.0.17"}],
            "startTime": created,
            "qosClass": "BestEffort",
            "initContainerStatuses": [init],
            "containerStatuses": [server],
        },
    }


def serving_pod(name="fraud-5f6b7c8d9-abcde", version="2") -> dict:
    """A ready pod of the previous version, which keeps serving while the new one fails (maxUnavailable 0)."""
    return pod(
        name=name, version=version, template_hash="5f6b7c8d9", created="2026-03-01T09:00:00Z", phase="Running",
        ready=True,
        server=container_status("model-server", {"running": {"startedAt": "2026-03-01T09:00:30Z"}}, ready=True),
    )


def fetch_crash_looping(code: int, message: str | None) -> dict:
    """fetch-model failed, was restarted and failed again: back-off, with the last exit in lastState."""
    return container_status(
        "fetch-model",
        {"waiting": {"reason": "CrashLoopBackOff",
                     "message": "back-off 40s restarting failed container=fetch-model pod=fraud-7c9d8f6b5-x2x7q_ml(5b0e7c1a)"}},
        {"terminated": terminated(code, message)},
        restarts=3,
    )


def judge(*pods, dep=None) -> StartFailure | None:
    return start_failure(dep or deployment(), [serving_pod(), *pods], LABEL_MODEL_VERSION)


@pytest.mark.parametrize(
    "code, message, reason",
    [
        (3, "registered model 'fraud-detector' has no version 3", "FetchModelNotFound"),
        (4, "MLflow refused the credentials (HTTP 401): check the credentials Secret", "FetchCredentialsRefused"),
        (5, "no room for the model in /var/lib/modelpilot/model: it needs 2.1 GiB, 512.0 MiB free", "FetchDiskFull"),
        (6, REFUSED, "RequirementsRefused"),
        (7, "downloaded model failed verification: model.pkl: listed 1024 bytes, found 512", "FetchVerificationFailed"),
        (8, "requirements policy Install: could not resolve the model's requirements with uv: No solution found",
         "RequirementsInstallFailed"),
        (1, "cannot reach the MLflow server at http://mlflow.mlflow:5000: connection refused", "FetchFailed"),
        (2, "--model-uri must be models:/<name>/<version>", "FetchFailed"),
    ],
)
def test_each_fetch_exit_code_has_its_reason_and_carries_the_termination_message(code, message, reason):
    failure = judge(pod(init=fetch_crash_looping(code, message + "\n")))
    assert failure == StartFailure(reason, f"fetch-model exited {code}: {message}", "fetch-model", code)


def test_the_fetch_failure_is_reported_through_every_step_of_its_restart_cycle():
    last = {"terminated": terminated(6, REFUSED)}
    steps = [
        container_status("fetch-model", {"terminated": terminated(6, REFUSED)}, restarts=0),  # the first exit
        fetch_crash_looping(6, REFUSED),  # backing off
        container_status("fetch-model", {"running": {"startedAt": "2026-03-01T10:01:30Z"}}, last, restarts=3),
    ]
    reasons = {judge(pod(init=step)).reason for step in steps}
    assert reasons == {"RequirementsRefused"}  # no flapping back to "progressing" while it retries


def test_a_fetch_that_fails_without_a_message_says_how_it_ended():
    init = container_status("fetch-model", {"waiting": {"reason": "CrashLoopBackOff"}},
                            {"terminated": terminated(137, reason="OOMKilled")}, restarts=2)
    assert judge(pod(init=init)).message == "fetch-model exited 137 (OOMKilled)"


def test_a_fetch_that_succeeded_after_a_failed_attempt_is_not_a_failure():
    init = container_status("fetch-model", {"terminated": terminated(0, reason="Completed")},
                            {"terminated": terminated(1, "cannot reach the MLflow server")}, restarts=1)
    assert judge(pod(init=init)) is None


@pytest.mark.parametrize(
    "init, server",
    [
        # Scheduled, images being prepared.
        (container_status("fetch-model", {"waiting": {"reason": "PodInitializing"}}),
         container_status("model-server", {"waiting": {"reason": "PodInitializing"}})),
        (container_status("fetch-model", {"waiting": {"reason": "ContainerCreating"}}),
         container_status("model-server", {"waiting": {"reason": "PodInitializing"}})),
        # Downloading the model.
        (container_status("fetch-model", {"running": {"startedAt": "2026-03-01T10:00:05Z"}}),
         container_status("model-server", {"waiting": {"reason": "PodInitializing"}})),
        # Loading the model, not ready yet.
        (None, container_status("model-server", {"running": {"startedAt": "2026-03-01T10:00:20Z"}})),
    ],
)
def test_the_normal_first_seconds_of_a_pod_are_not_a_failure(init, server):
    assert judge(pod(init=init, server=server)) is None


def test_a_pod_not_yet_started_at_all_is_not_a_failure():
    fresh = pod()
    fresh["status"] = {"phase": "Pending", "conditions": [pod_condition("PodScheduled", "True")], "qosClass": "BestEffort"}
    assert judge(fresh) is None


def test_the_model_server_crash_loop_carries_its_last_exit():
    message = "cannot load /var/lib/modelpilot/model: ModuleNotFoundError: No module named 'xgboost'"
    server = container_status("model-server", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                              {"terminated": terminated(1, message)}, restarts=5)
    failure = judge(pod(server=server))
    assert failure == StartFailure("ModelServerCrashLoop", f"model-server exited 1: {message}", "model-server", 1)


def test_the_model_server_running_again_between_crashes_is_still_crash_looping():
    server = container_status("model-server", {"running": {"startedAt": "2026-03-01T10:03:00Z"}},
                              {"terminated": terminated(137, reason="OOMKilled")}, restarts=4)
    failure = judge(pod(server=server))
    assert (failure.reason, failure.message, failure.exit_code) == (
        "ModelServerCrashLoop", "model-server exited 137 (OOMKilled)", 137)


def test_a_server_that_restarted_once_and_is_ready_again_is_fine():
    server = container_status("model-server", {"running": {"startedAt": "2026-03-01T10:03:00Z"}},
                              {"terminated": terminated(137, reason="OOMKilled")}, restarts=1, ready=True)
    assert judge(pod(server=server, phase="Running", ready=True)) is None


@pytest.mark.parametrize(
    "waiting, reason",
    [
        ({"reason": "ErrImagePull", "message": 'failed to pull and unpack image "registry.example/runtime:9": not found'},
         "ImagePullFailed"),
        ({"reason": "ImagePullBackOff", "message": 'Back-off pulling image "registry.example/runtime:9"'},
         "ImagePullFailed"),
        ({"reason": "ErrImageNeverPull",
          "message": 'Container image "runtime:9" is not present with pull policy of Never'}, "ImageNotPresent"),
        ({"reason": "InvalidImageName", "message": 'Failed to apply default image tag "Runtime:9": invalid reference format'},
         "InvalidImageName"),
        ({"reason": "CreateContainerConfigError", "message": 'secret "mlflow-creds" not found'}, "ContainerConfigInvalid"),
    ],
)
def test_image_and_configuration_problems_carry_the_kubelets_message(waiting, reason):
    # The init container is the first one the kubelet tries to start, so it is the one that waits.
    failure = judge(pod(init=container_status("fetch-model", {"waiting": waiting})))
    assert failure == StartFailure(reason, f"fetch-model: {waiting['message']}", "fetch-model")


def test_an_injected_init_container_or_sidecar_failing_gets_a_generic_reason():
    mesh = container_status("istio-init", {"waiting": {"reason": "CrashLoopBackOff"}},
                            {"terminated": terminated(1, "iptables: permission denied")}, restarts=2)
    broken = pod()
    broken["status"]["initContainerStatuses"].insert(0, mesh)
    assert judge(broken).reason == "InitContainerFailed"


def test_only_pods_of_the_templates_version_count():
    old_and_broken = pod(name="fraud-5f6b7c8d9-zzzzz", version="2", template_hash="5f6b7c8d9",
                         init=fetch_crash_looping(3, "no version 2"))
    assert judge(old_and_broken) is None


def test_pods_of_an_older_template_of_the_same_version_do_not_count():
    # The policy was Refuse (failing), then changed to Warn: a new ReplicaSet, same version.
    refused = pod(name="fraud-6a7b8c9d0-aaaaa", template_hash="6a7b8c9d0", created="2026-03-01T10:00:00Z",
                  init=fetch_crash_looping(6, REFUSED))
    starting = pod(name="fraud-7c9d8f6b5-bbbbb", template_hash="7c9d8f6b5", created="2026-03-01T10:02:00Z")
    assert judge(refused, starting) is None
    assert judge(refused).reason == "RequirementsRefused"


def test_pods_on_their_way_out_do_not_count():
    assert judge(pod(init=fetch_crash_looping(6, REFUSED), deleting=True)) is None
    evicted = pod(init=fetch_crash_looping(6, REFUSED), phase="Failed")
    assert judge(evicted) is None


def test_nothing_is_judged_until_the_controller_has_seen_the_template():
    assert judge(pod(init=fetch_crash_looping(6, REFUSED)), dep=deployment(generation=5, observed=4)) is None


def test_a_deployment_past_its_progress_deadline_is_stuck():
    stalled = deployment(conditions=[{
        "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": 'ReplicaSet "fraud-7c9d8f6b5" has timed out progressing.',
        "lastUpdateTime": "2026-03-01T10:10:00Z", "lastTransitionTime": "2026-03-01T10:10:00Z",
    }])
    unschedulable = pod()
    unschedulable["status"] = {"phase": "Pending", "conditions": [
        pod_condition("PodScheduled", "False", "Unschedulable", "0/1 nodes are available: 1 Insufficient memory.")]}
    failure = judge(unschedulable, dep=stalled)
    assert failure == StartFailure(
        "ProgressDeadlineExceeded", 'Deployment fraud: ReplicaSet "fraud-7c9d8f6b5" has timed out progressing.')
    # A pod's own account is more specific than the deadline.
    assert judge(pod(init=fetch_crash_looping(4, "refused")), dep=stalled).reason == "FetchCredentialsRefused"


def test_pods_that_cannot_be_created_are_reported():
    forbidden = deployment(conditions=[{
        "type": "ReplicaFailure", "status": "True", "reason": "FailedCreate",
        "message": 'pods "fraud-7c9d8f6b5-x2x7q" is forbidden: exceeded quota: ml-quota, '
                   'requested: pods=1, used: pods=10, limited: pods=10',
        "lastUpdateTime": "2026-03-01T10:00:01Z", "lastTransitionTime": "2026-03-01T10:00:01Z",
    }])
    failure = judge(dep=forbidden)
    assert failure.reason == "PodCreateFailed" and "exceeded quota" in failure.message


def test_messages_are_one_bounded_line_without_url_credentials():
    message = "cannot reach http://admin:hunter2@mlflow:5000\n" + "x" * 2000
    failure = judge(pod(init=fetch_crash_looping(1, message)))
    assert len(failure.message) == MESSAGE_LIMIT and "\n" not in failure.message
    assert "hunter2" not in failure.message and "http://mlflow:5000" in failure.message


def test_ready_versions_name_who_still_serves():
    pods = [serving_pod(), serving_pod(name="fraud-5f6b7c8d9-fghij"), pod(init=fetch_crash_looping(6, REFUSED))]
    assert ready_versions(deployment(), pods, LABEL_MODEL_VERSION) == ("2",)
    assert ready_versions(deployment(), [pod()], LABEL_MODEL_VERSION) == ()


def test_lingering_pods_count_the_previous_version_until_it_is_gone():
    stopping = serving_pod(name="fraud-5f6b7c8d9-fghij")
    stopping["metadata"]["deletionTimestamp"] = "2026-03-01T10:00:00Z"
    new = pod(name="fraud-7c9d8f6b5-k2k2k", ready=True)
    assert lingering_pods(deployment(), [serving_pod(), stopping, new], LABEL_MODEL_VERSION) == 2
    assert lingering_pods(deployment(), [new], LABEL_MODEL_VERSION) == 0
    gone = serving_pod(name="fraud-5f6b7c8d9-zzzzz")
    gone["status"]["phase"] = "Succeeded"
    assert lingering_pods(deployment(), [gone, new], LABEL_MODEL_VERSION) == 0


def test_essentials_keep_what_the_judgement_reads_and_drop_the_rest():
    full = pod(init=fetch_crash_looping(6, REFUSED))
    kept = essentials(full)
    assert "spec" not in kept and "managedFields" not in kept["metadata"]
    assert start_failure(deployment(), [kept], LABEL_MODEL_VERSION) == start_failure(
        deployment(), [full], LABEL_MODEL_VERSION
    )
    kept["status"]["initContainerStatuses"][0]["name"] = "changed"
    assert full["status"]["initContainerStatuses"][0]["name"] == "fetch-model"  # a copy, not a view


def test_container_names_are_the_rendered_ones():
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"name": "m", "version": "1"}, "mlflow": {"trackingUri": "http://mlflow:5000"}}
    )
    rendered = workload.deployment(Owner("fraud", "ml", "uid"), spec, ResolvedModel(name="m", version="1"), IMAGE)
    pod_spec = rendered["spec"]["template"]["spec"]
    assert [c["name"] for c in pod_spec["initContainers"]] == [health.FETCH_CONTAINER]
    assert [c["name"] for c in pod_spec["containers"]] == [health.SERVER_CONTAINER]
