"""``virality train`` options of issue 11: --l2 auto|N, --calibration, --feature-set, --report-dir."""

from __future__ import annotations

import builtins
import io
from pathlib import Path

import numpy as np
import pytest

from virality.artifact import load_artifact
from virality_dev.cli import main
from virality_dev.synthetic import sample_csv as make_csv


def run(capsys, monkeypatch, *argv: str) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "videos.csv"
    path.write_bytes(make_csv(1200, seed=5, profile="realistic"))
    return path


def test_default_train_is_auto_and_temperature_and_prints_the_search(data, tmp_path, capsys, monkeypatch):
    out_path = tmp_path / "w.json"
    code, out, _ = run(capsys, monkeypatch, "train", str(data), "--out", str(out_path), "--bootstrap", "200")
    assert code == 0
    a = load_artifact(out_path.read_bytes())
    assert a.training.l2Search is not None and a.calibration.method == "temperature"
    assert "5-fold stratified CV" in out and "<- chosen" in out
    assert f"temperature T = {a.calibration.temperature:.4f}" in out
    assert "bootstrap 95% intervals (test split, 200 resamples)" in out
    assert "reliability (top-tier confidence bin" in out and "classwise-ECE" in out and "Brier" in out


def test_fixed_l2_and_no_calibration_is_the_old_model(data, tmp_path, capsys, monkeypatch):
    out_path = tmp_path / "w.json"
    code, out, _ = run(capsys, monkeypatch, "train", str(data), "--out", str(out_path), "--l2", "0.001",
                       "--calibration", "none", "--feature-set", "prepublication")
    assert code == 0
    a = load_artifact(out_path.read_bytes())
    assert a.training.l2 == 0.001 and a.training.l2Search is None and a.calibration.method == "none"
    assert a.featureSet == "prepublication" and "feature set     prepublication" in out
    assert "l2 search" not in out


def test_gd_keeps_the_original_lambda_with_the_default_auto(data, tmp_path, capsys, monkeypatch):
    out_path = tmp_path / "w.json"
    assert run(capsys, monkeypatch, "train", str(data), "--out", str(out_path), "--optimizer", "gd")[0] == 0
    a = load_artifact(out_path.read_bytes())
    assert a.training.l2 == 0.001 and a.calibration is None


@pytest.mark.parametrize("argv, message", [
    (["--l2", "fast"], "expected 'auto' or a number"),
    (["--calibration", "isotonic"], "invalid choice"),
    (["--feature-set", "post"], "invalid choice"),
])
def test_bad_options_are_usage_errors(argv, message, data, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exc:
        run(capsys, monkeypatch, "train", str(data), *argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_invalid_combination_is_one_clear_line(data, tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, monkeypatch, "train", str(data), "--optimizer", "gd", "--feature-set",
                       "prepublication", "--out", str(tmp_path / "w.json"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("virality train: error:")
    assert not (tmp_path / "w.json").exists()


def test_report_dir_writes_markdown_and_two_pngs(data, tmp_path, capsys, monkeypatch):
    report = tmp_path / "report"
    code, out, _ = run(capsys, monkeypatch, "train", str(data), "--out", str(tmp_path / "w.json"),
                       "--report-dir", str(report), "--bootstrap", "100")
    assert code == 0 and f"wrote the report to {report / 'report.md'}" in out
    md = (report / "report.md").read_text()
    assert "## Lambda search" in md and "## Calibration" in md and "| accuracy |" in md
    assert "![reliability diagram](reliability.png)" in md
    for name in ("reliability.png", "confusion.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in report.iterdir()) == ["confusion.png", "reliability.png", "report.md"]


def test_report_dir_without_matplotlib_says_how_to_install(data, tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = run(capsys, monkeypatch, "train", str(data), "--out", str(tmp_path / "w.json"),
                       "--report-dir", str(tmp_path / "r"), "--bootstrap", "0", "--l2", "0.001")
    assert code == 1 and "virality[plots]" in err
    assert not (tmp_path / "w.json").exists()          # refused before training, nothing written


def test_sample_data_realistic_profile(tmp_path, capsys, monkeypatch):
    path = tmp_path / "r.csv"
    assert run(capsys, monkeypatch, "sample-data", "--rows", "300", "--profile", "realistic",
               "--out", str(path))[0] == 0
    assert path.read_bytes() == make_csv(300, seed=42, profile="realistic")
    views = np.array([int(line.split(",")[1]) for line in path.read_text().splitlines()[1:]])
    big = views[views >= 10_000]
    # abbreviated counts: two significant digits
    assert all(int(str(v)[2:] or "0") == 0 for v in big)
