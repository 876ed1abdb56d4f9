"""The EMR Serverless bundle: the entry point runs as a script with only the zip on the path."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

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
