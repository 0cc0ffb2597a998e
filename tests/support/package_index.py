"""A Python package index on loopback, as an enterprise mirror would be: PEP 503's simple API over a folder
of wheels, optionally behind basic auth, counting what it served.

    index = PackageIndex(wheels_dir, username="ci", password="s3cret")
    index.url          # http://127.0.0.1:<port>/simple
    index.downloads    # wheel files served so far; index.requests counts every request

`make_wheel` writes a small pure-Python wheel, so tests can publish packages no public index has.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import zipfile
from collections.abc import Mapping
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(directory: Path, name: str, version: str, modules: Mapping[str, str], requires: tuple[str, ...] = ()) -> Path:
    """A py3-none-any wheel of `name` `version` holding `modules` ({"file.py": source})."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = dict(modules)
    files[f"{info}/METADATA"] = "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: modelpilot-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name_in_zip, text in files.items():
            archive.writestr(name_in_zip, text)
    return path


class PackageIndex:
    """Serves every wheel in `wheels` under /simple/<project>/ and /files/<wheel>."""

    def __init__(self, wheels: Path, username: str | None = None, password: str | None = None, host: str = "127.0.0.1"):
        self.wheels = wheels
        self.downloads: list[str] = []
        self.requests = 0
        self.refused = 0
        expected = None
        if username is not None:
            expected = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        handler = partial(_Handler, self, expected)
        self._server = ThreadingHTTPServer((host, 0), handler)
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/simple"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url_for(self, host: str) -> str:
        """The index's URL as seen from `host` (a pod reaches loopback through the host's address)."""
        return f"http://{host}:{self.port}/simple"

    def projects(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        for wheel in sorted(self.wheels.glob("*.whl")):
            found.setdefault(normalize(wheel.name.split("-", 1)[0]), []).append(wheel)
        return found

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    def __init__(self, index: PackageIndex, expected_auth: str | None, *args, **kwargs):
        self.index = index
        self.expected_auth = expected_auth
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:  # quiet: the tests read counts instead
        pass

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        self.head = head
        self.index.requests += 1
        if self.expected_auth is not None and self.headers.get("Authorization") != self.expected_auth:
            self.index.refused += 1
            self._answer(401, b"unauthorized", "text/plain", {"WWW-Authenticate": 'Basic realm="index"'})
            return
        parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
        projects = self.index.projects()
        if parts == ["simple"]:
            links = "".join(f'<a href="/simple/{p}/">{p}</a>\n' for p in projects)
            self._page(links)
        elif len(parts) == 2 and parts[0] == "simple" and normalize(parts[1]) in projects:
            links = ""
            for wheel in projects[normalize(parts[1])]:
                digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
                links += f'<a href="/files/{html.escape(wheel.name)}#sha256={digest}">{html.escape(wheel.name)}</a>\n'
            self._page(links)
        elif len(parts) == 2 and parts[0] == "files" and (self.index.wheels / parts[1]).is_file():
            if not head:
                self.index.downloads.append(parts[1])
            self._answer(200, (self.index.wheels / parts[1]).read_bytes(), "application/octet-stream")
        else:
            self._answer(404, b"not found", "text/plain")

    def _page(self, links: str) -> None:
        body = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n".encode()
        self._answer(200, body, "text/html")

    def _answer(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if not self.head:
            self.wfile.write(body)
