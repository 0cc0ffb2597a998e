"""The runner the Argo CD health check is tested in: gopher-lua, the Lua VM Argo CD runs health checks in,
built from the Go module pinned in ``tests/support/go/lua-health``.

``lua-health SCRIPT < object.json`` runs a health script the way Argo CD runs one set in argocd-cm (the
object as ``obj``, the same restricted libraries) and prints ``{"status": ..., "message": ...}``. It is
cached and rebuilt like the other Go binaries of the suite (``go_build.py``).

``python -m tests.support.lua_health_build`` builds it ahead of the tests and prints its path.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.go_build import Go, ensure_go_binary

MODULE_DIR = Path(__file__).resolve().parent / "go" / "lua-health"
LUA_MODULE = "github.com/yuin/gopher-lua"


def ensure_lua_health() -> Path:
    """The path of the built runner, building it first if its inputs changed since the last build."""
    return ensure_go_binary(
        "lua-health",
        MODULE_DIR,
        ".",
        ldflags="-s -w",
        version_note=_gopher_lua_version,
        what="lua-health on gopher-lua {version}",
        inputs=[Path(__file__)],
    )


def _gopher_lua_version(go: Go) -> str:
    return go("list", "-m", "-f", "{{.Version}}", LUA_MODULE).strip()


if __name__ == "__main__":
    print(ensure_lua_health())
