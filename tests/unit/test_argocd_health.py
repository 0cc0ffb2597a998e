"""The Argo CD health check, run by a Lua 5.1 interpreter as Argo CD's gopher-lua runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from lupa.lua51 import LuaRuntime

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = (ROOT / "manifests" / "argocd" / "health.lua").read_text()


def health(obj: dict) -> tuple[str, str | None]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(SCRIPT)
    return result["status"], result["message"]


def md(generation=1, **status) -> dict:
    return {"metadata": {"generation": generation}, "status": {"observedGeneration": 1, "message": "m", **status}}


@pytest.mark.parametrize(
    "obj, expected",
    [
        (md(phase="Ready"), "Healthy"),
        (md(phase="Pending"), "Progressing"),
        (md(phase="Progressing"), "Progressing"),
        (md(phase="Degraded"), "Degraded"),
        (md(phase="Failed"), "Degraded"),
        (md(phase="Progressing", rollout={"phase": "Progressing"}), "Progressing"),
        (md(phase="Progressing", rollout={"phase": "Paused"}), "Suspended"),
        (md(phase="Progressing", rollout={"phase": "Promoting"}), "Progressing"),
        (md(phase="Degraded", rollout={"phase": "Aborted"}), "Degraded"),
        (md(phase="Ready", rollout={"phase": "Completed"}), "Healthy"),
        (md(generation=2, phase="Ready"), "Progressing"),  # a newer spec not observed yet
        ({"metadata": {"generation": 1}}, "Progressing"),
    ],
)
def test_each_phase_maps_to_an_argo_cd_health(obj, expected):
    assert health(obj)[0] == expected


def test_the_documented_check_is_the_tested_one():
    documented = (ROOT / "docs" / "gitops.md").read_text()
    assert "\n".join("  " + line if line else line for line in SCRIPT.splitlines()) in documented
