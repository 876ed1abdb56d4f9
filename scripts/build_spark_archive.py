"""Build what EMR Serverless runs: the entry point and the library as a zip (``spark.submit.pyFiles``).

    python scripts/build_spark_archive.py [--out build/spark]

writes ``spark_entry.py`` (the job's ``entryPoint``) and ``virality-spark.zip``
(the ``virality`` and ``virality_spark`` packages, importable from the zip). Upload both to
``s3://<data bucket>/emr/code/`` (README, "Training on Spark").
"""

from __future__ import annotations

import argparse
import shutil
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The runtime library and the Spark trainer; the dev package (CLI, local API) stays out.
PACKAGES = (ROOT / "layers" / "virality" / "virality", ROOT / "src" / "virality_spark")


def build(out: Path) -> tuple[Path, Path]:
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
    archive, entry = build(Path(parser.parse_args().out))
    print(f"wrote {archive} ({archive.stat().st_size} bytes) and {entry}")


if __name__ == "__main__":
    main()
