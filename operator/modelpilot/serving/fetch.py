"""Init container: download a registered model version into the pod's model volume and verify it.

    python -m modelpilot.serving.fetch --model-uri models:/fraud/7 --dest /var/lib/modelpilot/model \\
        --requirements-policy Warn

Configuration comes from the environment, the way MLflow's own clients read it: ``MLFLOW_TRACKING_URI``,
``MLFLOW_TRACKING_TOKEN`` or ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``, and whatever the
artifact store needs (``AWS_*``, ``AZURE_STORAGE_*``, ``GOOGLE_APPLICATION_CREDENTIALS``...). Artifacts
are downloaded through MLflow's artifact repositories, so every store MLflow supports works.

Steps: resolve the version in the registry (clear errors for a missing model or version, refused
credentials), list its artifacts and check the volume has room, download with progress in the log,
verify (``MLmodel`` present and readable, every listed file present with its listed size), compare the
model's requirements with this runtime, and write ``.modelpilot-manifest.json`` next to the model.

Exit status 0 on success; otherwise one line on stderr (and in ``/dev/termination-log``, which
Kubernetes shows in the pod status) and a code saying why:
2 usage, 3 model or version not found, 4 credentials refused, 5 disk full, 6 requirements refused,
7 verification failed, 8 the model's environment could not be installed (policy Install), 1 anything else
(registry unreachable, ...).

With ``--requirements-policy Install`` the requirements the runtime does not satisfy are installed into a
virtual environment under ``--environments`` (see environments.py), recorded in the manifest, and the model
server runs in it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..registry import errors as registry_errors
from . import ENVIRONMENTS_DIR, MANIFEST_FILE, MODEL_DIR, environments
from .baseline import BASELINE_FILE, RUN_ARTIFACT_DIR
from .requirements import Mismatch, check_requirements
from .termination import ArgumentParser, write_termination_message

log = logging.getLogger("modelpilot.serving.fetch")

PROGRESS_INTERVAL = 5.0  # seconds between progress lines during a download (MODELPILOT_FETCH_PROGRESS_SECONDS)
_STAGING = ".modelpilot-fetching"


class FetchError(Exception):
    exit_code = 1


class NotFound(FetchError):
    exit_code = 3


class CredentialsRefused(FetchError):
    exit_code = 4


class DiskFull(FetchError):
    exit_code = 5


class RequirementsRefused(FetchError):
    exit_code = 6


class VerificationFailed(FetchError):
    exit_code = 7


class InstallFailed(FetchError):
    exit_code = 8


@dataclass(frozen=True)
class ModelReference:
    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelReference:
        match = re.fullmatch(r"models:/([^/@]+)(?:/([1-9][0-9]*)|@([^/]+))/?", uri.strip())
        if match is None:
            raise FetchError(f"--model-uri must be models:/<name>/<version> or models:/<name>@<alias>, got {uri!r}")
        return cls(name=match.group(1), version=match.group(2), alias=match.group(3))

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name} version {self.version}"


def redact_uri(uri: str) -> str:
    """``uri`` without any user:password@ part, fit for logs and the manifest."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------------------------------


