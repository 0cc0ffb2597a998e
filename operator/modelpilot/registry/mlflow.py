"""Resolves ModelDeployment model references through the MLflow Model Registry REST API.

A plain REST client rather than `MlflowClient`: MLflow's client takes credentials from process-wide
environment variables, while each ModelDeployment may name its own server and Secret. Calls are
async, and each resolution has a hard total deadline: httpx's timeouts bound each read, so a server
trickling its answer a byte at a time would otherwise hold the call forever.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from ..api.spec import ModelRef
from ..api.status import ResolvedModel
from ..metrics import REGISTRY_REQUESTS
from .errors import (
    AliasNotFound,
    CredentialsRefused,
    ModelNotFound,
    RegistryError,
    RegistryUnreachable,
    VersionNotFound,
    VersionNotReady,
)

CONNECT_TIMEOUT = 5.0
_VERSION = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Credentials:
    """MLflow credentials, as the keys MLflow's own clients read from the environment."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    # The Secret keys the operator reads; the others are for the fetch step in the model's pod.
    SECRET_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> Credentials:
        return cls(
            token=data.get("MLFLOW_TRACKING_TOKEN"),
            username=data.get("MLFLOW_TRACKING_USERNAME"),
            password=data.get("MLFLOW_TRACKING_PASSWORD"),
        )

    def auth(self) -> httpx.Auth | None:
        if self.username is not None:
            return httpx.BasicAuth(self.username, self.password or "")
        return None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token and self.username is None else {}

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        return f"Credentials(token={'***' if self.token else None}, username={self.username!r})"


@asynccontextmanager
async def deadline(tracking_uri: str, seconds: float) -> AsyncIterator[None]:
    """Cancels what runs inside once `seconds` have passed, and says the registry did not answer."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise RegistryUnreachable(f"MLflow at {tracking_uri} did not answer within {seconds:g} s") from None


class MlflowRegistry:
    """One tracking server's Model Registry."""

    def __init__(self, tracking_uri: str, credentials: Credentials | None = None, timeout: float = 10.0):
        credentials = credentials or Credentials()
        self.tracking_uri = tracking_uri.rstrip("/")
        self._timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=f"{self.tracking_uri}/api/2.0/mlflow/",
            auth=credentials.auth(),
            headers=credentials.headers(),
            # Only connect gets its own bound: resolve's total deadline covers everything else.
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> MlflowRegistry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def resolve(self, ref: ModelRef) -> ResolvedModel:
        """The concrete version a reference names, or a RegistryError saying why there is none.

        Takes at most `timeout` seconds in all; past that the request is cancelled and its connection closed.
        """
        async with deadline(self.tracking_uri, self._timeout):
            return await self._resolve(ref)

    async def _resolve(self, ref: ModelRef) -> ResolvedModel:
        if ref.alias is not None:
            # MLflow answers a missing alias with 400 INVALID_PARAMETER_VALUE rather than 404.
            found = await self._get("registered-models/alias", {"name": ref.name, "alias": ref.alias}, "INVALID_PARAMETER_VALUE")
            if found is None:
                await self._require_model(ref.name)
                raise AliasNotFound(f"registered model {ref.name!r} has no alias {ref.alias!r}")
        else:
            found = await self._get("model-versions/get", {"name": ref.name, "version": ref.version})
            if found is None:
                await self._require_model(ref.name)
                raise VersionNotFound(f"registered model {ref.name!r} has no version {ref.version}")
        return self._checked(ref, found)

    def _checked(self, ref: ModelRef, found: object) -> ResolvedModel:
        """The version an answer names, if it reads as MLflow's: a proxy's page or another server's JSON
        must not become a version whose number lands in labels, names and queries."""
        version = found.get("model_version") if isinstance(found, dict) else None
        if not isinstance(version, dict):
            raise self._garbled("no model_version in its answer")
        number = version.get("version")
        # MLflow numbers versions 1, 2, 3...; JSON may carry them as numbers or strings. bool is an int in Python.
        if isinstance(number, bool) or not isinstance(number, (int, str)) or not _VERSION.fullmatch(str(number)):
            raise self._garbled("a version that is not a positive whole number")
        number = str(number)
        if ref.version is not None and number != ref.version:
            raise self._garbled(f"version {number} when asked for version {ref.version}")
        status, run_id, source = version.get("status", "READY"), version.get("run_id"), version.get("source", "")
        if not isinstance(status, str) or not isinstance(run_id, (str, type(None))) or not isinstance(source, str):
            raise self._garbled(f"a version {number} whose status, run_id or source is not text")
        if status != "READY":
            raise VersionNotReady(f"model {ref.name!r} version {number} is {status[:64]} in the registry")
        return ResolvedModel(name=ref.name, version=number, alias=ref.alias, run_id=run_id or None, source=source)

    def _garbled(self, what: str) -> RegistryUnreachable:
        # Retryable: a proxy's error page or a server mid-upgrade passes; the message says what came back.
        return RegistryUnreachable(f"{self.tracking_uri} did not answer like an MLflow server: {what}")

    async def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        """Set a tag on one model version; needs the right to edit the registered model."""
        async with deadline(self.tracking_uri, self._timeout):
            body = {"name": name, "version": version, "key": key, "value": value}
            try:
                response = await self._http.post("model-versions/set-tag", json=body)
            except httpx.TransportError as exc:
                raise RegistryUnreachable(f"cannot reach MLflow at {self.tracking_uri}: {type(exc).__name__}") from exc
        if response.status_code in (401, 403):
            raise CredentialsRefused(f"MLflow at {self.tracking_uri} refused to tag (HTTP {response.status_code})")
        if response.status_code >= 400:
            raise RegistryError(f"MLflow at {self.tracking_uri} refused to tag: HTTP {response.status_code} {response.text[:200]}")

    async def _require_model(self, name: str) -> None:
        if await self._get("registered-models/get", {"name": name}) is None:
            raise ModelNotFound(f"no registered model named {name!r} in {self.tracking_uri}")

    async def _get(self, path: str, params: dict[str, str | None], missing_code: str = "RESOURCE_DOES_NOT_EXIST") -> dict | None:
        """The JSON body, or None when MLflow says the resource does not exist."""
        started = time.monotonic()
        try:
            response = await self._http.get(path, params=params)
        except httpx.TransportError as exc:
            REGISTRY_REQUESTS.labels(outcome="unreachable").observe(time.monotonic() - started)
            raise RegistryUnreachable(f"cannot reach MLflow at {self.tracking_uri}: {type(exc).__name__}: {exc}") from exc
        REGISTRY_REQUESTS.labels(outcome=f"{response.status_code // 100}xx").observe(time.monotonic() - started)
        if response.status_code in (401, 403):
            raise CredentialsRefused(f"MLflow at {self.tracking_uri} refused the credentials (HTTP {response.status_code})")
        if response.status_code == 404 or _error_code(response) in ("RESOURCE_DOES_NOT_EXIST", missing_code):
            return None
        if response.status_code >= 500:
            raise RegistryUnreachable(f"MLflow at {self.tracking_uri} answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise RegistryError(f"MLflow at {self.tracking_uri} rejected {path}: HTTP {response.status_code} {response.text[:200]}")
        try:
            return response.json()
        except ValueError as exc:
            raise RegistryUnreachable(f"{self.tracking_uri} did not answer like an MLflow server: {exc}") from exc


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error_code") if isinstance(body, dict) else None
