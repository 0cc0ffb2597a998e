"""The outage tests' proxy: a cut refuses at once, and the same port serves again after the restore."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tests.support.proxy import CuttableProxy


@pytest.fixture
def upstream():
    """An echo server on loopback."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(1024), b"")], daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def echo(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"ping")
        return sock.recv(1024)


def test_a_cut_refuses_at_once_and_a_restore_serves_again_on_the_same_port(upstream):
    with CuttableProxy("127.0.0.1", upstream) as proxy:
        assert echo(proxy.port) == b"ping"
        open_one = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        time.sleep(0.2)  # the accept thread is blocked on the listener again
        for _ in range(3):
            proxy.cut()
            with pytest.raises(ConnectionRefusedError):
                echo(proxy.port)
            assert open_one.recv(1024) == b"", "an open connection is dropped by the cut"
            proxy.restore()
            assert echo(proxy.port) == b"ping"
            open_one = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            time.sleep(0.2)
        open_one.close()
