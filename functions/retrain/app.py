"""retrain Lambda: an upload under ``training-data/`` -> a new, versioned ``ml-weights.json``.

Triggered by S3 ``ObjectCreated`` notifications, directly or wrapped in SQS
messages (S3 -> SQS -> Lambda). Thin by design: parse the event, guard
against retraining on our own output, then :func:`virality.retraining.retrain`.
Each record is reported separately; bad data is reported (not retried), and
the invocation raises only when a training genuinely failed, so Lambda's
async retries and on-failure destination see it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from virality.config import RetrainSettings
from virality.errors import (
    DataValidationError,
    TrainingDataTooLargeError,
    TrainingSourceNotFoundError,
    ViralityError,
)
from virality.observability import capture_lambda_handler, logger, metrics
from virality.registry import ModelRegistry, default_client_factory, read_source
from virality.retraining import PromotionPolicy, RetrainSummary, retrain, wall_clock
from virality.sparkjob import SparkSettings, route_upload
from virality.training import TrainingConfig

_client: Any = None
_client_lock = threading.Lock()

#: Errors that retrying the same object cannot fix: reported, not raised.
_DATA_ERRORS = (DataValidationError, TrainingDataTooLargeError, TrainingSourceNotFoundError)


class RetrainFailedError(ViralityError):
    """At least one record failed for a reason a retry may fix (raised after all records ran)."""


def s3_client() -> Any:
    """One S3 client per container, created on first use (thread-safe)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = default_client_factory()
    return _client


def reset() -> None:
    """Drop the cached client (tests start a fresh moto backend)."""
    global _client
    _client = None


def s3_records(event: dict[str, Any]) -> Iterator[S3EventRecord]:
    """S3 records of a direct S3 notification or of SQS messages carrying one."""
    for record in event.get("Records") or []:
        if record.get("eventSource") == "aws:sqs":
            try:
                body = json.loads(record.get("body") or "")
            except ValueError:
                logger.warning("ignoring an SQS message that is not JSON",
                               extra={"message_id": record.get("messageId")})
                continue
            if not isinstance(body, dict) or body.get("Event") == "s3:TestEvent":
                logger.info("ignoring an S3 test event / non-notification message")
                continue
            yield from S3Event(body).records
        elif record.get("eventSource") == "aws:s3":
            yield S3EventRecord(record)
        else:
            logger.warning("ignoring a record that is not an S3 notification",
                           extra={"event_source": record.get("eventSource")})


def _ignored(key: str, bucket: str, reason: str) -> RetrainSummary:
    logger.info("ignoring object", extra={"bucket": bucket, "key": key, "reason": reason})
    metrics.add_metric(name="TrainingsIgnored", unit=MetricUnit.Count, value=1)
    return RetrainSummary(status="ignored", sourceBucket=bucket, sourceKey=key, reason=reason)


def handle_record(record: S3EventRecord, settings: RetrainSettings,
                  deadline: float | None = None) -> tuple[RetrainSummary, bool]:
    """Process one notification; returns the summary and whether a retry could help."""
    bucket = record.s3.bucket.name
    # S3 URL-encodes keys in notifications ("my+file.csv" for "my file.csv"); the record class does not decode.
    key = unquote_plus(record.s3.get_object.key)
    version_id = record.s3.get_object.version_id or None
    if not record.event_name.startswith("ObjectCreated"):
        return _ignored(key, bucket, f"event {record.event_name} is not ObjectCreated"), False
    # Recursive-invocation guard, in code as well as in the trigger's filter.
    if key.startswith(settings.model_prefix):
        return _ignored(key, bucket, f"under MODEL_PREFIX {settings.model_prefix!r}: never train on our own output"), False
    if not key.startswith(settings.training_prefix):
        return _ignored(key, bucket, f"outside TRAINING_PREFIX {settings.training_prefix!r}"), False
    started = time.perf_counter()
    metrics.add_metric(name="TrainingsStarted", unit=MetricUnit.Count, value=1)
    registry = ModelRegistry(settings.model_bucket or bucket, settings.model_prefix, s3_client)
    config = TrainingConfig(optimizer=settings.train_optimizer, l2=settings.train_l2,
                            class_weight=settings.train_class_weight)
    policy = PromotionPolicy(settings.promotion_f1_tolerance, settings.promotion_logloss_tolerance,
                             settings.promotion_max_sharp_disagreement)
    try:
        routed = route_upload(s3_client(), bucket, key, version_id, SparkSettings.from_env())
        if routed is not None:    # too big for this function: a Spark job run trains and publishes it
            metrics.add_metric(name="TrainingsSubmitted", unit=MetricUnit.Count, value=1)
            logger.info("handed to Spark", extra={"bucket": bucket, "key": key, **routed})
            return RetrainSummary(sourceBucket=bucket, sourceKey=key, **routed), False
        source = read_source(s3_client(), bucket, key, version_id, settings.max_training_bytes)
        summary = retrain(registry, source, config, policy, deadline=deadline)
    except _DATA_ERRORS as exc:
        metrics.add_metric(name="TrainingsFailed", unit=MetricUnit.Count, value=1)
        logger.error("training data rejected; nothing was written",
                     extra={"bucket": bucket, "key": key, "error": str(exc), "error_type": type(exc).__name__})
        return RetrainSummary(status="failed", sourceBucket=bucket, sourceKey=key, sourceVersion=version_id,
                              reason="training data rejected", error=str(exc), errorType=type(exc).__name__,
                              durationSeconds=time.perf_counter() - started), False
    except Exception as exc:  # outermost edge of one record: report it, let the others run
        metrics.add_metric(name="TrainingsFailed", unit=MetricUnit.Count, value=1)
        logger.exception("training failed", extra={"bucket": bucket, "key": key})
        return RetrainSummary(status="failed", sourceBucket=bucket, sourceKey=key, sourceVersion=version_id,
                              reason="training failed", error=f"{type(exc).__name__}: {exc}",
                              errorType=type(exc).__name__, durationSeconds=time.perf_counter() - started), True
    if summary.status == "published":
        metrics.add_metric(name="TrainingsSucceeded", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name="TrainingRows", unit=MetricUnit.Count, value=sum((summary.rows or {}).values()))
        metrics.add_metric(name="TrainingDuration", unit=MetricUnit.Seconds, value=summary.durationSeconds)
        metrics.add_metric(name="TestAccuracy", unit=MetricUnit.Percent,
                           value=100 * (summary.metrics or {}).get("accuracy", 0.0))
        metrics.add_metric(name="Promoted", unit=MetricUnit.Count, value=int(summary.promoted))
    logger.info("retrain finished", extra={"summary": summary.model_dump(exclude_none=True)})
    return summary, False


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = RetrainSettings.from_env()
    results = []
    retryable = False
    deadline = wall_clock() + context.get_remaining_time_in_millis() / 1000
    for record in s3_records(event):
        summary, failed = handle_record(record, settings, deadline)
        results.append(summary.model_dump(exclude_none=True))
        retryable = retryable or failed
    response = {"results": results}
    if retryable:
        raise RetrainFailedError(json.dumps(response))
    return response
