"""Steady client traffic for rollout tests: a few threads send requests in a loop until told to stop,
and every answer is kept with when it was sent, its status and which model version answered."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

VERSION_HEADER = "modelpilot-model-version"


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request left
    status: int  # 0 when no HTTP answer came at all
    version: str | None
    error: str | None = None
    received: float = 0.0  # time.monotonic() when the answer (or the failure) came

    @property
    def ok(self) -> bool:
        return self.status == 200


class Load:
    """`with Load(url, body) as load: ...`; then `load.answers`. A new connection per request, as many
    clients do: kube-proxy picks the pod per connection, so every request is a fresh routing decision.
    One client per thread, though: building a client (its TLS context) per request cost more CPU than the
    requests themselves, and the suite's load shares two cores with the cluster it measures."""

    def __init__(self, url: str, body: dict | list[dict], workers: int = 4, timeout: float = 10, max_seconds: float = 600):
        # Several bodies are sent in turn, each worker starting at its own.
        self.url, self.bodies, self.timeout = url, body if isinstance(body, list) else [body], timeout
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds  # bounded even if the test never stops it
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def _run(self, turn: int) -> None:
        with fresh_connection_client(self.timeout) as client:
            self._send_until_stopped(client, turn)

    def _send_until_stopped(self, client: httpx.Client, turn: int) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            body = self.bodies[turn % len(self.bodies)]
            turn += 1
            sent = time.monotonic()
            try:
                response = client.post(self.url, json=body)
                answer = Answer(sent, response.status_code, response.headers.get(VERSION_HEADER),
                                None if response.status_code == 200 else response.text[:200], time.monotonic())
            except httpx.HTTPError as exc:
                answer = Answer(sent, 0, None, repr(exc), time.monotonic())
            with self._lock:
                self.answers.append(answer)

    def send(self, body: dict | list[dict]) -> None:
        """Send these bodies from now on."""
        self.bodies = body if isinstance(body, list) else [body]

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if not a.ok]


def fresh_connection_client(timeout: float) -> httpx.Client:
    """A client that opens a new connection for every request: none is kept alive for reuse."""
    return httpx.Client(timeout=timeout, limits=httpx.Limits(max_keepalive_connections=0),
                        headers={"connection": "close"})


def post_once_routed(url: str, body: dict, timeout: float = 30) -> httpx.Response:
    """POST to a ClusterIP that may not be programmed yet: kube-proxy writes a new Service's rules a moment
    after it exists, and until then the node answers "network unreachable". Retries only that, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.post(url, json=body, timeout=30)
        except httpx.ConnectError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
