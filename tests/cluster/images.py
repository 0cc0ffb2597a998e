"""The container images the local cluster runs, as docker-archive tarballs ready for
``ctr -n k8s.io images import`` (docker-archive keeps the image name; oci-archive does not).

    archives = ensure_images()              # {"runtime": ImageArchive(...), "operator": ImageArchive(...)}
    sandbox = pause_image(bin_dir / "pause")

The runtime and operator images are built with buildah from the project's own Dockerfiles, on a base made
with mmdebstrap from Debian packages (no registry is reachable). The base carries the host's CA bundle so
that pip inside the build can reach PyPI through a TLS-intercepting proxy; it is a test base only, passed
as ``--build-arg PYTHON_IMAGE``. The pause image is one static binary, packed here without buildah.

Every archive is cached under ``${MODELPILOT_CACHE:-~/.cache/modelpilot}/images/``, named by a hash of
its inputs: an unchanged tree builds nothing. Archives are written atomically, older archives of the same
image are removed, and a file lock keeps concurrent runs from building the same thing twice. Command
output goes to ``images/logs/``.

``python -m tests.cluster.images`` (``make images``) builds the runtime and operator images and prints
the archive paths.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tests.support.processes import exclusive_lock

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "ghcr.io/modelpilot"
LOCAL_REGISTRY = "modelpilot.local"
DOCKERFILES = {"runtime": "operator/runtime.Dockerfile", "operator": "operator/Dockerfile"}

SUITE = "bookworm"
VARIANT = "minbase"
# libgomp1: the runtime image installs it when the base lacks it; here it comes with the base, so that the
# build needs no Debian mirror.
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd", "libgomp1")
# Mirrors may serve snapshots whose Release files are past their Valid-Until date.
BASE_APT_OPTIONS = ('Acquire::Check-Valid-Until "false"',)
# Documentation, manuals and translations are dead weight in an image.
BASE_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
)
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    # pip uses its own certificate store unless told otherwise; requests and OpenSSL likewise.
    "PIP_CERT": IMAGE_CA_BUNDLE,
    "REQUESTS_CA_BUNDLE": IMAGE_CA_BUNDLE,
    "SSL_CERT_FILE": IMAGE_CA_BUNDLE,
}

TIMEOUTS = {"mmdebstrap": 1800, "build": 3600, "push": 900, "short": 300}
LOCK_TIMEOUT = 3 * 3600  # long enough for another run's cold build of everything
SHORT_HASH = 16
GO_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


class ImageBuildError(RuntimeError):
    """An image could not be built; the message names the command and ends with its output."""


@dataclass(frozen=True)
class ImageArchive:
    name: str  # the full image reference stored in the archive, e.g. ghcr.io/modelpilot/runtime:0.1.0
    path: Path  # a docker-archive tarball
    key: str  # sha256 of the inputs the archive was built from


def print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_images(
    names: Sequence[str] = ("runtime", "operator"),
    log: Callable[[str], None] = print_to_stderr,
) -> dict[str, ImageArchive]:
    """The archives of the named images, built only when their inputs changed since the last build."""
    unknown = sorted(set(names) - set(DOCKERFILES))
    if unknown:
        raise ValueError(f"unknown image(s) {unknown}; known: {sorted(DOCKERFILES)}")
    base_key = base_recipe_key()
    # Read once: the tree may change while a build runs, and the key must describe what was built.
    contexts = {name: build_context(name) for name in names}
    wanted = {name: image_archive(name, contexts[name], base_key) for name in names}
    with build_lock(log):
        missing = [name for name, archive in wanted.items() if not archive.path.exists()]
        if missing:
            base = ensure_base(base_key, log)
            for name in missing:
                build_image(wanted[name], name, contexts[name], base, log)
    return wanted


def pause_image(pause_binary: Path) -> ImageArchive:
    """The pod sandbox image: ``pause_binary`` (static) at ``/pause``, its entrypoint."""
    binary = Path(pause_binary).read_bytes()
    key = hashlib.sha256(recipe_hash().encode() + b"\0" + binary).hexdigest()
    archive = ImageArchive(f"{LOCAL_REGISTRY}/pause:{key[:SHORT_HASH]}", archive_path("pause", key), key)
    # No build lock: a cluster must not wait for another run's image build to get its 1 MB sandbox image.
    if not archive.path.exists():
        archive.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(archive.path, pause_archive_bytes(binary, archive.name))
        remove_older_archives("pause", archive.path)
    return archive


# --- inputs and their hashes -------------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("MODELPILOT_CACHE") or "~/.cache/modelpilot").expanduser() / "images"


def archive_path(name: str, key: str) -> Path:
    return cache_dir() / f"{name}-{key[:SHORT_HASH]}.tar"


# Where each image's version is defined: the runtime is versioned apart from the operator.
_VERSIONS = {
    "operator": ("operator/modelpilot/__init__.py", "__version__"),
    "runtime": ("operator/modelpilot/serving/__init__.py", "RUNTIME_VERSION"),
}


def image_version(name: str, context: dict[str, bytes]) -> str:
    source, variable = _VERSIONS[name]
    match = re.search(rf"""^{variable}\s*=\s*["']([^"']+)["']""", context[source].decode(), re.MULTILINE)
    if not match:
        raise ImageBuildError(f"{source} defines no {variable}")
    return match.group(1)


def image_archive(name: str, context: dict[str, bytes], base_key: str) -> ImageArchive:
    reference = f"{REGISTRY}/{name}:{image_version(name, context)}"
    digest = hashlib.sha256(f"{reference}\0{base_key}\0{recipe_hash()}\0".encode())
    for relative, content in sorted(context.items()):
        digest.update(f"{relative}\0{len(content)}\0".encode())
        digest.update(content)
    key = digest.hexdigest()
    return ImageArchive(reference, archive_path(name, key), key)


def recipe_hash() -> str:
    """This module's source: how an image is built is one of its inputs. (The base, slower to rebuild,
    is keyed by its recipe's data alone.)"""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def build_context(name: str, root: Path = ROOT) -> dict[str, bytes]:
    """Path in the build context -> content: exactly what the build sees and the key hashes."""
    context = {
        "Dockerfile": (root / DOCKERFILES[name]).read_bytes(),
        "pyproject.toml": (root / "pyproject.toml").read_bytes(),
        "README.md": (root / "README.md").read_bytes(),
    }
    package = root / "operator" / "modelpilot"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.relative_to(package).parts:
            with suppress(FileNotFoundError):  # deleted while we walked
                context[path.relative_to(root).as_posix()] = path.read_bytes()
    return context


