"""The test cluster is a real one: controllers, scheduler, kwok nodes, admission and RBAC all work."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from kubernetes import client, config

from tests.cluster import launcher
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

LOCAL = not os.environ.get("MODELPILOT_KUBECONFIG")


def restricted_container(name: str = "app") -> dict:
    return {
        "name": name,
        "image": "registry.example/app:1",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def test_deployment_pods_become_ready_through_kwok(kube_api, namespace):
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    # kwok nodes are tainted: pods that should not run for real say so.
                    "spec": {
                        "containers": [{"name": "web", "image": "registry.example/web:1"}],
                        "tolerations": [launcher.KWOK_TOLERATION],
                        "nodeSelector": {"type": "kwok"},
                    },
                },
            },
        },
    )

    def available():
        status = apps.read_namespaced_deployment_status("web", namespace).status
        return status if status.available_replicas == 2 and status.ready_replicas == 2 else None

    wait_for(available, "Deployment web to report 2 available replicas", timeout=60)

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Running"
        assert pod.spec.node_name, "the scheduler bound the pod to a node"
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready.get("Ready") == "True"
        if LOCAL:
            assert pod.spec.node_name.startswith("kwok-node-")


def test_service_gets_a_cluster_ip(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    svc = core.create_namespaced_service(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )
    assert svc.spec.cluster_ip and svc.spec.cluster_ip != "None"
    if LOCAL:
        assert svc.spec.cluster_ip.startswith("10.96.")


def test_pod_security_restricted_rejects_privileged_and_admits_compliant(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                                 "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(client.ApiException) as rejected:
        core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    message = json.loads(rejected.value.body)["message"]
    assert 'violates PodSecurity "restricted:' in message
    assert "privileged" in message

    compliant = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "compliant"},
        "spec": {"containers": [restricted_container()]},
    }
    created = core.create_namespaced_pod(namespace, compliant)
    assert created.metadata.name == "compliant"


def test_rbac_refuses_a_service_account_until_granted(kube_cluster, kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    kubeconfig = kube_cluster.kubeconfig_for_service_account(namespace, "reader")
    reader = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        as_reader = client.CoreV1Api(reader)
        with pytest.raises(client.ApiException) as refused:
            as_reader.list_namespaced_pod(namespace)
        assert refused.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in json.loads(refused.value.body)["message"]

        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "reader-reads-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            },
        )

        def can_list():
            try:
                return as_reader.list_namespaced_pod(namespace) is not None
            except client.ApiException as e:
                if e.status != 403:
                    raise
                return False

        wait_for(can_list, "the RoleBinding to take effect", timeout=30)
        # Granted pods in its namespace, nothing else.
        with pytest.raises(client.ApiException) as still_refused:
            as_reader.list_namespaced_secret(namespace)
        assert still_refused.value.status == 403
    finally:
        reader.close()


def test_kubectl_reports_pinned_versions(kubectl):
    result = kubectl("version", "--output=json", check=True)
    versions = json.loads(result.stdout)
    pinned = launcher.pinned_version("kube", "k8s.io/kubernetes")
    if LOCAL or versions["clientVersion"]["gitVersion"] == pinned:
        assert versions["clientVersion"]["gitVersion"] == pinned
    if LOCAL:
        assert versions["serverVersion"]["gitVersion"] == pinned
    else:
        assert versions["serverVersion"]["gitVersion"].startswith("v1.")


def test_kubectl_sees_ready_kwok_nodes(kubectl):
    result = kubectl("get", "nodes", "--output=json", check=True)
    nodes = json.loads(result.stdout)["items"]
    ready = [
        n["metadata"]["name"] for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    ]
    assert ready
    if LOCAL:
        kwok = sorted(n for n in ready if n.startswith("kwok-node-"))
        assert kwok == [f"kwok-node-{i}" for i in range(3)]
        node = next(n for n in nodes if n["metadata"]["name"] == "kwok-node-0")
        assert node["status"]["allocatable"]["cpu"] == "32"
        assert node["status"]["allocatable"]["pods"] == "110"
        assert node["spec"]["taints"] == [launcher.KWOK_TAINT], "only pods that tolerate it land on a kwok node"


def test_pods_without_the_kwok_toleration_never_land_on_kwok_nodes(kube_api, namespace):
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "intolerant"},
         "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}],
                  "nodeSelector": {"type": "kwok"}}},
    )

    def unschedulable():
        pod = core.read_namespaced_pod("intolerant", namespace)
        conditions = {c.type: c for c in pod.status.conditions or []}
        scheduled = conditions.get("PodScheduled")
        return scheduled if scheduled and scheduled.status == "False" else None

    scheduled = wait_for(unschedulable, "the scheduler to refuse the pod", timeout=60)
    assert scheduled.reason == "Unschedulable"
    assert "untolerated taint" in scheduled.message


def test_helm_reports_pinned_version():
    helm = launcher.default_bin_dir() / "helm"
    if not os.access(helm, os.X_OK):
        pytest.fail(f"helm not found at {helm}: run `make cluster-bins`")
    result = subprocess.run(
        [str(helm), "version", "--template={{.Version}}"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    assert result.stdout.strip() == launcher.pinned_version("helm", "helm.sh/helm/v3")
