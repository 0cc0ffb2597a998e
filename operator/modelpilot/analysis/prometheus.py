"""The Prometheus provider: instant queries over the HTTP API, with a total timeout per query, optional
bearer-token or basic auth and a private CA. Answers that are not one number (an HTML error page, a matrix,
several series) are provider errors with a message that says so; credentials never appear in one."""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from dataclasses import dataclass, field

import httpx

from ..metrics import PROMETHEUS_QUERIES
from . import ProviderError

CONNECT_TIMEOUT = 5.0
# How Go writes a float64 (Prometheus' sample values); Python's float() also takes "1_000" and " 1 ".
_NUMBER = re.compile(r"[-+]?(([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?|Inf|NaN)")


@dataclass(frozen=True)
class PrometheusAuth:
    token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_pem: str | None = field(default=None, repr=False)

    # Keys read from the Secret spec.rollout.analysis.prometheus.credentialsSecret names.
    SECRET_KEYS = ("token", "username", "password", "ca.crt")

    @classmethod
    def from_secret_data(cls, data: dict[str, str]) -> PrometheusAuth:
        return cls(data.get("token"), data.get("username"), data.get("password"), data.get("ca.crt"))

    def __repr__(self) -> str:
        return "PrometheusAuth(<redacted>)"


class PrometheusProvider:
    def __init__(self, address: str, timeout_seconds: float = 10.0, auth: PrometheusAuth | None = None):
        self.address = address.rstrip("/")
        self.timeout = timeout_seconds
        self.auth = auth or PrometheusAuth()

    async def query(self, promql: str) -> float | None:
        started, outcome = time.monotonic(), "error"
        try:
            async with asyncio.timeout(self.timeout):
                async with self._client() as client:
                    response = await client.post(f"{self.address}/api/v1/query", data={"query": promql})
            value = _value(self.address, response)
            outcome = "ok"
            return value
        except TimeoutError:
            raise ProviderError(f"Prometheus at {self.address} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"Prometheus at {self.address} is unreachable: {type(exc).__name__}") from None
        finally:
            PROMETHEUS_QUERIES.labels(outcome=outcome).observe(time.monotonic() - started)

    def _client(self) -> httpx.AsyncClient:
        headers, auth = {}, None
        if self.auth.username is not None:
            auth = httpx.BasicAuth(self.auth.username, self.auth.password or "")
        elif self.auth.token:
            headers["Authorization"] = f"Bearer {self.auth.token}"
        verify: bool | ssl.SSLContext = True
        if self.auth.ca_pem:
            verify = ssl.create_default_context(cadata=self.auth.ca_pem)
        timeout = httpx.Timeout(self.timeout, connect=min(CONNECT_TIMEOUT, self.timeout))
        return httpx.AsyncClient(headers=headers, auth=auth, verify=verify, timeout=timeout)


def _value(address: str, response: httpx.Response) -> float | None:
    """The one number of an instant vector or scalar; None for an empty vector."""
    where = f"Prometheus at {address}"
    try:
        body = response.json()
    except ValueError:
        raise ProviderError(f"{where} answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):
        raise ProviderError(f"{where} answered JSON that is not a query result")
    if body.get("status") != "success" or not response.is_success:
        error = str(body.get("error") or "")[:300]
        kind = str(body.get("errorType") or f"HTTP {response.status_code}")[:64]
        raise ProviderError(f"{where} refused the query ({kind}): {error}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError(f"{where} answered JSON that is not a query result")
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(where, result)
    if kind != "vector" or not isinstance(result, list):
        raise ProviderError(f"{where} answered a {str(kind)[:32]} where one number was expected")
    if not result:
        return None
    if len(result) > 1:
        raise ProviderError(f"{where} answered {len(result)} series where one number was expected")
    return _number(where, result[0].get("value") if isinstance(result[0], dict) else None)


def _number(where: str, sample) -> float:
    """The value of a [timestamp, "value"] pair: Prometheus writes values as strings, NaN and ±Inf included."""
    if isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str) and _NUMBER.fullmatch(sample[1]):
        return float(sample[1])
    raise ProviderError(f"{where} answered a sample that is not a number")
