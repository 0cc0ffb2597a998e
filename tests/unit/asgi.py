"""Calling the model server's ASGI app in-process, and reading a request body as an ASGI app does."""

from __future__ import annotations

import httpx

from modelpilot.serving.metrics import Identity, ServingMetrics
from modelpilot.serving.server import ServingApp


def serving_app() -> ServingApp:
    """A model server for `fraud-detector` version 7 on the canary track, with no model to load."""
    return ServingApp("/nonexistent", ServingMetrics(Identity("fraud", "7", "canary", model_name="fraud-detector")))


async def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        return await client.request(method, path, **kwargs)


async def read_body(receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body
