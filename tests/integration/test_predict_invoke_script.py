"""scripts/invoke.py: the Docker-free ``sam local invoke``, run as a user would (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from virality_dev.handlers import repo_root

ROOT = repo_root()


SCRIPT = ROOT / "scripts" / "invoke.py"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script finds the layer itself
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180, check=False)


def api_output(stdout: str) -> tuple[int, dict[str, str], Any]:
    """``HTTP <status>``, header lines, a blank line, the pretty-printed JSON body."""
    head, _, body = stdout.partition("\n\n")
    lines = head.splitlines()
    assert lines[0].startswith("HTTP "), stdout
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_predict_single_without_s3_uses_the_bundled_model() -> None:
    proc = run("predict", "events/predict-single.json")
    assert proc.returncode == 0, proc.stderr
    status, headers, body = api_output(proc.stdout)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert 0 <= body["score"] <= 100 and 1 <= body["tier"] <= 5 and len(body["probabilities"]) == 5
    assert body["modelVersion"].startswith("bundled-")
    # logs and metrics go to stderr, so stdout is only the response
    assert '"level"' not in proc.stdout and '"level"' in proc.stderr


def test_invalid_event_shows_the_4xx_response() -> None:
    proc = run("predict", "events/predict-invalid.json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    status, _, body = api_output(proc.stdout)
    assert status == 422 and any(d["field"] == "features.likeRate" for d in body["details"])
    assert '"level"' not in proc.stderr


def test_retrain_event_with_local_s3_publishes_a_model() -> None:
    proc = run("retrain", "events/retrain-s3-put.json", "--local-s3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)
    (result,) = response["results"]
    assert result["status"] == "published" and result["promoted"] is True
    assert result["sourceBucket"] == "virality-data-local"
    assert result["sourceKey"] == "training-data/sample videos.csv"    # URL-decoded from sample+videos.csv
    assert result["modelKey"] == f"models/{result['version']}/ml-weights.json"
    assert result["rows"]["train"] + result["rows"]["test"] == 2000
    assert "uploaded events/data/sample videos.csv" in proc.stderr


def test_predict_with_seed_model_serves_the_published_model() -> None:
    proc = run("predict", "events/model-info.json", "--local-s3", "--seed-model", "--quiet")
    assert proc.returncode == 0, proc.stderr
    status, _, info = api_output(proc.stdout)
    assert status == 200
    assert info["source"] == "published" and info["modelVersion"].startswith("v")
    assert info["loadError"] is None
    assert f"seeded model {info['modelVersion']}" in proc.stderr


def test_missing_event_file_is_a_one_line_error() -> None:
    proc = run("predict", "events/does-not-exist.json")
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "event file not found" in lines[0] and "Traceback" not in proc.stderr


def test_unknown_function_is_a_one_line_error() -> None:
    proc = run("nosuch", "events/health.json")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "predict" in lines[0] and "retrain" in lines[0]


def test_retrain_without_local_s3_or_credentials_says_what_is_missing() -> None:
    # Given no credentials anywhere botocore looks (env, shared files, instance metadata disabled)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "PYTHONPATH"}
    env.update(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent",
               AWS_EC2_METADATA_DISABLED="true")
    proc = subprocess.run([sys.executable, str(SCRIPT), "retrain", "events/retrain-s3-put.json"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=180, check=False)
    # Then it stops before the handler runs, with one line naming the fix
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no AWS credentials" in lines[0] and "--local-s3" in lines[0]
    assert "Traceback" not in proc.stderr


def test_retrain_sqs_message_with_local_s3_stages_the_object_named_in_its_body() -> None:
    # The deployed trigger: S3 -> SQS -> Lambda. The S3 notification is the message body (a JSON string).
    event = json.loads((ROOT / "events" / "retrain-sqs-message.json").read_text())
    (message,) = event["Records"]
    assert message["eventSource"] == "aws:sqs"
    (record,) = json.loads(message["body"])["Records"]
    assert record["eventSource"] == "aws:s3" and record["s3"]["object"]["key"] == "training-data/sample+videos.csv"
    proc = run("retrain", "events/retrain-sqs-message.json", "--local-s3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    response = json.loads(proc.stdout)
    assert response["batchItemFailures"] == []      # the partial batch response: nothing to retry
    (result,) = response["results"]
    assert result["status"] == "published" and result["promoted"] is True
    assert result["sourceBucket"] == "virality-data-local"
    assert result["sourceKey"] == "training-data/sample videos.csv"
    assert result["sourceVersion"]                   # the staged object's version, written into the body
    assert "uploaded events/data/sample videos.csv to s3://virality-data-local/training-data/sample videos.csv" \
        in proc.stderr


def test_retrain_poison_sqs_message_is_reported_not_crashed(tmp_path) -> None:
    # A message whose body is not an S3 notification fails alone: Lambda reports the batch error.
    event = json.loads((ROOT / "events" / "retrain-sqs-message.json").read_text())
    event["Records"][0]["body"] = "Hello from SQS!"
    path = tmp_path / "poison.json"
    path.write_text(json.dumps(event))
    proc = run("retrain", str(path), "--local-s3", "--quiet")
    assert proc.returncode == 1, proc.stderr
    error = json.loads(proc.stdout)
    assert error["errorType"] == "BatchProcessingError" and "the body is not JSON" in error["errorMessage"]
