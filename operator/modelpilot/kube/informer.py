"""A cache of one kind of owned object, kept by list and watch in a thread of its own, trimmed as it arrives.

kopf hands each event of a watched object to a worker of that object, and holds the whole decoded body until
the worker gets to it. While thousands of Deployments, Services and pods converge at once, those held bodies
were most of the operator's memory. What ModelDeployments own needs no kopf handler: only a trimmed copy to
reconcile from, and a nudge to its owner. So here every event is trimmed as soon as it is decoded, and the
events not read yet wait in the socket, as bytes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field

from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from .client import send, watch_client
from .objects import call, collection
from .snapshot import compact, pack, unpack

log = logging.getLogger(__name__)

# Objects per list page: a relist of thousands never decodes them all at once.
PAGE = 500
# The API server ends a watch after this long; the read timeout outlasts it, and ends a silent connection.
WATCH_SECONDS = 300
WATCH_TIMEOUT = (5, WATCH_SECONDS + 30)
# Seconds between attempts while the API server cannot be reached, growing to the last.
RETRY_SECONDS = (0.5, 1, 2, 5)


@dataclass(frozen=True)
class Copy:
    """One object as the cache keeps it: packed (`kube/snapshot.py`), since most are read only when their
    owner is reconciled; its labels stay decoded, since every event of it names its owner by one."""

    uid: str
    version: str
    namespace: str
    labels: dict[str, str]
    key: Hashable | None
    packed: bytes

    @property
    def body(self) -> dict:
        return unpack(self.packed)


class Store:
    """Copies by the key the reconciler looks them up with; several objects can share one key (the pods of a
    ModelDeployment). Pure, and changed only from the event loop. `get` answers like a kopf index, with
    fresh bodies the caller may change."""

    def __init__(self, key: Callable[[dict], Hashable | None]):
        self.key = key
        self._by_key: dict[Hashable, dict[str, Copy]] = {}
        self._copies: dict[str, Copy] = {}

    def copy(self, body: dict, kept: dict) -> Copy:
        """`kept`, the part of `body` to keep, as this store keeps it."""
        meta = body["metadata"]
        labels = compact(meta.get("labels") or {})
        return Copy(meta["uid"], meta["resourceVersion"], meta.get("namespace", ""), labels, self.key(kept), pack(kept))

    def get(self, key: Hashable, default: tuple = ()) -> tuple[dict, ...]:
        copies = self._by_key.get(key)
        return tuple(copy.body for copy in copies.values()) if copies else default

    def __len__(self) -> int:
        return len(self._copies)

    def put(self, copy: Copy) -> None:
        self.remove(copy.uid)
        if copy.key is not None:
            self._by_key.setdefault(copy.key, {})[copy.uid] = copy
            self._copies[copy.uid] = copy

    def remove(self, uid: str) -> Copy | None:
        copy = self._copies.pop(uid, None)
        if copy is not None:
            copies = self._by_key[copy.key]
            del copies[uid]
            if not copies:
                del self._by_key[copy.key]
        return copy

    def replace(self, copies: Iterable[Copy], namespace: str | None) -> list[Copy]:
        """Make the copies of `namespace` (all, if None) those given, as after a fresh list; returns those that
        changed or are gone, whose owners missed the events."""
        fresh = {copy.uid: copy for copy in copies}
        changed = []
        for uid, old in list(self._copies.items()):
            if namespace is not None and old.namespace != namespace:
                continue
            new = fresh.get(uid)
            if new is None:
                changed.append(self.remove(uid))
            elif new.version != old.version:
                changed.append(new)
        for uid, copy in fresh.items():
            if uid not in self._copies:
                changed.append(copy)
            self.put(copy)
        return changed


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str

    def url(self, namespace: str | None) -> str:
        return collection(self.api_version, self.plural, namespace)


@dataclass
class Informer:
    """Lists `kind` in `namespace` (all, if None) with `selector`, then watches it from there, listing again
    when the watch's version is too old. Each object is trimmed by `trim`, then kept by `store`. `changed` is
    called in the event loop with each copy that changed or went, after the first list is in the store;
    `synced` is set then."""

    kind: Kind
    selector: str
    namespace: str | None
    trim: Callable[[dict], dict]
    store: Store
    changed: Callable[[Copy], None]
    loop: asyncio.AbstractEventLoop
    client: ApiClient | None = None  # the process's watch client unless given
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: threading.Event = field(default_factory=threading.Event)
    _response: object = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        name = f"watch {self.kind.plural} in {self.namespace or 'all namespaces'}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, wait: float = 0) -> None:
        """Ends the watch; waits up to `wait` seconds for its thread to end."""
        self._stopping.set()
        response = self._response
        if response is not None:
            response.shutdown()  # wakes the thread from its read
        if self._thread is not None and wait:
            self._thread.join(wait)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        version, failures = None, 0
        while not self._stopping.is_set():
            try:
                version = self._list() if version is None else version
                if failures:
                    log.info("watching %s again", self.kind.plural)
                    failures = 0
                version = self._watch(version)
            except Exception as exc:  # the API server away, a dropped connection: try again, never give up
                if self._stopping.is_set():
                    return
                if not failures:
                    log.warning("watch of %s failed, retrying: %s: %s", self.kind.plural, type(exc).__name__, exc)
                self._stopping.wait(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
                failures += 1

    def _list(self) -> str:
        copies, token = [], None
        while True:
            query = [("labelSelector", self.selector), ("limit", PAGE), *([("continue", token)] if token else [])]
            page = call("GET", self.kind.url(self.namespace), query=query, client=self.client or watch_client())
            copies.extend(copy for copy in map(self._copy, page.get("items") or ()) if copy is not None)
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                self._call(self._listed, copies)
                return meta["resourceVersion"]

    def _watch(self, version: str) -> str | None:
        """Events from `version` on until the API server ends the watch; the version to go on from, or None
        when it is too old and the kind must be listed again."""
        query = [("labelSelector", self.selector), ("watch", "true"), ("resourceVersion", version),
                 ("allowWatchBookmarks", "true"), ("timeoutSeconds", WATCH_SECONDS)]  # fmt: skip
        response = send("GET", self.kind.url(self.namespace), query=query, timeout=WATCH_TIMEOUT,
                        client=self.client or watch_client())  # fmt: skip
        self._response = response.response
        try:
            if response.status == 410:
                return None
            if response.status != 200:
                response.read()
                raise ApiException(http_resp=response)
            for line in iter_resp_lines(response.response):
                if not line:
                    continue
                event = json.loads(line)
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        return None
                    raise RuntimeError(f"the watch answered {body.get('code')}: {body.get('message')}")
                version = body["metadata"]["resourceVersion"]
                copy = self._copy(body) if kind in ("ADDED", "MODIFIED", "DELETED") else None
                if copy is not None:
                    self._call(self._deleted if kind == "DELETED" else self._put, copy)
            return version
        finally:
            self._response = None
            response.response.release_conn()

    def _copy(self, body: dict) -> Copy | None:
        try:
            return self.store.copy(body, self.trim(body))
        except Exception:  # one odd object must not stop the watch of all the others
            meta = body.get("metadata") or {}
            log.exception("could not keep a copy of %s %s/%s", self.kind.plural, meta.get("namespace"), meta.get("name"))
            return None

    def _call(self, handle: Callable[[Copy], None] | Callable[[list[Copy]], None], arg) -> None:
        try:
            self.loop.call_soon_threadsafe(handle, arg)
        except RuntimeError:  # the loop is closed: the operator is stopping
            self._stopping.set()

    def _put(self, copy: Copy) -> None:
        self.store.put(copy)
        self.changed(copy)

    def _deleted(self, copy: Copy) -> None:
        self.store.remove(copy.uid)
        self.changed(copy)

    def _listed(self, copies: list[Copy]) -> None:
        changed = self.store.replace(copies, self.namespace)
        if self.synced.is_set():  # on the first list, every owner is reconciled anyway as kopf resumes it
            for copy in changed:
                self.changed(copy)
        self.synced.set()