def fetch(
    model_uri: str,
    dest: str,
    *,
    policy: str = "Warn",
    tracking_uri: str | None = None,
    env: dict[str, str] | None = None,
    install: Installation | None = None,
) -> dict[str, Any]:
    """Download, verify and check the model; returns the manifest written. Raises FetchError."""
    env = dict(os.environ) if env is None else env
    tracking_uri = tracking_uri or env.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        raise FetchError("MLFLOW_TRACKING_URI is not set: the fetch step needs the tracking server's address")
    ref = ModelReference.parse(model_uri)
    started = time.monotonic()
    safe_uri = redact_uri(tracking_uri)
    log.info("resolving %s in the registry at %s", ref, safe_uri)
    resolved = _resolve(ref, tracking_uri, env)
    version = resolved.version
    log.info("model %s version %s (run %s, source %s)", ref.name, version, resolved.run_id or "-", resolved.source)

    import mlflow
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    mlflow.set_tracking_uri(tracking_uri)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress lines instead
    uri = f"models:/{ref.name}/{version}"
    with _mlflow_errors(ref, version, dest):
        repo = ModelsArtifactRepository(uri)
        listing = _list_files(repo)
    total = sum(size for size in listing.values() if size is not None)
    log.info("%d files, %s to download into %s", len(listing), _human(total), dest)

    os.makedirs(dest, exist_ok=True)
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DiskFull(f"no room for the model in {dest}: it needs {_human(total)}, {_human(free)} free")
    staging = os.path.join(dest, _STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        with _mlflow_errors(ref, version, dest):
            _download_with_progress(repo, staging, total)
        files = _verify(staging, listing)
        _install(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a failed attempt leaves no partial download behind
    baseline = _fetch_baseline(dest, resolved.run_id)
    mismatches = check_requirements(dest)
    environment = _apply_policy(mismatches, policy, dest, install or Installation(), env)

    manifest = {
        "model_uri": model_uri,
        "name": ref.name,
        "version": version,
        "alias": ref.alias,
        "run_id": resolved.run_id,
        "source": resolved.source,
        "tracking_uri": safe_uri,
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 3),
        "total_bytes": sum(files.values()),
        "files": [{"path": path, "size": size} for path, size in sorted(files.items())],
        "flavors": sorted(_flavors(dest)),
        "baseline": baseline,
        "requirements": {"policy": policy, "mismatches": [m.as_dict() for m in mismatches]},
        "environment": environment,
    }
    with open(os.path.join(dest, MANIFEST_FILE), "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=1)
    log.info(
        "fetched %s version %s: %d files, %s in %.1fs",
        ref.name,
        version,
        len(files),
        _human(manifest["total_bytes"]),
        manifest["seconds"],
    )
    return manifest


def _resolve(ref: ModelReference, tracking_uri: str, env: dict[str, str]):
    import asyncio

    from ..api.spec import ModelRef
    from ..registry.mlflow import Credentials, MlflowRegistry

    model_ref = ModelRef.model_validate({"name": ref.name, "version": ref.version, "alias": ref.alias})

    async def resolve():
        async with MlflowRegistry(tracking_uri, Credentials.from_secret_data(env)) as registry:
            return await registry.resolve(model_ref)

    try:
        return asyncio.run(resolve())
    except (registry_errors.ModelNotFound, registry_errors.VersionNotFound, registry_errors.AliasNotFound) as exc:
        raise NotFound(str(exc)) from exc
    except registry_errors.CredentialsRefused as exc:
        raise CredentialsRefused(f"{exc}: check the credentials Secret") from exc
    except registry_errors.RegistryError as exc:
        raise FetchError(str(exc)) from exc


class _mlflow_errors:
    """Turns MLflow, cloud SDK and OS errors raised while listing/downloading into FetchErrors."""

    def __init__(self, ref: ModelReference, version: str, dest: str) -> None:
        self.what = f"model {ref.name} version {version}"
        self.dest = dest

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, FetchError) or not isinstance(exc, Exception):
            return False
        raise classify_error(exc, self.what, self.dest) from exc


def classify_error(exc: BaseException, what: str, dest: str) -> FetchError:
    """The FetchError that says, in one line and without secrets, why downloading ``what`` failed."""
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"disk full while downloading {what} into {dest}: {os.strerror(cause.errno)}")
    text = _one_line(exc)
    if re.search(r"Errno (28|122)\b|No space left on device|Disk quota exceeded", text):
        # MLflow's parallel download reports per-file failures as text, without the OSError as cause.
        return DiskFull(f"disk full while downloading {what} into {dest}: no space left on the volume")
    code = getattr(exc, "error_code", None)
    if code == "RESOURCE_DOES_NOT_EXIST" or re.search(r"\b404\b|NoSuchKey|NoSuchBucket|not found", text, re.I):
        return NotFound(f"artifacts of {what} not found: {text}")
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or re.search(
        r"\b40[13]\b|AccessDenied|Forbidden|Unauthorized|InvalidAccessKeyId|SignatureDoesNotMatch|ExpiredToken",
        text,
        re.I,
    ):
        return CredentialsRefused(f"the artifact store refused the credentials for {what}: {text}")
    return FetchError(f"cannot download {what}: {text}")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


