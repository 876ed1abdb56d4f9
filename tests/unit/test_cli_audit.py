"""``virality audit``: local files, --json, --png, bad files, and --local-s3 through the audit handler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from virality.artifact import dump_artifact
from virality.services.training import TrainingConfig, train_file
from virality_dev.cli import main
from virality_dev.synthetic import sample_csv


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("audit")
    fields = getattr(TrainingConfig, "__dataclass_fields__", {})
    config = TrainingConfig(l2=1e-6, **({"calibration": "none"} if "calibration" in fields else {}))
    over = train_file(sample_csv(150, 1), "small.csv", config, model_version="v-over").artifact
    (d / "over.json").write_bytes(dump_artifact(over))
    (d / "outcomes.csv").write_bytes(sample_csv(800, 2))
    (d / "bad.csv").write_text("views,likes\n1,2\n")
    return {p.name: p for p in d.iterdir()}


def test_audit_prints_figures_diagram_and_decision(files, capsys):
    code = main(["audit", "--model", str(files["over.json"]), str(files["outcomes.csv"]), str(files["bad.csv"])])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "outcome rows    800  (1 file(s) read, 1 skipped)" in out
    assert "bad.csv" in out and "column 'comments'" in out
    assert "ECE (10 bins)" in out and "95% bootstrap" in out and "classwise-ECE" in out and "PSI" in out
    assert "accuracy (#) vs confidence (|)" in out
    assert "decision        ALARM: ECE" in out


def test_audit_json_is_the_report_document(files, capsys):
    assert main(["audit", "--json", "--threshold", "0.5", "--model", str(files["over.json"]),
                 str(files["outcomes.csv"])]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "virality-audit/1" and doc["model"]["modelVersion"] == "v-over"
    assert doc["decision"]["status"] == "ok" and doc["settings"]["eceThreshold"] == 0.5
    assert doc["outcomes"]["objects"][0]["rows"] == 800 and len(doc["model"]["reliability"]) == 10


def test_audit_png(files, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "reliability.png"
    assert main(["audit", "--png", str(png), "--model", str(files["over.json"]), str(files["outcomes.csv"])]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().err


def test_audit_usage_errors_are_one_line(files, capsys):
    assert main(["audit", str(files["outcomes.csv"])]) == 1
    assert "give --model" in capsys.readouterr().err
    assert main(["audit", "--model", str(files["outcomes.csv"]), str(files["outcomes.csv"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("virality audit: error:") and "Traceback" not in err


def test_audit_local_s3_runs_the_handler(files, capsys, monkeypatch):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    code = main(["audit", "--local-s3", "--json", "--recalibrate", "--model", str(files["over.json"]),
                 str(files["outcomes.csv"])])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["outcomes"]["bucket"] == "virality-data-local"
    assert doc["outcomes"]["objects"][0]["key"] == "outcomes/outcomes.csv"
    assert doc["decision"]["status"] == "alarm" and doc["recalibration"]["status"] == "published"
    assert doc["recalibration"]["checkEceAfter"] < doc["recalibration"]["checkEceBefore"]
