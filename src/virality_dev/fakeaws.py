"""The one fake AWS environment: credentials that can never reach an account, and moto S3 buckets.

Used by the test fixtures (``mock_aws`` in-process) and by :class:`virality_dev.localapi.LocalS3`
(moto's server on 127.0.0.1), so both run the handlers under the same environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from virality_dev.handlers import REGION

#: Bucket names of the in-process (``mock_aws``) test environment.
DATA_BUCKET = "virality-data-test"
MODEL_BUCKET = "virality-models-test"

#: Fake credentials and region: nothing can ever reach a real account.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
#: The tests' environment: fake credentials and test-only Powertools names.
FAKE_AWS_ENV = {**FAKE_CREDENTIALS,
                "POWERTOOLS_SERVICE_NAME": "virality-test", "POWERTOOLS_METRICS_NAMESPACE": "ViralityTest"}
#: Handler settings a test starts without (each test sets what it needs).
HANDLER_SETTINGS = ("MODEL_BUCKET", "MODEL_PREFIX", "MODEL_VERSION", "MODEL_REFRESH_SECONDS", "MAX_BATCH",
                    "MAX_BODY_BYTES", "TRAINING_PREFIX", "MAX_TRAINING_BYTES", "SPARK_APPLICATION_ID",
                    "SPARK_MIN_BYTES")
#: Each could send a client elsewhere than the fake endpoint.
CONFLICTING_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                       "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (``None``: unset) environment variables, restoring the previous values on exit."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def create_buckets(client: Any, buckets: tuple[str, ...] = (DATA_BUCKET, MODEL_BUCKET)) -> None:
    """Versioned buckets, as template.yaml declares them."""
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


@contextlib.contextmanager
def moto_s3(buckets: tuple[str, ...] = (DATA_BUCKET, MODEL_BUCKET)) -> Iterator[Any]:
    """In-process moto (``mock_aws``) with versioned buckets; yields an S3 client.

    moto is started before any client exists, so no client can ever talk to AWS.
    """
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("s3", region_name=REGION)
        create_buckets(client, buckets)
        yield client