_SECRETISH = re.compile(r"(?i)(token|password|secret|signature|credential|key)=([^&\s]+)")


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = re.sub(r"#{3,}\s*File\s+(\S+)\s*#{3,}", r"[\1]", text)  # MLflow's per-file failure headings
    text = " ".join(text.split())
    text = re.sub(r"//[^/@\s]+:[^/@\s]+@", "//", text)  # user:password@ in URLs
    text = _SECRETISH.sub(r"\1=***", text)  # presigned URL query strings
    return text[:500]


def _list_files(repo: Any, path: str = "") -> dict[str, int | None]:
    files: dict[str, int | None] = {}
    for info in repo.list_artifacts(path) or []:
        if info.is_dir:
            files.update(_list_files(repo, info.path))
        else:
            files[info.path] = info.file_size
    return files


def _download_with_progress(repo: Any, staging: str, total: int) -> None:
    done = threading.Event()
    try:
        interval = max(0.01, float(os.environ.get("MODELPILOT_FETCH_PROGRESS_SECONDS", PROGRESS_INTERVAL)))
    except ValueError:
        interval = PROGRESS_INTERVAL

    def report() -> None:
        got = _tree_size(staging)
        share = f" ({100 * got / total:.0f}%)" if total else ""
        log.info("downloaded %s of %s%s", _human(got), _human(total), share)

    def report_periodically() -> None:
        while not done.wait(interval):
            report()

    reporter = threading.Thread(target=report_periodically, name="fetch-progress", daemon=True)
    reporter.start()
    try:
        repo.download_artifacts("", dst_path=staging)
    finally:
        done.set()
        reporter.join()
    report()  # a download faster than one interval still says how much arrived


def _tree_size(root: str) -> int:
    size = 0
    for folder, _, names in os.walk(root):
        for name in names:
            try:
                size += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return size


def _verify(staging: str, listing: dict[str, int | None]) -> dict[str, int]:
    """Sizes of the downloaded files, after checking them against the listing and loading MLmodel."""
    files: dict[str, int] = {}
    for folder, _, names in os.walk(staging):
        for name in names:
            full = os.path.join(folder, name)
            files[os.path.relpath(full, staging).replace(os.sep, "/")] = os.path.getsize(full)
    problems = []
    for path, size in listing.items():
        if path not in files:
            problems.append(f"{path} is missing")
        elif size is not None and files[path] != size:
            problems.append(f"{path} has {files[path]} bytes, the store lists {size}")
    if "MLmodel" not in files:
        problems.insert(0, "no MLmodel file (is this version an MLflow model?)")
    else:
        from mlflow.models import Model

        try:
            Model.load(os.path.join(staging, "MLmodel"))
        except Exception as exc:
            problems.insert(0, f"MLmodel does not load: {_one_line(exc)}")
    if problems:
        raise VerificationFailed("downloaded model failed verification: " + "; ".join(problems[:5]))
    return files


def _install(staging: str, dest: str) -> None:
    """Replace whatever a previous attempt left in ``dest`` with the staged download."""
    for name in os.listdir(dest):
        if name in (_STAGING, "lost+found"):  # lost+found: the root of an ext4 volume, not ours
            continue
        path = os.path.join(dest, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError as exc:
            raise FetchError(f"cannot clear {path} left by an earlier attempt: {exc.strerror}") from exc
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(dest, name))
    os.rmdir(staging)


