"""Where the leak scan looks in a cluster: the objects users read (ModelDeployments with their status,
Events, pods and what makes them, ConfigMaps, Leases; all annotations with them) and the logs of every
container, taken before a test's namespace goes away; and at the end, what is left cluster-wide plus
the API server's metrics."""

from __future__ import annotations

import httpx
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.support import leaks

GROUP, VERSION, PLURAL = "modelpilot.io", "v1alpha1", "modeldeployments"


def _namespaced_lists(api_client, namespace: str | None) -> dict[str, object]:
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom, coordination = client.CustomObjectsApi(api_client), client.CoordinationV1Api(api_client)
    autoscaling = client.AutoscalingV2Api(api_client)
    if namespace is None:
        calls = {
            "events": core.list_event_for_all_namespaces, "pods": core.list_pod_for_all_namespaces,
            "services": core.list_service_for_all_namespaces, "configmaps": core.list_config_map_for_all_namespaces,
            "deployments": apps.list_deployment_for_all_namespaces, "replicasets": apps.list_replica_set_for_all_namespaces,
            "leases": coordination.list_lease_for_all_namespaces,
            "horizontalpodautoscalers": autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces,
            PLURAL: lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL),
        }  # fmt: skip
    else:
        calls = {
            "events": lambda: core.list_namespaced_event(namespace), "pods": lambda: core.list_namespaced_pod(namespace),
            "services": lambda: core.list_namespaced_service(namespace),
            "configmaps": lambda: core.list_namespaced_config_map(namespace),
            "deployments": lambda: apps.list_namespaced_deployment(namespace),
            "replicasets": lambda: apps.list_namespaced_replica_set(namespace),
            "leases": lambda: coordination.list_namespaced_lease(namespace),
            "horizontalpodautoscalers": lambda: autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace),
            PLURAL: lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL),
        }  # fmt: skip
    found = {}
    for kind, call in calls.items():
        try:
            listed = call()
        except ApiException as e:
            if e.status == 404:  # the CRD was never installed
                continue
            raise
        found[kind] = listed if isinstance(listed, dict) else api_client.sanitize_for_serialization(listed)
    return found


def scan_namespace(api_client, namespace: str) -> None:
    """Objects and container logs of one namespace, before it is deleted."""
    for kind, listed in _namespaced_lists(api_client, namespace).items():
        leaks.scan_json(f"{kind} in {namespace}", listed)
    core = client.CoreV1Api(api_client)
    for pod in core.list_namespaced_pod(namespace).items:
        for status in (pod.status.init_container_statuses or []) + (pod.status.container_statuses or []):
            for previous in (False, True) if status.restart_count else (False,):
                try:
                    text = core.read_namespaced_pod_log(
                        pod.metadata.name, namespace, container=status.name, previous=previous, _request_timeout=10)
                except (ApiException, ValueError):
                    continue  # never started, or its log is gone with its container
                leaks.scan(f"log of {namespace}/{pod.metadata.name}/{status.name}", text or "")


def scan_cluster(api_client, server_metrics_text: str) -> None:
    """What is left everywhere at the end, cluster-scoped annotations included, and the API server's metrics."""
    for kind, listed in _namespaced_lists(api_client, None).items():
        leaks.scan_json(f"{kind} in all namespaces", listed)
    leaks.scan_json("namespaces", api_client.sanitize_for_serialization(client.CoreV1Api(api_client).list_namespace()))
    leaks.scan("the API server's metrics", server_metrics_text)


def scan_url(where: str, url: str) -> None:
    """A page a server exports (metrics, series), if it still answers."""
    try:
        leaks.scan(where, httpx.get(url, timeout=10).text)
    except httpx.HTTPError:
        pass


def scan_series(prometheus_url: str) -> None:
    """Every label set a Prometheus has stored: what it scraped from the operator and the model servers."""
    scan_url("series Prometheus stored", f"{prometheus_url}/api/v1/series?match[]=%7B__name__%3D~%22.%2B%22%7D")
