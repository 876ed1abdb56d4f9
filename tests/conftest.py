"""Shared fixtures: fake AWS credentials, moto, handler modules loaded by path, events.

Both Lambdas are called ``app.py``; they are imported by file path under
distinct module names so they never collide.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
DATA_BUCKET = "virality-data-test"
MODEL_BUCKET = "virality-models-test"


#: Fake credentials (nothing can ever reach a real account) and test-only Powertools names.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_SERVICE_NAME": "virality-test", "POWERTOOLS_METRICS_NAMESPACE": "ViralityTest",
}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so nothing can ever reach a real account; a clean handler environment."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("MODEL_BUCKET", "MODEL_PREFIX", "MODEL_VERSION", "MODEL_REFRESH_SECONDS", "MAX_BATCH",
                 "MAX_BODY_BYTES", "TRAINING_PREFIX", "MAX_TRAINING_BYTES", "AWS_ENDPOINT_URL",
                 "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "SPARK_APPLICATION_ID", "SPARK_MIN_BYTES"):
        monkeypatch.delenv(name, raising=False)


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def predict_app() -> Iterator[ModuleType]:
    """A freshly imported predict handler module (a new 'container')."""
    module = load_module("predict_app", ROOT / "functions" / "predict" / "app.py")
    yield module
    module.reset()


@pytest.fixture
def retrain_app() -> Iterator[ModuleType]:
    module = load_module("retrain_app", ROOT / "functions" / "retrain" / "app.py")
    yield module
    module.reset()


@pytest.fixture
def lambda_context() -> Any:
    """The library's stand-in for ``LambdaContext`` (what the local API and invoke script use too)."""
    from virality_dev.localapi import LocalLambdaContext

    return LocalLambdaContext(function_name="test-function", timeout_seconds=300.0)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def api_event(method: str, path: str, body: Any = None, *, base64_body: bool = True,
              raw_body: str | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event shaped like ``sam local generate-event apigateway aws-proxy``."""
    event = copy.deepcopy(load_event("predict-single.json"))
    event["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")}
    event["requestContext"]["httpMethod"] = method
    event["requestContext"]["path"] = "/prod" + path
    text = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    if text is None:
        event["body"] = None
        event["isBase64Encoded"] = False
    elif base64_body:
        event["body"] = base64.b64encode(text.encode()).decode()
        event["isBase64Encoded"] = True
    else:
        event["body"] = text
        event["isBase64Encoded"] = False
    return event


def s3_put_event(bucket: str, key_in_event: str, *, version_id: str | None = None, etag: str = "") -> dict[str, Any]:
    """An S3 ObjectCreated:Put notification (``sam local generate-event s3 put`` shape).

    ``key_in_event`` is given as S3 sends it: URL-encoded (``training-data/my+file.csv``).
    """
    event = copy.deepcopy(load_event("retrain-s3-put.json"))
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"]["key"] = key_in_event
    record["s3"]["object"]["eTag"] = etag
    if version_id:
        record["s3"]["object"]["versionId"] = version_id
    else:
        record["s3"]["object"].pop("versionId", None)
    return event


def sqs_wrap(s3_event: dict[str, Any]) -> dict[str, Any]:
    """The same notification as it arrives through S3 -> SQS -> Lambda."""
    return {"Records": [{
        "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
        "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
        "body": json.dumps(s3_event),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183",
                       "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": "1545082649185"},
        "messageAttributes": {}, "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:retrain-queue",
        "awsRegion": "us-east-1"}]}


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto S3 (started before any client exists) with versioned data and model buckets."""
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        for bucket in (DATA_BUCKET, MODEL_BUCKET):
            client.create_bucket(Bucket=bucket)
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield client
