"""In Lambda the predict module imports with the cyclic GC paused: it must never leave it off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import gc, sys
sys.path.insert(0, "functions/predict")
import app
assert gc.isenabled(), "cyclic GC left disabled after import"
assert gc.get_freeze_count() > 0, "imported objects not frozen"
print("ok")
"""


def test_lambda_import_freezes_and_reenables_gc() -> None:
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "PredictFunction", "POWERTOOLS_TRACE_DISABLED": "true"}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