def _fetch_baseline(dest: str, run_id: str | None) -> str | None:
    """Where the baseline profile came from: "model", "run", or None when the version has none."""
    if os.path.isfile(os.path.join(dest, BASELINE_FILE)):
        return "model"
    if not run_id:
        return None
    import mlflow

    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=f"{RUN_ARTIFACT_DIR}/{BASELINE_FILE}", dst_path=tmp
            )
            shutil.copyfile(path, os.path.join(dest, BASELINE_FILE))
    except Exception:
        log.info("no baseline profile among the model's or its run's artifacts: drift will not be measured")
        return None
    return "run"


def _flavors(dest: str) -> list[str]:
    from mlflow.models import Model

    try:
        return list(Model.load(os.path.join(dest, "MLmodel")).flavors)
    except Exception:
        return []


@dataclass(frozen=True)
class Installation:
    """How the Install policy builds the model's environment: where, from which indexes, with what."""

    root: str = ENVIRONMENTS_DIR
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    installer: str = "uv"


def _apply_policy(mismatches: list[Mismatch], policy: str, dest: str, install: Installation,
                  env: dict[str, str]) -> dict[str, Any] | None:  # fmt: skip
    """Act on the requirements check; returns the environment built for the model (policy Install), if any."""
    if not mismatches:
        log.info("requirements: the runtime satisfies every recorded requirement of the model")
        return None
    for mismatch in mismatches:
        log.warning("requirements mismatch: %s", mismatch)
    summary = "; ".join(str(m) for m in mismatches)
    if policy == "Refuse":
        raise RequirementsRefused(
            f"requirements mismatch (policy Refuse): {summary}. Use a runtime image that satisfies them, "
            "or set the requirements policy to Warn or Install"
        )
    if policy == "Install":
        indexes = environments.PackageIndexes.from_env(install.index_url, install.extra_index_urls, env)
        try:
            return environments.prepare(dest, mismatches, install.root, indexes, install.installer)
        except environments.InstallError as exc:
            raise InstallFailed(f"requirements policy Install: {exc}") from None
    log.warning("requirements policy is Warn: serving despite %d mismatch(es)", len(mismatches))
    return None


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m modelpilot.serving.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("--model-uri", required=True, help="models:/<name>/<version> (or models:/<name>@<alias>)")
    parser.add_argument("--dest", default=MODEL_DIR, help=f"directory to download into (default {MODEL_DIR})")
    parser.add_argument("--requirements-policy", choices=["Warn", "Refuse", "Install"], default="Warn")
    parser.add_argument("--environments", default=ENVIRONMENTS_DIR, help="where policy Install builds environments")
    parser.add_argument("--index-url", default=None, help="package index for policy Install (default: the installer's)")
    parser.add_argument("--extra-index-url", action="append", default=[], help="another package index (repeatable)")
    parser.add_argument("--installer", choices=list(environments.INSTALLERS), default="uv")
    parser.add_argument("--tracking-uri", default=None, help="overrides MLFLOW_TRACKING_URI")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    # HTTP clients' loggers print request URLs (which may carry credentials); keep them quiet.
    for noisy in ("mlflow", "urllib3", "httpx", "httpcore", "botocore", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        install = Installation(args.environments, args.index_url, tuple(args.extra_index_url), args.installer)
        fetch(args.model_uri, args.dest, policy=args.requirements_policy, tracking_uri=args.tracking_uri, install=install)
    except FetchError as exc:
        message = f"fetch failed: {exc}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(message)
        return exc.exit_code
    except Exception as exc:  # an unexpected failure still gets one clear, secret-free line
        error = classify_error(exc, args.model_uri, args.dest)
        message = f"fetch failed: {error}"
        print(message, file=sys.stderr, flush=True)
        write_termination_message(message)
        return error.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
