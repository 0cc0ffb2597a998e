"""The Prometheus provider against a real Prometheus (every shape of answer its HTTP API gives) and against
loopback servers that misbehave the ways a proxy in front of one does: HTML error pages, silence, auth."""

from __future__ import annotations

import asyncio
import http.server
import math
import socket
import threading
from contextlib import contextmanager

import pytest

from modelpilot.analysis import ProviderError
from modelpilot.analysis.prometheus import PrometheusAuth, PrometheusProvider

from tests.support.leaks import secret_value
from tests.support.processes import free_port

pytestmark = pytest.mark.prometheus

SECRET_TOKEN = secret_value("prometheus-token")


def ask(address: str, promql: str, timeout: float = 5.0, auth: PrometheusAuth | None = None):
    return asyncio.run(PrometheusProvider(address, timeout, auth).query(promql))


@pytest.mark.parametrize(
    "promql, expected",
    [("vector(0.25)", 0.25), ("1 + 1", 2.0), ("absent_metric_of_nobody", None), ("vector(1) / 0", math.inf)],
)
def test_instant_vectors_and_scalars_read_as_one_number_or_none(prometheus, promql, expected):
    assert ask(prometheus.url, promql) == expected


def test_nan_reads_as_nan_for_the_verdict_to_judge(prometheus):
    assert math.isnan(ask(prometheus.url, "vector(0) / 0"))


@pytest.mark.parametrize(
    "promql, message",
    [
        ("vector(1)[1m:]", "answered a matrix where one number was expected"),
        ('label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")', "answered 2 series"),
        ("sum(rate(", "refused the query (bad_data)"),
    ],
)
def test_answers_that_are_not_one_number_are_provider_errors_that_say_why(prometheus, promql, message):
    with pytest.raises(ProviderError, match=r"Prometheus at http://127\.0\.0\.1:\d+ ") as caught:
        ask(prometheus.url, promql)
    assert message in str(caught.value)


def test_an_unreachable_server_is_a_provider_error():
    address = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ProviderError, match=f"Prometheus at {address} is unreachable: ConnectError"):
        ask(address, "vector(1)")


@contextmanager
def loopback(handler_body):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the stdlib's name
            handler_body(self)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Handler
    finally:
        server.shutdown()


def reply(request, status: int, body: bytes, content_type: str) -> None:
    request.send_response(status)
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(body)))
    request.end_headers()
    request.wfile.write(body)


def test_an_html_error_page_from_a_proxy_is_a_provider_error():
    with loopback(lambda r: reply(r, 502, b"<html><body>Bad Gateway</body></html>", "text/html")) as (address, _):
        with pytest.raises(ProviderError, match="answered HTTP 502 with a body that is not JSON"):
            ask(address, "vector(1)")


def test_a_server_that_never_answers_ends_at_the_timeout():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(ProviderError, match=f"Prometheus at {address} did not answer within 1.5 s"):
            ask(address, "vector(1)", timeout=1.5)
    finally:
        listener.close()


def test_bearer_and_basic_auth_are_sent_and_never_shown():
    seen: list[str | None] = []

    def answer(request):
        seen.append(request.headers.get("Authorization"))
        reply(request, 401, b'{"status":"error","errorType":"unauthorized","error":"no"}', "application/json")

    with loopback(answer) as (address, _):
        for auth in (PrometheusAuth(token=SECRET_TOKEN), PrometheusAuth(username="reader", password=SECRET_TOKEN)):
            with pytest.raises(ProviderError) as caught:
                ask(address, "vector(1)", auth=auth)
            assert SECRET_TOKEN not in str(caught.value) and SECRET_TOKEN not in repr(auth)
    assert seen[0] == f"Bearer {SECRET_TOKEN}"
    assert seen[1].startswith("Basic ") and seen[1] != f"Bearer {SECRET_TOKEN}"
