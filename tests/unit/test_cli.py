"""The ``virality`` command line: data, training, prediction, versions and rollback."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from virality.artifact import load_artifact
from virality.ml.features import FEATURE_NAMES
from virality_dev.cli import main


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str,
        stdin: str | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def sample_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "videos.csv"
    code, _, err = run(capsys, monkeypatch, "sample-data", "--rows", "1500", "--seed", "3", "--out", str(path))
    assert code == 0 and "SYNTHETIC" in err
    return path


def test_sample_data_writes_a_header_and_the_requested_rows(sample_csv: Path) -> None:
    lines = sample_csv.read_text().splitlines()
    assert lines[0].split(",")[:3] == ["videoId", "views", "likes"]
    assert len(lines) == 1 + 1500


def test_sample_data_is_seeded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = (tmp_path / n for n in ("a.jsonl", "b.jsonl", "c.jsonl"))
    for path, seed in ((a, "1"), (b, "1"), (c, "2")):
        assert run(capsys, monkeypatch, "sample-data", "--rows", "50", "--seed", seed, "--out", str(path))[0] == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert json.loads(a.read_text().splitlines()[0])["views"] >= 0     # JSON Lines chosen by the extension


@pytest.mark.parametrize("optimizer", ["newton", "gd"])
def test_train_prints_the_report_and_writes_a_valid_artifact(
        optimizer: str, sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    out_path = tmp_path / "ml-weights.json"
    code, out, _ = run(capsys, monkeypatch, "train", str(sample_csv), "--out", str(out_path),
                       "--optimizer", optimizer, "--class-weight", "balanced", "--l2", "0.002")
    assert code == 0
    assert "confusion matrix (rows = actual tier, columns = predicted)" in out and "macro-F1" in out
    artifact = load_artifact(out_path.read_bytes())
    assert artifact.training is not None
    assert (artifact.training.optimizer, artifact.training.classWeight, artifact.training.l2) == (
        optimizer, "balanced", 0.002)
    if optimizer == "gd":
        assert artifact.training.iterations == 200          # the original's fixed epoch count
    else:
        assert artifact.training.converged and artifact.training.gradientNorm <= 1e-8


def test_train_reads_jsonl_and_seed_json(tmp_path: Path, sample_csv: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from virality.data.datasets import load_training_data

    ts = load_training_data(sample_csv.read_bytes(), "videos.csv")
    seed = {"featureNames": list(FEATURE_NAMES),
            "trainSet": {"features": ts.train.X.tolist(), "labels": ts.train.tiers.tolist()},
            "testSet": {"features": ts.test.X.tolist(), "labels": ts.test.tiers.tolist()}}
    seed_path = tmp_path / "training-data.json"
    seed_path.write_text(json.dumps(seed))
    code, out, _ = run(capsys, monkeypatch, "train", str(seed_path), "--out", str(tmp_path / "m.json"))
    assert code == 0 and "(seed-json," in out
    jsonl = tmp_path / "v.jsonl"
    run(capsys, monkeypatch, "sample-data", "--rows", "600", "--out", str(jsonl))
    code, out, _ = run(capsys, monkeypatch, "train", str(jsonl), "--out", str(tmp_path / "m2.json"))
    assert code == 0 and "(jsonl," in out


def test_bad_training_data_is_one_line_on_stderr_and_exit_1(tmp_path: Path, sample_csv: Path,
                                                            capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    lines = sample_csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[2] = "lots"                                   # likes
    lines[5] = ",".join(cells)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out_path = tmp_path / "never.json"
    code, _, err = run(capsys, monkeypatch, "train", str(bad), "--out", str(out_path))
    assert code == 1
    assert "row 6" in err and "'likes'" in err and "Traceback" not in err
    assert not out_path.exists()


def test_missing_file_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, _, err = run(capsys, monkeypatch, "train", str(tmp_path / "nope.csv"))
    assert code == 1 and "No such file" in err and "Traceback" not in err


@pytest.fixture
def model_path(sample_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
               monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ml-weights.json"
    assert run(capsys, monkeypatch, "train", str(sample_csv), "--out", str(path))[0] == 0
    return path


def test_predict_accepts_each_input_kind(model_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    video = {"views": 5000, "likes": 400, "comments": 20, "shares": 30, "saves": 25, "followers": 8000,
             "durationSeconds": 18, "hashtagCount": 4, "hasTrendingSound": True, "captionLength": 60,
             "postedAt": "2026-11-20T18:00:00Z"}
    features = {name: 0.5 for name in FEATURE_NAMES}
    for item in ({"video": video}, video, {"features": features}, features, {"featureVector": {"shareTrigger": 8}},
                 {"shareTrigger": 8}):
        code, out, err = run(capsys, monkeypatch, "predict", "--model", str(model_path), stdin=json.dumps(item))
        assert code == 0, err
        result = json.loads(out)
        assert 0 <= result["score"] <= 100 and 1 <= result["tier"] <= 5 and len(result["probabilities"]) == 5


def test_predict_reads_json_lines_and_explains(model_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    lines = "\n".join(json.dumps({"featureVector": {"shareTrigger": s}}) for s in (1, 5, 9))
    code, out, _ = run(capsys, monkeypatch, "predict", "--model", str(model_path), "--explain", stdin=lines)
    results = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(results) == 3
    assert all(set(r["contributions"]) == set(FEATURE_NAMES) for r in results)


def test_predict_without_a_model_uses_the_bundled_baseline(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run(capsys, monkeypatch, "predict", stdin='{"featureVector": {}}')
    assert code == 0 and json.loads(out)["modelVersion"].startswith("bundled-")


def test_predict_reports_bad_lines_and_keeps_going(model_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    lines = '{"featureVector": {"shareTrigger": 3}}\n{"features": {"shareRate": "x"}}\n{"featureVector": {}}'
    code, out, err = run(capsys, monkeypatch, "predict", "--model", str(model_path), stdin=lines)
    assert code == 1
    assert len(out.splitlines()) == 2
    assert "input 2" in err and "features.shareRate" in err and "Traceback" not in err


def test_versions_and_rollback_move_the_pointer(s3: Any, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from virality.services.training import format_report, train_file
    from virality.store.s3 import ModelRegistry, Pointer
    from virality_dev.fakeaws import MODEL_BUCKET
    from virality_dev.synthetic import sample_csv

    registry = ModelRegistry(MODEL_BUCKET, "models/", lambda: s3)
    versions = []
    for seed in (1, 2):
        artifact = train_file(sample_csv(600, seed), f"s{seed}.csv").artifact
        key, sha = registry.publish(artifact, format_report(artifact))
        state = registry.read_pointer()
        registry.write_pointer(Pointer(version=artifact.modelVersion, key=key, sha256=sha),
                               state.etag if state else None)
        versions.append(artifact.modelVersion)
    code, out, _ = run(capsys, monkeypatch, "versions", "--bucket", MODEL_BUCKET)
    assert code == 0 and out.splitlines() == [f"  {versions[0]}", f"* {versions[1]}"]
    code, out, _ = run(capsys, monkeypatch, "rollback", "--bucket", MODEL_BUCKET, "--version", versions[0])
    assert code == 0
    pointer = registry.read_pointer().pointer
    assert (pointer.version, pointer.previous) == (versions[0], versions[1])
    code, _, err = run(capsys, monkeypatch, "rollback", "--bucket", MODEL_BUCKET, "--version", "v-nope")
    assert code == 1 and "does not exist" in err and registry.read_pointer().pointer.version == versions[0]


def test_console_log_format_is_one_readable_line_with_structured_keys() -> None:
    import logging

    from virality_dev.localapi import ConsoleLogFormatter

    record = logging.LogRecord("virality", logging.INFO, __file__, 1, "model loaded", None, None)
    record.model_version = "v1"
    record.source = "published"
    record.function_request_id = "dropped: a local server has no Lambda context"
    line = ConsoleLogFormatter().format(record)
    assert line.endswith("INFO    model loaded  model_version=v1 source=published")
    assert "\n" not in line and "{" not in line


def test_serve_log_format_defaults_to_console_and_accepts_json() -> None:
    from virality_dev.cli import build_parser

    assert build_parser().parse_args(["serve"]).log_format == "console"
    assert build_parser().parse_args(["serve", "--log-format", "json"]).log_format == "json"


def test_console_logs_keep_the_handler_decorators_working(monkeypatch) -> None:
    # Given console logs (what `virality serve` installs before running the handlers)
    import io

    from virality.observability import logger
    from virality_dev.localapi import use_console_logs

    handler = logger.handlers[0]
    monkeypatch.setattr(handler, "formatter", handler.formatter)     # restored after the test
    monkeypatch.setattr(handler, "stream", io.StringIO())
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    use_console_logs()
    # When a handler decorator appends its Lambda-context keys, and the handler logs
    logger.append_keys(cold_start=True, function_request_id="r-1")
    try:
        logger.warning("model loaded", extra={"model_version": "v1"})
    finally:
        logger.remove_keys(["cold_start", "function_request_id"])
    # Then nothing raised, and the line is readable
    (line,) = handler.stream.getvalue().splitlines()
    assert line.endswith("WARNING model loaded  model_version=v1"), line


class _Stream:
    def __init__(self, tty: bool) -> None:
        import io

        self.buffer, self.tty = io.StringIO(), tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return self.buffer.write(text)

    def flush(self) -> None:
        pass


def test_training_progress_rewrites_one_line_on_a_terminal_and_prints_lines_in_a_log() -> None:
    from virality_dev.cli import _Progress

    for tty in (True, False):
        stream = _Stream(tty)
        progress = _Progress(True, stream, interval=0.0)
        progress.stage("reading and validating")
        for i in range(3):
            progress(i, 1.0 / (i + 1), 10.0 ** -i)
        progress.stage("done fitting")
        progress.done()
        text = stream.buffer.getvalue()
        assert "reading and validating" in text and "done fitting" in text
        assert text.count("iteration") == 3
        # a terminal gets one rewritten line (carriage returns), a log one line per update
        assert (text.count("\r") == 3) is tty
        assert text.count("\n") == (3 if tty else 5)


def test_progress_is_silent_when_disabled() -> None:
    from virality_dev.cli import _Progress

    stream = _Stream(False)
    progress = _Progress(False, stream, interval=0.0)
    progress.stage("reading")
    progress(1, 1.0, 1.0)
    progress.done()
    assert stream.buffer.getvalue() == ""


def test_train_verbose_reports_its_stages(tmp_path, capsys) -> None:
    from virality_dev.cli import main
    from virality_dev.synthetic import sample_csv

    data = tmp_path / "v.csv"
    data.write_bytes(sample_csv(500, 3))
    assert main(["train", str(data), "--out", str(tmp_path / "m.json"), "--l2", "0.001", "-v"]) == 0
    err = capsys.readouterr().err
    assert "reading and validating" in err and "500 rows; fitting" in err
