"""Get, server-side apply and delete of the kinds a ModelDeployment owns, by apiVersion and kind."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from ..api import GROUP
from .client import send
from .diff import drift
from .handover import HANDOVER_MANAGER, replicas_handover

FIELD_MANAGER = GROUP
log = logging.getLogger(__name__)

_PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HTTPRoute": "httproutes",
    "Secret": "secrets",
    "ModelDeployment": "modeldeployments",
    "Event": "events",
}


def collection(api_version: str, plural: str, namespace: str | None) -> str:
    """The URL of a kind's objects in `namespace`, or in every namespace if None."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace else f"{prefix}/{plural}"


def path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    url = collection(api_version, _PLURALS[kind], namespace)
    return f"{url}/{name}" if name else url


def call(method: str, url: str, body: object = None, query: list | None = None, content_type: str | None = None,
         client: ApiClient | None = None):
    """One request; the JSON answer, or ApiException on an error status."""
    response = send(method, url, body=body, query=query, content_type=content_type, client=client)
    response.read()
    if not 200 <= response.status < 300:
        raise ApiException(http_resp=response)
    return json.loads(response.data) if response.data else None


def get(api_version: str, kind: str, namespace: str, name: str) -> dict | None:
    try:
        return call("GET", path(api_version, kind, namespace, name))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class ApplyRefused(Exception):
    """The API server refused an apply (forbidden, invalid, refused by a webhook); the message says which
    object, the HTTP status and the server's own explanation, for status and Events."""

    reason = "ApplyFailed"

    @classmethod
    def of(cls, desired: dict, exc: ApiException) -> ApplyRefused:
        meta = desired["metadata"]
        try:
            explanation = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            explanation = exc.reason
        text = f"could not apply {desired['kind']} {meta['namespace']}/{meta['name']}: HTTP {exc.status}: {explanation}"
        if exc.status == 404:
            text += f" (does the API server serve {desired['apiVersion']}? Its CRDs may not be installed)"
        return cls(" ".join(text.split())[:512])


class NotOwned(ApplyRefused):
    """An object of a rendered name exists and belongs to someone else; nothing was applied."""

    reason = "NotOwned"


def apply(desired: dict, live: dict | None) -> bool:
    """Server-side apply `desired` unless `live` already holds it. Returns whether a write was sent.

    force=True takes back fields someone else changed by hand: the ModelDeployment is their owner.
    Raises ApplyRefused when the API server answers with an error.
    """
    differs = drift(live, desired, FIELD_MANAGER)
    if differs is None:
        return False
    try:
        handover = replicas_handover(desired, live, FIELD_MANAGER)
        if handover is not None:
            _hand_over(handover)
        _server_side_apply(desired, FIELD_MANAGER, force=True)
    except ApiException as exc:
        # Every refusal, 5xx included: the API server answers an invalid quantity with a 500.
        raise ApplyRefused.of(desired, exc) from None
    meta = desired["metadata"]
    log.info("applied %s %s/%s (differed at %s)", desired["kind"], meta["namespace"], meta["name"], differs)
    return True


def _hand_over(replicas_only: dict) -> None:
    """Give the live replica count a second owner, so leaving it out of our apply keeps it.
    Not forced: a conflict means the autoscaler already owns the count, and nothing is to be handed over."""
    try:
        _server_side_apply(replicas_only, HANDOVER_MANAGER, force=False)
    except ApiException as exc:
        if exc.status != 409:
            raise


def _server_side_apply(body: dict, manager: str, force: bool) -> None:
    meta = body["metadata"]
    query = [("fieldManager", manager)] + ([("force", "true")] if force else [])
    call(
        "PATCH",
        path(body["apiVersion"], body["kind"], meta["namespace"], meta["name"]),
        body=body,
        query=query,
        content_type="application/apply-patch+yaml",
    )


def delete(api_version: str, kind: str, namespace: str, name: str) -> bool:
    try:
        call("DELETE", path(api_version, kind, namespace, name))
        return True
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def patch_status(api_version: str, kind: str, namespace: str, name: str, status: dict) -> None:
    """Replace the status with a merge patch on the status subresource."""
    call(
        "PATCH",
        path(api_version, kind, namespace, name) + "/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


class SecretValueNotText(ValueError):
    """A Secret value the operator reads is not UTF-8 text. Says which key, never what the value holds."""


def secret_fields(namespace: str, name: str, keys: Iterable[str]) -> dict[str, str] | None:
    """The values of `keys` the Secret has, still base64-encoded; None when the Secret does not exist."""
    body = get("v1", "Secret", namespace, name)
    if body is None:
        return None
    data = body.get("data") or {}
    return {key: data[key] for key in keys if key in data}


def decode_keys(data: dict[str, str], keys: Iterable[str]) -> dict[str, str]:
    """Only the keys asked for are decoded: the others (artifact-store keys, binary keystores) are for the
    model's fetch step, not for the operator."""
    decoded = {}
    for key in keys:
        if key not in data:
            continue
        text = _text(data[key])
        if text is None:
            # Raised outside the decoding's except block: a UnicodeDecodeError's repr holds the raw bytes,
            # and a chained one would reach any traceback that is logged.
            raise SecretValueNotText(f"the value of key {key} is not UTF-8 text")
        decoded[key] = text
    return decoded


def _text(encoded: str) -> str | None:
    try:
        return base64.b64decode(encoded, validate=True).decode("utf-8")
    except ValueError:  # binascii.Error and UnicodeDecodeError both are
        return None
