"""The suite-wide leak scan: every secret value the suite hands to the product is made here, distinctive
and random per run, and everything the product shows (logs, statuses, Events, annotations, pod specs,
metrics) is searched for it. A hit fails the run (see ``pytest_sessionfinish`` in tests/conftest.py).

Findings name the secret's label and where it was seen, never the value itself."""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from pathlib import Path
from typing import Iterable
from urllib.parse import quote

# `user:password@` in a URL, in any text.
URL_CREDENTIALS = re.compile(r"[a-zA-Z][-+.a-zA-Z0-9]*://[^/\s\"'@<>]+:[^/\s\"'@<>]+@")

_values: dict[str, str] = {}  # value -> label
_findings: list[tuple[str, str]] = []  # (where, what)
_places: set[str] = set()
_unsearched: list[tuple[str, str]] = []  # (where, why)
_lock = threading.Lock()


def secret_value(label: str) -> str:
    """A fresh value for one secret the suite gives the product, registered for the scan."""
    value = f"{label}-{secrets.token_hex(12)}"
    register(value, label)
    return value


def register(value: str, label: str) -> None:
    """Scan for `value` too (a value made elsewhere, e.g. a user name paired with a password)."""
    with _lock:
        _values[value] = label


def basic_auth(username: str, password: str) -> None:
    """Scan for the `Authorization: Basic` form of a user and password as well."""
    register(base64.b64encode(f"{username}:{password}".encode()).decode(), f"basic auth of {username}")


def _forms(value: str) -> set[str]:
    """How a value may appear in text: as it is, base64 (both alphabets) or URL-quoted."""
    raw = value.encode()
    return {value, quote(value, safe=""), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}


def find(text: str, values: Iterable[str] | None = None) -> list[str]:
    """What of `values` (default: every registered secret) appears in `text`, in any form, and any URL
    credentials: labels and descriptions, never the values."""
    with _lock:
        wanted = {v: _values.get(v, "a secret") for v in (values if values is not None else list(_values))}
    found = [label for value, label in wanted.items() if any(form in text for form in _forms(value))]
    in_urls = [m for m in URL_CREDENTIALS.findall(text) if not _redacted(m)]
    return found + [f"URL credentials ({m.split('://')[0]}://…)" for m in in_urls]


def _redacted(url_start: str) -> bool:
    """`scheme://***:***@`: credentials already replaced by asterisks, as the product prints them."""
    return set(url_start.split("://", 1)[1].rstrip("@")) <= {"*", ":"}


def scan(where: str, text: str) -> None:
    """Search one place; record what is found there."""
    hits = find(text)
    with _lock:
        _places.add(where)
        _findings.extend((where, hit) for hit in hits)


def scan_json(where: str, value: object) -> None:
    scan(where, json.dumps(value, default=str, ensure_ascii=False))


def scan_files(root: Path, pattern: str = "*.log") -> None:
    """Search every file matching `pattern` under `root` (a missing root is nothing to search)."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob(pattern)):
        if path.is_file():
            scan(str(path), path.read_text(errors="replace"))


def unsearched(where: str, why: str) -> None:
    """A place that could not be read: reported with the verdict, so a gap in the scan is seen."""
    with _lock:
        _unsearched.append((where, why))


def gaps() -> list[tuple[str, str]]:
    with _lock:
        return list(_unsearched)


def findings() -> list[tuple[str, str]]:
    with _lock:
        return list(_findings)


def places_scanned() -> int:
    with _lock:
        return len(_places)
