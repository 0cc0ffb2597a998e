"""The Install requirements policy: a virtual environment holding what the model needs and the runtime lacks.

The environment is layered over the runtime: a ``.pth`` file adds the runtime's own site-packages after the
environment's, so the model server and MLflow come from the runtime and only the packages the model pins
differently (or that the runtime has not got) are installed, into the environment, where they win.

- pip sees the runtime's packages through that ``.pth`` file and installs only what is missing.
- uv does not look past an environment's own site-packages, so it resolves first (``uv pip compile``, the
  runtime's versions as constraints), and installs without dependencies only what the runtime lacks.

Environments live under a root directory (a volume of the pod, or a shared cache), each in a directory
named by a hash of what decides its content: the packages wanted, the runtime's own packages, the Python
version and the indexes. One that is already there is used as it is: nothing is installed. A build happens
in a scratch directory renamed into place once complete, so a pod never sees half an environment, and two
pods building the same one at once both end up with a whole one.

Index credentials come from the environment (``MODELPILOT_INDEX_USERNAME``/``PASSWORD``), reach the
installer in its environment, never in its arguments, and are cut from everything it prints.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from urllib.parse import quote, urlsplit, urlunsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .requirements import Mismatch

log = logging.getLogger("modelpilot.serving.environments")

INSTALLERS = ("uv", "pip")
RECORD_FILE = ".modelpilot-environment.json"
_RUNTIME_PTH = "_modelpilot_runtime.pth"
_INSTALL_TIMEOUT = float(os.environ.get("MODELPILOT_INSTALL_TIMEOUT_SECONDS", 1800))


class InstallError(Exception):
    """The environment could not be built; the message is one line a person can act on."""


@dataclass(frozen=True)
class PackageIndexes:
    """Where packages come from: the main index (None: the installer's default) and extra ones."""

    url: str | None = None
    extra_urls: tuple[str, ...] = ()
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, url: str | None, extra_urls: list[str] | tuple[str, ...], env: dict[str, str]) -> PackageIndexes:
        return cls(url, tuple(extra_urls), env.get("MODELPILOT_INDEX_USERNAME") or None, env.get("MODELPILOT_INDEX_PASSWORD") or None)

    def with_credentials(self, url: str) -> str:
        if not self.username and not self.password:
            return url
        parts = urlsplit(url)
        userinfo = quote(self.username or "", safe="") + (":" + quote(self.password, safe="") if self.password else "")
        return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))

    def secrets(self) -> list[str]:
        """Strings that must never be printed, longest first (a password may contain the username)."""
        values = {v for v in (self.username, self.password) if v}
        values |= {quote(v, safe="") for v in values}
        return sorted(values, key=len, reverse=True)


def wanted_requirements(model_dir: str, mismatches: list[Mismatch]) -> list[str]:
    """The model's own requirement lines for the packages the runtime does not satisfy, in file order."""
    names = {canonicalize_name(m.package) for m in mismatches}
    wanted = []
    path = os.path.join(model_dir, "requirements.txt")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.split("#", 1)[0].strip()
            try:
                if text and canonicalize_name(Requirement(text).name) in names:
                    wanted.append(text)
            except InvalidRequirement:
                continue  # reported by the requirements check already
    return wanted


