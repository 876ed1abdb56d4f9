"""Build what EMR Serverless runs: the entry point, the library zip and the Python dependencies archive.

    python scripts/build_spark_archive.py [--out build/spark] [--python-version 3.11] [--arch x86_64]
    python scripts/build_spark_archive.py --no-deps        # entry point + library zip only (offline)

writes, under ``--out``:

* ``spark_entry.py``: the job's ``entryPoint``;
* ``virality-spark.zip``: the ``virality`` and ``virality_spark`` packages
  (``spark.submit.pyFiles``; pure Python, importable from a zip);
* ``virality-spark-deps.tar.gz``: the library's third-party runtime
  dependencies (numpy, pydantic, aws-lambda-powertools, pandas, pyarrow, ...)
  as a flat site-packages tree, for the EMR release's own Python. Compiled
  wheels cannot be imported from a zip, so Spark unpacks this archive on the
  driver and every executor (``spark.archives=…#deps``) and ``PYTHONPATH=./deps``
  puts it on the path (:func:`virality.services.sparkjob.submit_parameters`).

No Docker and no Amazon Linux machine: ``pip install --target`` with
``--platform manylinux…`` ``--python-version`` ``--only-binary=:all:`` fetches
the Linux wheels for the EMR interpreter from PyPI (only PyPI), whatever the
build machine is; versions are pinned by ``requirements-dev.txt``. pyspark is
left out: the EMR release provides Spark and its Python package.

Upload all three to ``s3://<data bucket>/emr/code/`` (docs/spark.md, "On EMR Serverless").
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The runtime library and the Spark trainer; the dev package (CLI, local API) stays out.
PACKAGES = (ROOT / "layers" / "virality" / "virality", ROOT / "src" / "virality_spark")
sys.path.insert(0, str(PACKAGES[0].parent))

from virality.services.sparkjob import DEPS_ARCHIVE, EMR_PYTHON_VERSION, EMR_RELEASE_LABEL  # noqa: E402

#: Distributions EMR provides itself (its Spark) or that only the dev tools use.
NOT_SHIPPED = {"pyspark"}
#: glibc of Amazon Linux 2023 (EMR 7.x / emr-spark-8.x images) is 2.34: manylinux_2_28 and older wheels run there.
MANYLINUX = ("manylinux_2_28", "manylinux_2_17", "manylinux2014")


def runtime_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The library's runtime dependencies plus the ``[spark]`` extra, without what EMR provides."""
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["spark"]]
    return [r for r in reqs if _name(r) not in NOT_SHIPPED]


def _name(requirement: str) -> str:
    for i, ch in enumerate(requirement):
        if not (ch.isalnum() or ch in "-_."):
            return requirement[:i].lower().replace("_", "-")
    return requirement.lower().replace("_", "-")


def pip_command(target: Path, python_version: str = EMR_PYTHON_VERSION, arch: str = "x86_64",
                constraints: Path = ROOT / "requirements-dev.txt") -> list[str]:
    """``pip install`` of the runtime requirements as Linux wheels for ``python_version`` into ``target``."""
    platforms = [arg for tag in MANYLINUX for arg in ("--platform", f"{tag}_{arch}")]
    return [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
            "--target", str(target), *platforms, "--implementation", "cp", "--python-version", python_version,
            "--only-binary=:all:", "--no-compile", "--constraint", str(constraints), *runtime_requirements()]


def _skip(path: Path) -> bool:
    """Not shipped: bytecode (built for this machine's Python), console scripts, pip's own records."""
    parts = path.parts
    return "__pycache__" in parts or path.suffix == ".pyc" or parts[0] == "bin"


def pack_deps(site: Path, archive: Path, manifest: dict) -> Path:
    """``site`` (a flat site-packages tree) as a tar.gz whose root is the tree itself (``#deps`` -> ``./deps``)."""
    # dereference: file contents, never links (Spark unpacks the archive on machines without the targets)
    with tarfile.open(archive, "w:gz", compresslevel=6, dereference=True) as tar:
        for path in sorted(site.rglob("*")):
            rel = path.relative_to(site)
            if path.is_file() and not _skip(rel):
                tar.add(path, arcname=rel.as_posix(), recursive=False)
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo("virality-spark-deps.json")
        info.size = len(body)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(body))
    return archive


def build_deps(out: Path, python_version: str = EMR_PYTHON_VERSION, arch: str = "x86_64",
               site: Path | None = None) -> Path:
    """Install the runtime wheels for the EMR Python (or take an installed ``site`` tree) and pack them."""
    with tempfile.TemporaryDirectory() as tmp:
        if site is None:
            site = Path(tmp) / "site-packages"
            subprocess.run(pip_command(site, python_version, arch), check=True)
        packages = sorted(p.name.removesuffix(".dist-info") for p in site.glob("*.dist-info"))
        manifest = {"pythonVersion": python_version, "platforms": [f"{t}_{arch}" for t in MANYLINUX],
                    "emrReleaseLabel": EMR_RELEASE_LABEL, "requirements": runtime_requirements(),
                    "distributions": packages}
        return pack_deps(site, out / DEPS_ARCHIVE, manifest)


def build(out: Path) -> tuple[Path, Path]:
    """The library zip and the entry point (no network)."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / "virality-spark.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted(package.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                    zf.write(path, path.relative_to(package.parent).as_posix())
    entry = out / "spark_entry.py"
    shutil.copyfile(PACKAGES[1] / "entry.py", entry)
    return archive, entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "spark"))
    parser.add_argument("--python-version", default=EMR_PYTHON_VERSION,
                        help=f"the EMR interpreter's version (default {EMR_PYTHON_VERSION}, {EMR_RELEASE_LABEL})")
    parser.add_argument("--arch", choices=("x86_64", "aarch64"), default="x86_64",
                        help="the application's architecture (template: X86_64)")
    parser.add_argument("--no-deps", action="store_true", help="skip the dependencies archive (needs PyPI)")
    parser.add_argument("--site-packages", type=Path, help="pack this installed tree instead of running pip")
    args = parser.parse_args()
    out = Path(args.out)
    archive, entry = build(out)
    print(f"wrote {entry}")
    print(f"wrote {archive} ({archive.stat().st_size:,} bytes)")
    if not args.no_deps:
        deps = build_deps(out, args.python_version, args.arch, args.site_packages)
        print(f"wrote {deps} ({deps.stat().st_size:,} bytes; Python {args.python_version}, {args.arch})")


if __name__ == "__main__":
    main()
