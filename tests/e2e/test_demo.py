"""``make demo`` (``python scripts/demo.py``) from start to finish, in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from virality_dev import localapi

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_and_leaves_nothing_running() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "virality"), str(ROOT / "src")]), "PYTHONUNBUFFERED": "1"}
    for name in ("AWS_ENDPOINT_URL_S3", "MODEL_BUCKET", "MODEL_REFRESH_SECONDS", "POWERTOOLS_LOG_LEVEL",
                 "POWERTOOLS_METRICS_DISABLED"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert proc.stderr == "", proc.stderr            # nothing but the demo's own output

    for n in range(1, 8):
        assert f"[{n}/7] " in out
    port = int(re.search(r"\[1/7\] starting local S3 on 127\.0\.0\.1:(\d+)", out).group(1))

    # the table: header and one row per example, each with a score, tier, 3 features and the version
    assert re.search(r"video\s+score\s+tier\s+top 3 contributing features", out)
    first, second = re.findall(r"published (v\d{8}T\d+Z-[0-9a-f]{8})\s+promoted: True", out)
    rows = [line for line in out.splitlines() if line.rstrip().endswith(first) and re.search(r"\s\d{1,3}\.\d\s+[1-5]\s", line)]
    assert len(rows) == 6, out
    assert all(line.count(",") >= 2 for line in rows)
    assert "force-promote" in out
    assert f"model version: {first} -> {second} (new version picked up" in out
    assert f"* {second}" in out and f"  {first}" in out
    assert "GET /model: source published" in out
    assert re.search(r"done in \d+\.\d s", out)
    # the calibration audit: the bad file named by row and column, the table and the decision
    assert "skipped outcomes/week-48 typo.csv: row 3, column" in out
    assert f"audited {second} on 2000 outcome rows" in out
    assert "accuracy (#) vs confidence (|)" in out
    assert re.search(r"decision: (OK|ALARM) - ECE \d\.\d{4}", out)
    assert not localapi.port_is_open("127.0.0.1", port)
    assert "Traceback" not in out and '"level"' not in out and '"_aws"' not in out