def runtime_packages() -> dict[str, str]:
    """Every distribution the runtime has, by canonical name: its version."""
    found = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def environment_key(wanted: list[str], runtime: dict[str, str], indexes: PackageIndexes) -> str:
    """A hash of everything that decides an environment's content (never its credentials)."""
    text = json.dumps(
        {
            "python": sys.version_info[:2],
            "wanted": sorted(wanted),
            "runtime": sorted(runtime.items()),
            "indexes": [indexes.url, *indexes.extra_urls],
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def prepare(model_dir: str, mismatches: list[Mismatch], root: str, indexes: PackageIndexes, installer: str = "uv") -> dict:
    """The environment for the model in `model_dir`, built if it is not under `root` yet; returns its record
    (path, python, packages wanted and installed, whether it was reused, seconds). Raises InstallError."""
    if installer not in INSTALLERS:
        raise InstallError(f"unknown installer {installer!r}: use one of {', '.join(INSTALLERS)}")
    wanted = wanted_requirements(model_dir, mismatches)
    runtime = runtime_packages()
    key = environment_key(wanted, runtime, indexes)
    path = os.path.join(root, key)
    started = time.monotonic()
    record = _read_record(path)
    if record is not None:
        log.info("environment %s is already built (%s): nothing to install", key, ", ".join(wanted))
        return {**record, "reused": True, "seconds": round(time.monotonic() - started, 3)}
    os.makedirs(root, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=f".build-{key}-", dir=root)
    try:
        log.info("building environment %s with %s: %s", key, installer, ", ".join(wanted))
        _create(scratch)
        installed = _install(installer, scratch, wanted, runtime, indexes)
        _check(scratch, model_dir)
        record = {
            "key": key,
            "path": path,
            "python": os.path.join(path, "bin", "python"),
            "installer": installer,
            "wanted": wanted,
            "installed": installed,
            "built_seconds": round(time.monotonic() - started, 3),
        }
        with open(os.path.join(scratch, RECORD_FILE), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)
        try:
            os.rename(scratch, path)
        except OSError:
            built = _read_record(path)
            if built is None:  # not a pod that built the same environment meanwhile
                raise
            log.info("environment %s was built meanwhile by another pod; using that one", key)
            return {**built, "reused": True, "seconds": round(time.monotonic() - started, 3)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("environment %s built in %.1fs: %s", key, record["built_seconds"], ", ".join(installed) or "nothing")
    return {**record, "reused": False, "seconds": record["built_seconds"]}


def environment_python(manifest: dict) -> str | None:
    """The interpreter of the environment a fetch built for this model, if it did and it is there."""
    python = (manifest.get("environment") or {}).get("python")
    return python if python and os.path.exists(python) else None


def _read_record(path: str) -> dict | None:
    try:
        with open(os.path.join(path, RECORD_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _create(env_dir: str) -> None:
    """A bare virtual environment that sees the runtime's packages after its own."""
    _run([sys.executable, "-m", "venv", "--without-pip", "--clear", env_dir], "create the virtual environment")
    site = _site_packages(env_dir)
    paths = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    # addsitedir rather than a bare path, so the runtime's own .pth files (editable installs...) apply too.
    with open(os.path.join(site, _RUNTIME_PTH), "w", encoding="utf-8") as handle:
        handle.write("".join(f"import site; site.addsitedir({p!r})\n" for p in paths))


def _site_packages(env_dir: str) -> str:
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return os.path.join(env_dir, "lib", version, "site-packages")


def _install(installer: str, env_dir: str, wanted: list[str], runtime: dict[str, str], indexes: PackageIndexes) -> list[str]:
    work = tempfile.mkdtemp(prefix="install-")
    try:
        wanted_file = _write(work, "wanted.txt", wanted)
        names = {canonicalize_name(Requirement(line).name) for line in wanted}
        # The runtime's versions of everything else, so that a dependency the runtime has is not replaced.
        constraints = _write(work, "runtime.txt", [f"{n}=={v}" for n, v in sorted(runtime.items()) if n not in names])
        python = os.path.join(env_dir, "bin", "python")
        env = _installer_env(indexes, installer, work)
        if installer == "pip":
            before = set(os.listdir(_site_packages(env_dir)))
            _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-input", "--no-warn-script-location",
                  "-r", wanted_file, "-c", constraints], "install the model's requirements with pip", env, indexes)  # fmt: skip
            return _dist_names(set(os.listdir(_site_packages(env_dir))) - before)
        uv = _uv_binary()
        resolved = os.path.join(work, "resolved.txt")
        compile_ = [uv, "pip", "compile", "--no-config", "--python", python, "--no-header", "--quiet", "-o", resolved, wanted_file]
        try:
            _run([*compile_, "-c", constraints], "resolve the model's requirements with uv", env, indexes)
        except InstallError:
            log.info("the model's requirements conflict with the runtime's versions; resolving them on their own")
            _run(compile_, "resolve the model's requirements with uv", env, indexes)
        missing = [line for line in _pins(resolved) if runtime.get(line[0]) != line[1]]
        if missing:
            pinned = _write(work, "missing.txt", [f"{n}=={v}" for n, v in missing])
            _run([uv, "pip", "install", "--no-config", "--python", python, "--no-deps", "--link-mode", "copy", "--quiet", "-r", pinned],
                 "install the model's requirements with uv", env, indexes)  # fmt: skip
        return [f"{n}=={v}" for n, v in missing]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _check(env_dir: str, model_dir: str) -> None:
    """The environment now satisfies every requirement of the model, and the model server imports in it."""
    script = (
        "import json, sys\n"
        "import modelpilot.serving.server\n"
        "from modelpilot.serving.requirements import check_requirements\n"
        "print(json.dumps([str(m) for m in check_requirements(sys.argv[1])]))\n"
    )
    output = _run([os.path.join(env_dir, "bin", "python"), "-c", script, model_dir], "check the environment")
    left = json.loads(output.strip().splitlines()[-1])
    if left:
        raise InstallError(f"the environment still misses requirements after the install: {'; '.join(left)}")


def _installer_env(indexes: PackageIndexes, installer: str, work: str) -> dict[str, str]:
    # Only our indexes: settings inherited from the image or the host must not redirect the install.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_")) and not k.startswith("MODELPILOT_INDEX_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_CACHE_DIR"] = os.path.join(work, "pip-cache")
    env["UV_CACHE_DIR"] = os.path.join(work, "uv-cache")
    env["UV_NO_PROGRESS"] = "1"
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    if cert:
        env["PIP_CERT"] = env["SSL_CERT_FILE"] = cert
    extra = " ".join(indexes.with_credentials(u) for u in indexes.extra_urls)
    if installer == "pip":
        if indexes.url:
            env["PIP_INDEX_URL"] = indexes.with_credentials(indexes.url)
        if extra:
            env["PIP_EXTRA_INDEX_URL"] = extra
    else:
        if indexes.url:
            env["UV_DEFAULT_INDEX"] = indexes.with_credentials(indexes.url)
        if extra:
            env["UV_INDEX"] = extra
    return env


def _run(command: list[str], what: str, env: dict[str, str] | None = None, indexes: PackageIndexes | None = None) -> str:
    secrets = indexes.secrets() if indexes else []
    try:
        done = subprocess.run(command, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True,
                              timeout=_INSTALL_TIMEOUT, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise InstallError(f"could not {what}: no result within {_INSTALL_TIMEOUT:.0f} s") from None
    output = _redact(done.stdout + done.stderr, secrets)
    for line in output.splitlines():
        if line.strip():
            log.info("  %s", line)
    if done.returncode != 0:
        raise InstallError(f"could not {what}: {_reason(output) or f'exit status {done.returncode}'}")
    return _redact(done.stdout, secrets)


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _reason(output: str) -> str:
    """The words of an installer's output that say why it failed: its first error line with the line that
    explains it (uv's `cause:`, or what follows a colon), else its last line."""
    lines = [line.strip().lstrip("×╰─▶ ").strip() for line in output.splitlines() if line.strip()]
    for at, line in enumerate(lines):
        lowered = line.lower()
        if lowered.startswith("error:") or "no solution found" in lowered or "could not find" in lowered:
            reason = line.removeprefix("error:").removeprefix("ERROR:").strip()
            following = lines[at + 1] if at + 1 < len(lines) else ""
            if following.startswith("cause:"):
                reason = f"{reason.rstrip(':')}: {following.removeprefix('cause:').strip()}"
            elif reason.endswith(":") and following:
                reason = f"{reason} {following}"
            return reason[:400]
    return lines[-1][:400] if lines else ""


def _pins(path: str) -> list[tuple[str, str]]:
    pins = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.split("#", 1)[0].strip()
            if "==" in text:
                name, version = text.split("==", 1)
                pins.append((canonicalize_name(name.split("[", 1)[0].strip()), version.split(";", 1)[0].strip()))
    return pins


def _dist_names(entries: set[str]) -> list[str]:
    """name==version of the .dist-info directories among `entries`."""
    found = []
    for entry in sorted(entries):
        if entry.endswith(".dist-info"):
            name, _, version = entry.removesuffix(".dist-info").rpartition("-")
            found.append(f"{canonicalize_name(name)}=={version}")
    return found


def _uv_binary() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        found = shutil.which("uv")
        if found is None:
            raise InstallError("the installer uv is not in this runtime image: use installer: pip") from None
        return found
    return find_uv_bin()


def _write(directory: str, name: str, lines: list[str]) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    return path
