"""Go programs the tests build from the wrapper modules pinned under ``tests/support/go/``.

Each lands in the suite's cache (``${MODELPILOT_CACHE:-~/.cache/modelpilot}/bin``) and is rebuilt only when
its inputs change: the module's go.mod, go.sum and Go files, the builder module that asks for it, and this
file. A file lock keeps concurrent runs from building it twice. The build uses the local toolchain only
(GOTOOLCHAIN=local), resolves modules as pinned (GOFLAGS=-mod=mod) and needs no C compiler (CGO_ENABLED=0).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from tests.cluster.launcher import cache_dir
from tests.support.processes import exclusive_lock

BUILD_TIMEOUT = 1800  # a cold module cache on a shared 2-core machine

Go = Callable[..., str]
"""Runs ``go ARGS...`` in the module with the build's environment and returns what it printed."""


class GoBuildError(RuntimeError):
    """The build failed; the message ends with the go command's output."""


def go_binary_path(name: str) -> Path:
    return cache_dir() / "bin" / name


def ensure_go_binary(
    name: str,
    module_dir: Path,
    package: str,
    tags: str = "",
    ldflags: str = "",
    version_note: Callable[[Go], str] | None = None,
    *,
    what: str = "",
    inputs: Sequence[Path] = (),
    log: str = "",
    timeout: int = BUILD_TIMEOUT,
    error: type[GoBuildError] = GoBuildError,
) -> Path:
    """The path of `name` built from `package` of the module in `module_dir`, building it first if its inputs
    changed since the last build.

    `version_note(go)` is asked only when a build is due; its answer replaces ``{version}`` in `ldflags` and
    in `what`, the build's description in the log. `inputs` are more files whose change calls for a rebuild
    (the caller's own builder module). `log` prefixes the log lines (``NAME-build`` by default)."""
    binary = go_binary_path(name)
    binary.parent.mkdir(parents=True, exist_ok=True)
    stamp_file = binary.with_name(f".{binary.name}.stamp")
    what, log = what or name, log or f"{name}-build"
    try:
        with exclusive_lock(binary.with_name(f".{binary.name}.lock"), timeout + 60):
            stamp = input_stamp(_inputs(module_dir, inputs))
            if binary.exists() and _read(stamp_file) == stamp:
                return binary
            go = _go(module_dir, timeout, error, f"{binary.name} ({what.replace(' {version}', '')})")
            version = version_note(go) if version_note is not None else ""
            print(f"{log}: building {what.replace('{version}', version)} ...", file=sys.stderr)
            started = time.monotonic()
            partial = binary.with_name(f"{binary.name}.tmp")
            flags = ["-tags", tags] if tags else []
            go("build", "-trimpath", *flags, "-ldflags", ldflags.replace("{version}", version), "-o", str(partial),
               package)
            partial.replace(binary)  # atomic: a concurrent reader never runs half a binary
            print(f"{log}: built in {time.monotonic() - started:.0f}s: {binary}", file=sys.stderr)
            stamp_file.write_text(stamp)  # the inputs read before the build, not whatever is there now
    except TimeoutError as exc:  # the lock: another run may be building the same binary
        raise error(str(exc)) from None
    return binary


def input_stamp(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _inputs(module_dir: Path, extra: Sequence[Path]) -> list[Path]:
    return [module_dir / "go.mod", module_dir / "go.sum", *sorted(module_dir.glob("*.go")), *extra, Path(__file__)]


def _go(module_dir: Path, timeout: int, error: type[GoBuildError], builds: str) -> Go:
    go = shutil.which("go")
    if go is None:
        raise error(f"go is not installed: it builds {builds}")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}

    def run(*args: str) -> str:
        command = [go, *args]
        try:
            done = subprocess.run(
                command, cwd=module_dir, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise error(f"{' '.join(command[:3])} did not finish within {timeout}s") from None
        if done.returncode != 0:
            raise error(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stderr[-4000:]}")
        return done.stdout

    return run


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
