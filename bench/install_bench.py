"""The requirements policy Install: building a model's environment with uv against pip, and a second pod.

    .venv/bin/python bench/install_bench.py --rounds 4

A model trained with older versions than the runtime has (scikit-learn, XGBoost and LightGBM pins that
differ from the runtime's) needs an environment. Each round builds it from scratch with each installer,
in alternating order, from a package index on loopback (the wheels downloaded from PyPI once and
cached), exactly as the fetch step does (`modelpilot.serving.environments.prepare`), then asks for it a
second time, as a second pod of the same version would. Prints every build, the median and range per
installer, and the ratio pip/uv; the second-pod time is the lookup of the built environment.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import leak_checked  # noqa: E402
from modelpilot.serving.environments import PackageIndexes, prepare  # noqa: E402
from modelpilot.serving.requirements import check_requirements  # noqa: E402
from tests.cluster.launcher import cache_dir  # noqa: E402
from tests.support.package_index import PackageIndex  # noqa: E402

# Older than what the runtime has, as a model trained a few months ago would pin them.
MODEL_PINS = ("scikit-learn==1.8.0", "xgboost-cpu==3.1.3", "lightgbm==4.6.0")
# What uv resolves against as the runtime's (a mirror of PyPI serves them too).
RUNTIME_PINS = tuple(f"{p}=={metadata.version(p)}" for p in ("numpy", "scipy", "narwhals", "joblib", "threadpoolctl", "cloudpickle"))


def wheels() -> Path:
    folder = cache_dir() / "wheels" / "install-bench"
    if not folder.is_dir():
        scratch = Path(tempfile.mkdtemp(prefix="install-bench-", dir=cache_dir()))
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(scratch),
                   *MODEL_PINS, *RUNTIME_PINS]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=900)
        folder.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(folder)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    index = PackageIndex(wheels())
    work = Path(tempfile.mkdtemp(prefix="install-bench-"))
    model = work / "model"
    model.mkdir()
    (model / "requirements.txt").write_text("".join(f"{pin}\n" for pin in ("mlflow", *MODEL_PINS)))
    mismatches = check_requirements(str(model))
    print(f"model pins {', '.join(MODEL_PINS)}; the runtime misses: {'; '.join(map(str, mismatches))}")
    builds: dict[str, list[float]] = {"uv": [], "pip": []}
    reuses: list[float] = []
    try:
        for round_ in range(args.rounds):
            for installer in ("uv", "pip") if round_ % 2 == 0 else ("pip", "uv"):
                root = work / f"envs-{installer}-{round_}"
                built = prepare(str(model), mismatches, str(root), PackageIndexes(index.url), installer)
                again = prepare(str(model), mismatches, str(root), PackageIndexes(index.url), installer)
                assert not built["reused"] and again["reused"], (built, again)
                builds[installer].append(built["seconds"])
                reuses.append(again["seconds"])
                print(f"round {round_ + 1} {installer:>3}: built in {built['seconds']:6.2f} s "
                      f"({len(built['installed'])} packages: {', '.join(built['installed'])}); "
                      f"second pod {again['seconds'] * 1000:.1f} ms")  # fmt: skip
                shutil.rmtree(root)
    finally:
        index.stop()
        shutil.rmtree(work, ignore_errors=True)
    for installer, seconds in builds.items():
        print(f"{installer:>3}: median {statistics.median(seconds):.2f} s, min {min(seconds):.2f}, max {max(seconds):.2f} "
              f"over {len(seconds)} builds")  # fmt: skip
    ratio = statistics.median(builds["pip"]) / statistics.median(builds["uv"])
    print(f"pip/uv (median build time): {ratio:.2f}x; second pod: at most {max(reuses) * 1000:.0f} ms over {len(reuses)} lookups (the record is kept to the millisecond)")
    return 0


if __name__ == "__main__":
    sys.exit(leak_checked(main))