def host_ca_bundle() -> Path:
    """The CA bundle the host's pip trusts, which includes any intercepting proxy's CA."""
    for variable in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        value = os.environ.get(variable)
        if value and Path(value).is_file():
            return Path(value)
    return Path("/etc/ssl/certs/ca-certificates.crt")


def host_apt_sources() -> list[Path]:
    """The host's apt source files that name the base suite: its mirrors, proxies and keyrings work here."""
    candidates = [Path("/etc/apt/sources.list")]
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.list"))
    candidates += sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    wanted = re.compile(rf"\b{SUITE}\b")
    return [path for path in candidates if path.is_file() and wanted.search(uncommented(path.read_text()))]


def uncommented(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def base_recipe_key() -> str:
    recipe = {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": BASE_PACKAGES,
        "apt": BASE_APT_OPTIONS,
        "dpkg": BASE_DPKG_OPTIONS,
        "env": BASE_ENV,
        "sources": [path.read_text() for path in host_apt_sources()],
        "ca": hashlib.sha256(host_ca_bundle().read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


# --- the base image ----------------------------------------------------------------------------------


def ensure_base(key: str, log: Callable[[str], None]) -> str:
    """The local reference of the base image, imported into buildah's storage if it is not there."""
    reference = f"{LOCAL_REGISTRY}/base:{key[:SHORT_HASH]}"
    if image_exists(reference):
        return reference
    started = time.monotonic()
    rootfs = archive_path("base-rootfs", key)
    if not rootfs.exists():
        log(f"images: building the {SUITE} base with mmdebstrap (log: {cache_dir() / 'logs' / 'base-mmdebstrap.log'})")
        debootstrap(rootfs)
        remove_older_archives("base-rootfs", rootfs)
    import_base(rootfs, reference)
    log(f"images: base {reference} ready in {time.monotonic() - started:.0f}s")
    return reference


def debootstrap(target: Path) -> None:
    partial = target.with_suffix(".partial.tar")
    hooks = [
        f"cp {shlex.quote(str(host_ca_bundle()))} \"$1{IMAGE_CA_BUNDLE}\"",
        # buildah provides these at run time; the host's copies do not belong in an image.
        'rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
    ]
    command = ["mmdebstrap", f"--variant={VARIANT}", f"--include={','.join(BASE_PACKAGES)}"]
    command += [f"--aptopt={option}" for option in BASE_APT_OPTIONS]
    command += [f"--dpkgopt={option}" for option in BASE_DPKG_OPTIONS]
    command += [f"--customize-hook={hook}" for hook in hooks]
    command += ["--skip=output/dev", "--format=tar", SUITE, str(partial)]
    command += [str(path) for path in host_apt_sources()]
    run(command, timeout=TIMEOUTS["mmdebstrap"], log_name="base-mmdebstrap")
    os.replace(partial, target)


def import_base(rootfs: Path, reference: str) -> None:
    container = run(["buildah", "from", "scratch"], timeout=TIMEOUTS["short"]).strip().splitlines()[-1]
    try:
        run(["buildah", "add", container, str(rootfs), "/"], timeout=TIMEOUTS["short"], log_name="base-add")
        config = ["buildah", "config", "--cmd", "python3"]
        for variable, value in BASE_ENV.items():
            config += ["--env", f"{variable}={value}"]
        run([*config, container], timeout=TIMEOUTS["short"])
        run(["buildah", "commit", container, reference], timeout=TIMEOUTS["short"], log_name="base-commit")
    finally:
        run(["buildah", "rm", container], timeout=TIMEOUTS["short"], check=False)


def image_exists(reference: str) -> bool:
    result = run(["buildah", "inspect", "--type", "image", reference], timeout=TIMEOUTS["short"], check=False)
    return result is not None


# --- the runtime and operator images ----------------------------------------------------------------


def build_image(
    archive: ImageArchive, name: str, files: dict[str, bytes], base: str, log: Callable[[str], None]
) -> None:
    local = f"{LOCAL_REGISTRY}/{name}:{archive.key[:SHORT_HASH]}"
    log(f"images: building {archive.name} (log: {cache_dir() / 'logs' / (name + '-build.log')})")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"{name}-context-", dir=cache_dir()) as scratch:
        context, image_id_file = Path(scratch) / "context", Path(scratch) / "image-id"
        stage_context(files, context)
        build = ["buildah", "bud", "--layers", "--force-rm", "--pull=never", "--network=host", "--isolation=chroot"]
        build += ["--build-arg", f"PYTHON_IMAGE={base}", "--file", str(context / "Dockerfile")]
        build += ["--tag", local, "--iidfile", str(image_id_file), str(context)]
        run(build, timeout=TIMEOUTS["build"], log_name=f"{name}-build")
        image_id = image_id_file.read_text().strip()
    # Pushed by id: pushed by name, the archive would also carry the local name.
    partial = archive.path.with_suffix(".partial.tar")
    run(
        ["buildah", "push", image_id, f"docker-archive:{partial}:{archive.name}"],
        timeout=TIMEOUTS["push"],
        log_name=f"{name}-push",
    )
    os.replace(partial, archive.path)
    remove_older_archives(name, archive.path)
    log(f"images: {archive.name} built in {time.monotonic() - started:.0f}s: {archive.path}")


def stage_context(files: dict[str, bytes], directory: Path) -> None:
    """A build context holding only the hashed inputs, so the key and the build cannot disagree."""
    for relative, content in files.items():
        destination = directory / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(content)


def remove_older_archives(name: str, current: Path) -> None:
    """Older archives of this image, and the local buildah images they were pushed from."""
    for old in cache_dir().glob(f"{name}-*.tar"):
        if old != current and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{{SHORT_HASH}}}\.tar", old.name):
            old.unlink(missing_ok=True)
            local = f"{LOCAL_REGISTRY}/{name.removesuffix('-rootfs')}:{old.stem.rsplit('-', 1)[1]}"
            if name != "pause" and shutil.which("buildah"):
                run(["buildah", "rmi", local], timeout=TIMEOUTS["short"], check=False)


# --- the pause image, written directly ---------------------------------------------------------------


def pause_archive_bytes(binary: bytes, reference: str) -> bytes:
    """A docker-archive (the ``docker save`` layout) of one layer holding ``/pause``."""
    layer = tar_bytes({"pause": (binary, 0o755)})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": GO_ARCHITECTURES.get(platform.machine(), platform.machine()),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        # The upstream pause image runs as this unprivileged user too.
        "config": {"Entrypoint": ["/pause"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "COPY pause /pause"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = f"{hashlib.sha256(config_bytes).hexdigest()}.json"
    layer_name = f"{layer_digest}/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]
    return tar_bytes(
        {
            "manifest.json": (json.dumps(manifest).encode(), 0o644),
            config_name: (config_bytes, 0o644),
            layer_name: (layer, 0o644),
        }
    )


def tar_bytes(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A reproducible tar: fixed times and owners, so equal inputs give equal digests."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), mode, 0
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --- plumbing ----------------------------------------------------------------------------------------


def write_atomically(path: Path, content: bytes) -> None:
    partial = path.with_suffix(f".partial-{os.getpid()}.tar")  # one per writer: concurrent writers never collide
    partial.write_bytes(content)
    os.replace(partial, path)


@contextmanager
def build_lock(log: Callable[[str], None]) -> Iterator[None]:
    """Held while the cache is written; partial files left by a killed run are removed under it."""
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    waiting = lambda: log("images: waiting for another run that is building images")  # noqa: E731
    try:
        with exclusive_lock(directory / ".lock", LOCK_TIMEOUT, waiting):
            for partial in directory.glob("*.partial.tar"):
                partial.unlink(missing_ok=True)
            yield
    except TimeoutError as exc:
        raise ImageBuildError(str(exc)) from None


def run(command: list[str], *, timeout: float, log_name: str | None = None, check: bool = True) -> str | None:
    """Runs ``command`` in its own process group with a bound; its output (kept in ``logs/<log_name>.log``
    when named). On failure raises, or returns None when ``check`` is false."""
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (open(logs / f"{log_name}.log", "w+b") if log_name else tempfile.TemporaryFile()) as output:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        except OSError as error:
            raise ImageBuildError(f"{shlex.join(command)} could not be started: {error}") from None
        try:
            status = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            status = None
        output.seek(0)
        text = output.read().decode(errors="replace")
    if status == 0:
        return text
    if not check:
        return None
    outcome = f"timed out after {timeout:.0f}s" if status is None else f"exited with status {status}"
    tail = "\n".join(text.splitlines()[-40:])
    where = f" (full log: {logs / (log_name + '.log')})" if log_name else ""
    raise ImageBuildError(f"{shlex.join(command)} {outcome}{where}; last lines of its output:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the runtime and operator images as docker-archives.")
    parser.add_argument("names", nargs="*", help=f"images to build (default: {' '.join(DOCKERFILES)})")
    args = parser.parse_args(argv)
    try:
        archives = ensure_images(tuple(args.names) or tuple(DOCKERFILES))
    except ValueError as error:
        parser.error(str(error))
    except ImageBuildError as error:
        print_to_stderr(f"images: {error}")
        return 1
    for archive in archives.values():
        print(archive.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
