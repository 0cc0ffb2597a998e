"""Compare a model's recorded requirements with what this runtime has installed.

MLflow records what the model was trained with in ``requirements.txt`` (pip specifiers, usually exact
pins) and ``python_env.yaml`` (the Python version). A mismatch is one line a person can act on: which
package, the specifier the model wants, the version found here (or "not installed").
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import asdict, dataclass
from importlib import metadata

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

log = logging.getLogger(__name__)

# Distributions that provide the same import package: a model logged with full `mlflow` is served by
# `mlflow-skinny` in the runtime image.
EQUIVALENT = {"mlflow": ("mlflow", "mlflow-skinny")}


@dataclass(frozen=True)
class Mismatch:
    package: str
    wanted: str
    found: str | None  # None: not installed

    def __str__(self) -> str:
        return f"{self.package}: wanted {self.wanted}, found {self.found or 'not installed'}"

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def installed_version(name: str) -> str | None:
    for candidate in EQUIVALENT.get(canonicalize_name(name), (name,)):
        try:
            return metadata.version(candidate)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_requirements(model_dir: str, python_version: str | None = None) -> list[Mismatch]:
    """Every recorded requirement of the model in ``model_dir`` that this environment does not satisfy."""
    mismatches: list[Mismatch] = []
    mismatches.extend(_check_python(model_dir, python_version or platform.python_version()))
    path = os.path.join(model_dir, "requirements.txt")
    if not os.path.isfile(path):
        return mismatches
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    for line in lines:
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line:
            continue  # comments, pip options (-r, -c, --index-url), direct URLs: nothing to compare
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            log.warning("requirements.txt: cannot parse %r; skipped", line)
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        found = installed_version(requirement.name)
        wanted = str(requirement.specifier) or "any version"
        if found is None:
            mismatches.append(Mismatch(requirement.name, wanted, None))
        elif requirement.specifier and not requirement.specifier.contains(found, prereleases=True):
            mismatches.append(Mismatch(requirement.name, wanted, found))
    return mismatches


def _check_python(model_dir: str, running: str) -> list[Mismatch]:
    """The model's Python must match the runtime's major.minor (pickles and C extensions depend on it)."""
    path = os.path.join(model_dir, "python_env.yaml")
    try:
        with open(path, encoding="utf-8") as handle:
            wanted = str((yaml.safe_load(handle) or {}).get("python") or "")
    except (OSError, yaml.YAMLError):
        return []
    if not re.match(r"^\d+\.\d+", wanted):
        return []
    try:
        if Version(wanted).release[:2] == Version(running).release[:2]:
            return []
    except InvalidVersion:
        return []
    return [Mismatch("python", wanted, running)]
