"""The EMR Serverless bundle: the entry point, the library zip and the dependencies archive `make spark-archive` builds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[2]


def test_the_zip_carries_the_library_and_the_entry_point_runs_from_it(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from build_spark_archive import build
    finally:
        sys.path.pop(0)
    archive, entry = build(tmp_path)
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"virality_spark/train.py", "virality_spark/entry.py", "virality/ml/features.py",
            "virality/ml/softmax.py"} <= names
    assert not any("__pycache__" in n for n in names)
    # a clean interpreter: the library comes from the zip, not from this checkout
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(archive)}
    done = subprocess.run([sys.executable, str(entry), "--help"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--source" in done.stdout and "--model-bucket" in done.stdout
    where = subprocess.run([sys.executable, "-c", "import virality_spark.train as m; print(m.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(archive))


# --------------------------------------------------------------------------- the dependencies archive


def _build_script() -> Any:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_spark_archive
    finally:
        sys.path.pop(0)
    return build_spark_archive


#: What the entry point and the Spark trainer import at module level (the -S runs below fail without one).
IMPORTED_AT_START = ("annotated-types", "jiter", "msgspec", "numpy", "pydantic", "pydantic-core", "typing-extensions",
                     "typing-inspection")


def _site_from_this_environment(site: Path) -> None:
    """A flat site-packages tree of this environment's copies of IMPORTED_AT_START (file links, no pip).

    This machine is x86_64 Linux with CPython 3.11, the very target of the
    archive, so its installed wheels stand in for the PyPI download offline.
    """
    from importlib.metadata import distribution

    for name in IMPORTED_AT_START:
        dist = distribution(name)
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file))).resolve()
            dst = site / file
            if "__pycache__" in file.parts or not src.is_file() or ".." in file.parts:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if not dst.exists():
                dst.symlink_to(src)


def test_the_dependencies_come_from_pypi_as_linux_wheels_for_the_emr_python(tmp_path: Path) -> None:
    from virality.services.sparkjob import EMR_PYTHON, EMR_PYTHON_VERSION

    script = _build_script()
    cmd = script.pip_command(tmp_path / "site")
    assert cmd[1:4] == ["-m", "pip", "install"]
    assert cmd[cmd.index("--target") + 1] == str(tmp_path / "site")
    assert cmd[cmd.index("--python-version") + 1] == EMR_PYTHON_VERSION == "3.11"
    assert EMR_PYTHON == "/usr/bin/python3.11"
    assert cmd[cmd.index("--implementation") + 1] == "cp"
    assert "--only-binary=:all:" in cmd                     # never an sdist compiled for this machine
    platforms = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--platform"]
    assert platforms and all(p.startswith("manylinux") and p.endswith("_x86_64") for p in platforms)
    assert "manylinux_2_28_x86_64" in platforms             # Amazon Linux 2023 has glibc 2.34
    assert cmd[cmd.index("--constraint") + 1] == str(ROOT / "requirements-dev.txt")   # the pinned versions
    names = {script._name(r) for r in script.runtime_requirements()}
    assert {"numpy", "pydantic", "aws-lambda-powertools", "pandas", "pyarrow", "threadpoolctl", "jiter"} <= names
    assert "pyspark" not in names                            # the EMR release brings its own Spark
    arm = script.pip_command(tmp_path / "site", arch="aarch64")
    assert all(arm[i + 1].endswith("_aarch64") for i, a in enumerate(arm) if a == "--platform")


def test_the_dependencies_archive_unpacks_into_a_path_the_job_imports_from(tmp_path: Path) -> None:
    from virality.services.sparkjob import DEPS_ALIAS, DEPS_ARCHIVE, EMR_PYTHON_VERSION

    script = _build_script()
    site = tmp_path / "site"
    _site_from_this_environment(site)
    (site / "bin").mkdir()
    (site / "bin" / "f2py").write_text("#!/bin/sh\n")        # console scripts are not shipped
    out = tmp_path / "out"
    zip_path, entry = script.build(out)
    deps = script.build_deps(out, site=site)
    assert deps.name == DEPS_ARCHIVE
    with tarfile.open(deps) as tar:
        members = tar.getmembers()
    names = {m.name for m in members}
    # a flat tree at the root (unpacked as ./deps), file contents only: no links, no bytecode, no bin/
    assert {"numpy/__init__.py", "pydantic_core/__init__.py", "virality-spark-deps.json"} <= names
    assert any(n.startswith("pydantic_core/_pydantic_core") and n.endswith(".so") for n in names)
    assert all(m.isfile() or m.isdir() for m in members)
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith(("bin/", "/", "site-packages"))
                   for n in names)
    with tarfile.open(deps) as tar:
        manifest = json.loads(tar.extractfile("virality-spark-deps.json").read())   # type: ignore[union-attr]
        # what Spark does with spark.archives=...#deps: unpack into ./deps of the working directory
        work = tmp_path / "job"
        tar.extractall(work / DEPS_ALIAS, filter="data")
    assert manifest["pythonVersion"] == EMR_PYTHON_VERSION
    assert "numpy-" + version("numpy") in manifest["distributions"]
    # The job's interpreter with nothing but PYTHONPATH=./deps (+ the pyFiles zip): -S, no site-packages at all.
    shutil.copy(entry, work / "spark_entry.py")
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"./{DEPS_ALIAS}:{zip_path}"}
    done = subprocess.run([sys.executable, "-S", "spark_entry.py", "--help"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--source" in done.stdout
    probe = ("import numpy, pydantic_core, virality_spark.train as t; print(numpy.__file__); "
             "print(t.__file__)")
    where = subprocess.run([sys.executable, "-S", "-c", probe], cwd=work, env=env, capture_output=True, text=True,
                           timeout=120)
    assert where.returncode == 0, where.stderr
    numpy_file, library_file = where.stdout.strip().splitlines()
    assert Path(numpy_file).resolve().is_relative_to((work / DEPS_ALIAS).resolve())    # the unpacked copy
    assert library_file.startswith(str(zip_path))


def test_routing_and_template_name_the_archives_make_builds() -> None:
    from virality.services.sparkjob import (
        DEPS_ALIAS,
        DEPS_ARCHIVE,
        EMR_PYTHON,
        EMR_RELEASE_LABEL,
        SparkSettings,
        job_request,
    )

    settings = SparkSettings.from_env({
        "SPARK_APPLICATION_ID": "app-1", "SPARK_JOB_ROLE_ARN": "arn:aws:iam::123456789012:role/job",
        "SPARK_ENTRY_POINT": "s3://data/emr/code/spark_entry.py",
        "SPARK_PY_FILES": "s3://data/emr/code/virality-spark.zip",
        "SPARK_ARCHIVES": f"s3://data/emr/code/{DEPS_ARCHIVE}#{DEPS_ALIAS}"})
    request = job_request("data", "training-data/big.csv", "v1", "data/training-data/big.csv#v1", settings)
    params = request["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"].split(" --conf ")
    params[0] = params[0].removeprefix("--conf ")
    assert params == [
        "spark.submit.pyFiles=s3://data/emr/code/virality-spark.zip",
        f"spark.archives=s3://data/emr/code/{DEPS_ARCHIVE}#deps",
        "spark.emr-serverless.driverEnv.PYTHONPATH=./deps",
        "spark.executorEnv.PYTHONPATH=./deps",
        f"spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON={EMR_PYTHON}",
        f"spark.emr-serverless.driverEnv.PYSPARK_PYTHON={EMR_PYTHON}",
        f"spark.executorEnv.PYSPARK_PYTHON={EMR_PYTHON}",
    ]
    # no alias given: the default one, which PYTHONPATH then names
    bare = SparkSettings.from_env({**{k.upper(): v for k, v in msgspec.structs.asdict(settings).items() if isinstance(v, str)},
                                   "SPARK_ARCHIVES": f"s3://data/emr/code/{DEPS_ARCHIVE}"})
    bare_params = job_request("data", "k", None, "data/k#e", bare)["jobDriver"]["sparkSubmit"]["sparkSubmitParameters"]
    assert f"spark.archives=s3://data/emr/code/{DEPS_ARCHIVE}#{DEPS_ALIAS} " in bare_params
    # the template hands the routing exactly the names `make spark-archive` writes, and runs that release
    template = (ROOT / "template.yaml").read_text()
    assert f"/emr/code/{DEPS_ARCHIVE}#{DEPS_ALIAS}\n" in template
    assert "/emr/code/virality-spark.zip\n" in template and "/emr/code/spark_entry.py\n" in template
    assert f"ReleaseLabel: {EMR_RELEASE_LABEL}\n" in template
    assert "spark-archive:" in (ROOT / "Makefile").read_text()
