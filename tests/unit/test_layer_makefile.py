"""The layer's Makefile tries the wheel install again when pip fails (a download cut off
mid-body once failed a whole ``make test``), and still fails the build when pip keeps failing.

pip is faked: ``PYTHON`` is a script that answers the version check, fails the first
``pip install`` calls (``FAILS`` of them) and does nothing on later ones, and hands
every other call (``compileall``) to this interpreter. No network, no wheels.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from virality_dev.handlers import repo_root

MAKEFILE = repo_root() / "layers" / "virality" / "Makefile"

FAKE_PYTHON = """#!/bin/sh
case "$1 $2" in
  "-c "*) exit 0 ;;                                  # check-python
  "-m pip")
    n=$(cat "{state}" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "{state}"
    echo "pip install $n" >> "{calls}"
    if [ "$n" -le {fails} ]; then echo "simulated read error" >&2; exit 2; fi
    exit 0 ;;
esac
exec "{python}" "$@"
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _build(tmp_path: Path, fails: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = tmp_path / "python"
    calls = tmp_path / "calls"
    fake.write_text(FAKE_PYTHON.format(state=tmp_path / "state", calls=calls, fails=fails, python=sys.executable))
    fake.chmod(0o755)
    done = subprocess.run(
        ["make", "-s", "-f", str(MAKEFILE), "build-ViralityLayer", f"ARTIFACTS_DIR={tmp_path / 'out'}",
         f"PYTHON={fake}"],
        capture_output=True, text=True, timeout=300)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_a_failed_pip_install_is_tried_again_and_the_layer_builds(tmp_path: Path) -> None:
    done, calls = _build(tmp_path, fails=1)
    assert done.returncode == 0, done.stderr
    assert "pip install failed (try 1 of 3); trying again" in done.stderr
    # requirements.txt: failed once, then installed; requirements-xray.txt: installed at once
    assert calls == ["pip install 1", "pip install 2", "pip install 3"]
    assert (tmp_path / "out" / "python" / "virality" / "__init__.py").is_file()


def test_pip_failing_every_try_fails_the_build(tmp_path: Path) -> None:
    done, calls = _build(tmp_path, fails=99)
    assert done.returncode != 0
    assert calls == ["pip install 1", "pip install 2", "pip install 3"]
    assert "try 2 of 3" in done.stderr and "try 3 of 3" not in done.stderr
    assert not (tmp_path / "out" / "python" / "virality").exists()     # nothing after the install ran
