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


# Kind -> (API class, what its list methods are named after), for every kind the scan reads.
_KINDS = {
    "events": (client.CoreV1Api, "event"), "pods": (client.CoreV1Api, "pod"), "services": (client.CoreV1Api, "service"),
    "configmaps": (client.CoreV1Api, "config_map"), "deployments": (client.AppsV1Api, "deployment"),
    "replicasets": (client.AppsV1Api, "replica_set"), "leases": (client.CoordinationV1Api, "lease"),
    "horizontalpodautoscalers": (client.AutoscalingV2Api, "horizontal_pod_autoscaler"),
}  # fmt: skip


def _lists(api_client, namespace: str | None) -> dict[str, dict]:
    """Every kind the scan reads, in `namespace` or (None) in all namespaces, as the API serves them."""
    custom = client.CustomObjectsApi(api_client)
    calls = {
        kind: (lambda api=api, name=name: getattr(api(api_client), f"list_namespaced_{name}")(namespace))
        if namespace else (lambda api=api, name=name: getattr(api(api_client), f"list_{name}_for_all_namespaces")())
        for kind, (api, name) in _KINDS.items()
    }
    calls[PLURAL] = ((lambda: custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)) if namespace
                     else (lambda: custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)))  # fmt: skip
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
    lists = _lists(api_client, namespace)
    for kind, listed in lists.items():
        leaks.scan_json(f"{kind} in {namespace}", listed)
    core = client.CoreV1Api(api_client)
    for pod in lists["pods"]["items"]:
        name, status = pod["metadata"]["name"], pod.get("status") or {}
        for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
            for previous in (False, True) if container.get("restartCount") else (False,):
                try:
                    text = core.read_namespaced_pod_log(name, namespace, container=container["name"], previous=previous,
                                                        _request_timeout=10)  # fmt: skip
                except (ApiException, ValueError):
                    continue  # never started, or its log is gone with its container
                leaks.scan(f"log of {namespace}/{name}/{container['name']}", text or "")


def scan_cluster(api_client, server_metrics_text: str) -> None:
    """What is left everywhere at the end, cluster-scoped annotations included, and the API server's metrics."""
    for kind, listed in _lists(api_client, None).items():
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
