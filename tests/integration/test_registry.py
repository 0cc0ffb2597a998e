"""Resolving model references against a real MLflow server, including each way it can fail."""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import threading
from collections.abc import Iterator

import pytest
from modelpilot.api.spec import ModelRef
from modelpilot.registry.errors import (
    AliasNotFound,
    CredentialsRefused,
    ModelNotFound,
    RegistryUnreachable,
    VersionNotFound,
)
from modelpilot.registry.mlflow import Credentials, MlflowRegistry

from tests.support.mlflow import ADMIN_PASSWORD, ADMIN_USER
from tests.support.processes import free_port


def resolve(uri: str, ref: ModelRef, credentials: Credentials | None = None):
    async def go():
        async with MlflowRegistry(uri, credentials) as registry:
            return await registry.resolve(ref)

    return asyncio.run(go())


@pytest.fixture
def admin():
    return Credentials(username=ADMIN_USER, password=ADMIN_PASSWORD)


@pytest.mark.mlflow
def test_version_resolves_to_its_run_and_source(mlflow, admin, registered_model):
    model = resolve(mlflow.uri, ModelRef(name=registered_model, version="2"), admin)
    assert model.version == "2"
    assert model.alias is None
    assert model.run_id and len(model.run_id) == 32
    assert model.source.startswith(("models:/", "mlflow-artifacts:"))


@pytest.mark.mlflow
def test_alias_resolves_to_the_version_it_points_at(mlflow, admin, registered_model):
    model = resolve(mlflow.uri, ModelRef(name=registered_model, alias="champion"), admin)
    assert (model.version, model.alias) == ("1", "champion")


@pytest.mark.mlflow
@pytest.mark.parametrize(
    "ref, error",
    [
        (ModelRef(name="no-such-model", version="1"), ModelNotFound),
        (ModelRef(name="no-such-model", alias="champion"), ModelNotFound),
        (ModelRef(name="fraud-detector", version="99"), VersionNotFound),
        (ModelRef(name="fraud-detector", alias="nobody"), AliasNotFound),
    ],
)
def test_missing_references_name_what_is_missing(mlflow, admin, registered_model, ref, error):
    with pytest.raises(error) as caught:
        resolve(mlflow.uri, ref, admin)
    assert not caught.value.retryable
    assert ref.name in str(caught.value)


@pytest.mark.mlflow
def test_wrong_password_is_refused_not_retried(mlflow, registered_model):
    with pytest.raises(CredentialsRefused) as caught:
        resolve(mlflow.uri, ModelRef(name=registered_model, version="1"), Credentials(username=ADMIN_USER, password="wrong"))
    assert "wrong" not in str(caught.value)


def test_closed_port_is_unreachable_and_retryable():
    with pytest.raises(RegistryUnreachable) as caught:
        resolve(f"http://127.0.0.1:{free_port()}", ModelRef(name="m", version="1"))
    assert caught.value.retryable


class TricklingServer:
    """Accepts one connection, reads the request, sends `head` at once, then `trickle` one byte a second.

    `closed` is set once the client has closed the connection.
    """

    def __init__(self, head: bytes, trickle: Iterator[bytes]):
        self.head = head
        self.trickle = trickle
        self.closed = threading.Event()
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> TricklingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes an accept still waiting
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:  # stopped before any client came
            return
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            conn.sendall(self.head)
            for byte in self.trickle:
                # Wait a second between bytes, watching for the client hanging up meanwhile.
                readable, _, _ = select.select([conn], [], [], 1.0)
                if self._stop.is_set():
                    return
                try:
                    if readable and not conn.recv(4096):
                        break
                    conn.sendall(byte)
                except OSError:  # reset by the client
                    break
            self.closed.set()


def _forever(start: bytes, filler: bytes) -> Iterator[bytes]:
    return itertools.chain((start[i : i + 1] for i in range(len(start))), itertools.repeat(filler))


# (sent at once, trickled, then repeated forever)
STATUS_LINE = (b"", b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a")
BODY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", b'{"model_version": ', b" ")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("head, start, filler", [STATUS_LINE, BODY], ids=["status-line", "body"])
def test_trickling_server_is_cut_off_at_the_deadline(head, start, filler):
    with TricklingServer(head, _forever(start, filler)) as server:
        uri = f"http://127.0.0.1:{server.port}"

        async def go():
            async with MlflowRegistry(uri, timeout=3) as registry:
                with pytest.raises(RegistryUnreachable) as caught:
                    await registry.resolve(ModelRef(name="m", version="1"))
                # Closed by the cancelled request itself, while the client is still open.
                assert await asyncio.to_thread(server.closed.wait, 5)
            return caught.value

        error = asyncio.run(go())
    assert str(error) == f"MLflow at {uri} did not answer within 3 s"
    assert error.retryable
