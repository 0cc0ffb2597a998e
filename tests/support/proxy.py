"""A TCP proxy on loopback that a test can cut and restore, to take a server away from its clients (the
port refuses connections, and connections already open are dropped) and give it back at the same
address. Pods reach it too: the real node sends the host's address on to loopback."""

from __future__ import annotations

import socket
import threading

from .processes import free_port_to_rebind


class CuttableProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = free_port_to_rebind()  # bound again at each restore
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "CuttableProxy":
        self.restore()
        return self

    def __exit__(self, *exc) -> None:
        self.cut()

    def restore(self) -> None:
        if self._listener is not None:
            return  # not cut
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections until `restore`, and drop the open ones (a watch stream, a keep-alive
        connection), as a server that went away would."""
        with self._lock:
            listener, self._listener = self._listener, None
            dropped, self._open = self._open, set()
        if listener is not None:
            # close() alone leaves the port listening while the accept thread is blocked on it (the kernel
            # keeps the socket for the call): clients would still get through, and the restore could not
            # bind. shutdown() ends the accept at once.
            _close(listener)
            listener.close()
        for sock in dropped:
            _close(sock)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)  # the bound was for connecting: a watch stream may idle for minutes
            with self._lock:
                if self._listener is not listener:  # cut while this one was being connected
                    for sock in (client, server):
                        _close(sock)
                        sock.close()
                    return
                self._open.update((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            _close(sock)
        source.close()  # each direction's thread closes its source; the sink is the other's source


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
