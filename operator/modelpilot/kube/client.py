"""One Kubernetes API client for the process, from the in-cluster service account or a kubeconfig."""

from __future__ import annotations

import functools

import kubernetes

# (connect, read) seconds: one slow API call must not hold a worker thread for long.
REQUEST_TIMEOUT = (5, 30)


@functools.cache
def api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()
