"""tests/cluster/images.py without buildah: cache keys, the pause archive's format, the cache fast path and
how failed commands are reported. The real builds are exercised by the cluster suite."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from modelpilot import __version__
from modelpilot.serving import RUNTIME_VERSION

from tests.cluster import images

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MODELPILOT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "images"


@pytest.fixture
def tree(tmp_path):
    """A copy of the files an image is built from."""
    root = tmp_path / "tree"
    for name in ("pyproject.toml", "README.md", "operator/Dockerfile", "operator/runtime.Dockerfile"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "operator" / "modelpilot", root / "operator" / "modelpilot")
    return root


def key_of(name: str, root: Path, base_key: str = "base") -> str:
    return images.image_archive(name, images.build_context(name, root), base_key).key


def members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_images_are_named_after_their_own_versions(tree):
    context = images.build_context("runtime", tree)
    archive = images.image_archive("runtime", context, "base")
    assert archive.name == f"ghcr.io/modelpilot/runtime:{RUNTIME_VERSION}"
    assert images.image_archive("operator", context, "base").name == f"ghcr.io/modelpilot/operator:{__version__}"
    assert archive.path.name == f"runtime-{archive.key[:16]}.tar"


def test_key_follows_the_source_but_not_bytecode(tree):
    before = key_of("operator", tree)
    cache_dir = tree / "operator" / "modelpilot" / "__pycache__"
    cache_dir.mkdir(exist_ok=True)
    (cache_dir / "stale.cpython-311.pyc").write_bytes(b"\0")
    assert key_of("operator", tree) == before
    (tree / "operator" / "modelpilot" / "handlers.py").write_text("# edited\n", encoding="utf-8")
    assert key_of("operator", tree) != before


@pytest.mark.parametrize("changed", ["pyproject.toml", "README.md", "operator/Dockerfile"])
def test_key_follows_the_build_definition(tree, changed):
    before = key_of("operator", tree)
    with open(tree / changed, "a", encoding="utf-8") as file:
        file.write("\n# edited\n")
    assert key_of("operator", tree) != before


def test_build_context_is_the_dockerfile_the_project_definition_and_the_package(tree, tmp_path):
    (tree / "operator" / "modelpilot" / "__pycache__").mkdir(exist_ok=True)
    (tree / "operator" / "modelpilot" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    context = images.build_context("runtime", tree)
    assert context["Dockerfile"] == (tree / "operator" / "runtime.Dockerfile").read_bytes()
    assert {"pyproject.toml", "README.md", "operator/modelpilot/__init__.py"} <= set(context)
    assert not any("__pycache__" in name for name in context)

    images.stage_context(context, tmp_path / "staged")
    staged = {p.relative_to(tmp_path / "staged").as_posix() for p in (tmp_path / "staged").rglob("*") if p.is_file()}
    assert staged == set(context)


def test_key_follows_the_base_and_differs_per_image(tree):
    key = key_of("operator", tree, "base-1")
    assert key_of("operator", tree, "base-2") != key
    assert key_of("runtime", tree, "base-1") != key


def test_pause_archive_is_a_docker_archive_with_the_binary_as_entrypoint(tmp_path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF static pause")
    archive = images.pause_image(binary)
    assert archive.name == f"modelpilot.local/pause:{archive.key[:16]}"

    files = members(archive.path.read_bytes())
    [manifest] = json.loads(files["manifest.json"])
    assert manifest["RepoTags"] == [archive.name]
    config_bytes = files[manifest["Config"]]
    assert manifest["Config"] == hashlib.sha256(config_bytes).hexdigest() + ".json"
    config = json.loads(config_bytes)
    assert config["config"]["Entrypoint"] == ["/pause"]
    [layer_name] = manifest["Layers"]
    layer = files[layer_name]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        pause = tar.getmember("pause")
        assert pause.mode == 0o755 and tar.extractfile(pause).read() == binary.read_bytes()


def test_pause_archive_is_reused_then_replaced_when_the_binary_changes(tmp_path, cache):
    binary = tmp_path / "pause"
    binary.write_bytes(b"one")
    first = images.pause_image(binary)
    written = first.path.stat().st_mtime_ns
    assert images.pause_image(binary) == first and first.path.stat().st_mtime_ns == written

    binary.write_bytes(b"two")
    second = images.pause_image(binary)
    assert second.path != first.path and second.path.exists() and not first.path.exists()
    assert sorted(p.name for p in cache.glob("*.tar")) == [second.path.name]


def test_cached_archives_are_returned_without_building(cache, monkeypatch):
    def no_commands(command, **_):
        raise AssertionError(f"ran {command}")

    monkeypatch.setattr(images, "run", no_commands)
    base_key = images.base_recipe_key()
    for name in ("runtime", "operator"):
        expected = images.image_archive(name, images.build_context(name), base_key)
        expected.path.parent.mkdir(parents=True, exist_ok=True)
        expected.path.write_bytes(b"archive")
    archives = images.ensure_images()
    assert archives["runtime"].name.startswith("ghcr.io/modelpilot/runtime:")
    assert all(archive.path.read_bytes() == b"archive" for archive in archives.values())


def test_unknown_image_names_are_refused():
    with pytest.raises(ValueError, match="unknown image"):
        images.ensure_images(("runtime", "nonsense"))


def test_failed_command_is_named_with_the_tail_of_its_output():
    with pytest.raises(images.ImageBuildError) as error:
        images.run(["sh", "-c", "echo early; echo the-reason >&2; exit 3"], timeout=30, log_name="failing")
    message = str(error.value)
    assert "sh -c" in message and "status 3" in message and "the-reason" in message
    assert "failing.log" in message


def test_command_over_its_bound_is_killed_and_reported():
    with pytest.raises(images.ImageBuildError, match="timed out after 1s"):
        images.run(["sh", "-c", "echo started; sleep 30"], timeout=1)


def test_missing_command_is_reported():
    with pytest.raises(images.ImageBuildError, match="could not be started"):
        images.run(["modelpilot-no-such-command"], timeout=5)
