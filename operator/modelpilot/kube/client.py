"""Kubernetes API clients for the process, from the in-cluster service account or a kubeconfig."""

from __future__ import annotations

import functools

import kubernetes
from kubernetes.client.rest import RESTResponse

# (connect, read) seconds: one slow API call must not hold a worker thread for long.
REQUEST_TIMEOUT = (5, 30)


@functools.cache
def _configured() -> None:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()


@functools.cache
def api_client() -> kubernetes.client.ApiClient:
    _configured()
    return kubernetes.client.ApiClient()


@functools.cache
def watch_client() -> kubernetes.client.ApiClient:
    """A client of its own for the long-lived watches, so they never hold the connections of short calls."""
    _configured()
    return kubernetes.client.ApiClient()


def send(method: str, url: str, body: object = None, query: list | None = None, content_type: str | None = None,
         timeout: tuple[float, float] = REQUEST_TIMEOUT, client: kubernetes.client.ApiClient | None = None) -> RESTResponse:
    """One request through the client's auth and TLS; the response is not read yet, so it can be streamed."""
    client = client or api_client()
    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    method, full_url, headers, body, post = client.param_serialize(
        method=method, resource_path=url, query_params=query or [], header_params=headers, body=body,
        auth_settings=["BearerToken"],
    )  # fmt: skip
    return client.call_api(method, full_url, header_params=headers, body=body, post_params=post, _request_timeout=timeout)
