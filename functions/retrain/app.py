"""retrain Lambda: an upload under ``training-data/`` -> a new, versioned ``ml-weights.json``.

Triggered by S3 ``ObjectCreated`` notifications, directly (asynchronous
invocation) or wrapped in SQS messages (S3 -> SQS -> Lambda). Thin by design:
parse the event, refuse foreign buckets (``DATA_BUCKET``), guard against
retraining on our own output, then :func:`virality.services.retraining.retrain`.

Each record is reported separately; bad data and malformed records are
reported (not retried). Direct events: the invocation raises only when a
training genuinely failed, after every record ran, so Lambda's async retries
and on-failure destination see it. SQS batches use Powertools' batch
processing with a partial batch response (``ReportBatchItemFailures``): a
message that is not an S3 notification, or whose training genuinely failed,
is reported in ``batchItemFailures`` alone (retried, then dead-lettered)
while the other messages of the batch succeed.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from virality.config import OUTCOMES_PREFIX, RetrainSettings
from virality.errors import RetrainFailureKind, ViralityError, retrain_failure_kind
from virality.observability import capture_lambda_handler, logger, metrics
from virality.services.configuration import promotion_policy, training_config
from virality.services.retraining import RetrainSummary, retrain, wall_clock
from virality.services.sparkjob import SparkSettings, route_upload
from virality.store.s3 import LazyClient, ModelRegistry, read_source
from virality.structs import document

#: One S3 client per container, created on first use.
s3_client = LazyClient()

class RetrainFailedError(ViralityError):
    """At least one record failed for a reason a retry may fix (raised after all records ran)."""


def reset() -> None:
    """Drop the cached client (tests start a fresh moto backend)."""
    s3_client.reset()


class PoisonMessageError(ViralityError):
    """An SQS message whose body is not an S3 notification: failed alone (retried, then dead-lettered)."""


def _malformed(record: Any) -> str | None:
    """Why ``record`` is not a usable S3 notification record, or None when it is."""
    if not isinstance(record, dict):
        return f"a record is a {type(record).__name__}, not an object"
    s3 = record.get("s3")
    if not isinstance(s3, dict) or not isinstance(s3.get("bucket"), dict) or not isinstance(s3.get("object"), dict):
        return "the record has no s3.bucket / s3.object"
    if not isinstance(s3["bucket"].get("name"), str) or not s3["bucket"]["name"]:
        return "s3.bucket.name is missing or not a string"
    if not isinstance(s3["object"].get("key"), str) or not s3["object"]["key"]:
        return "s3.object.key is missing or not a string"
    if not isinstance(record.get("eventName"), str):
        return "eventName is missing or not a string"
    if s3["object"].get("versionId") is not None and not isinstance(s3["object"]["versionId"], str):
        return "s3.object.versionId is not a string"
    return None


def _records_of(event: Any) -> list[Any] | str:
    """The ``Records`` list of an event / notification, or why there is none."""
    if not isinstance(event, dict):
        return f"the event is a {type(event).__name__}, not an object"
    records = event.get("Records")
    if not isinstance(records, list):
        return "the event has no Records list"
    return records


def _malformed_summary(index: int, problem: str) -> RetrainSummary:
    logger.warning("malformed S3 event record", extra={"record_index": index, "problem": problem})
    metrics.add_metric(name="MalformedRecords", unit=MetricUnit.Count, value=1)
    return RetrainSummary(status="failed", sourceKey=None, reason=f"malformed S3 event record {index}",
                          error=problem, errorType="MalformedEventError")


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
    if settings.data_bucket and bucket != settings.data_bucket:
        # IAM would refuse the read in AWS; the code refuses first, and says so.
        logger.warning("refusing an event from a foreign bucket", extra={"bucket": bucket, "key": key})
        metrics.add_metric(name="ForeignBucketEvents", unit=MetricUnit.Count, value=1)
        return RetrainSummary(status="failed", sourceBucket=bucket, sourceKey=key, sourceVersion=version_id,
                              reason="refused: not the configured data bucket",
                              error=f"bucket {bucket!r} is not DATA_BUCKET {settings.data_bucket!r}",
                              errorType="ForeignBucketError"), False
    # Recursive-invocation guard, in code as well as in the trigger's filter.
    if key.startswith(settings.model_prefix):
        return _ignored(key, bucket, f"under MODEL_PREFIX {settings.model_prefix!r}: never train on our own output"), False
    # Labelled outcomes are for the calibration audit: never training data, whatever TRAINING_PREFIX is.
    if key.startswith(OUTCOMES_PREFIX):
        return _ignored(key, bucket, f"under {OUTCOMES_PREFIX!r}: outcomes are audited, never trained on"), False
    if not key.startswith(settings.training_prefix):
        return _ignored(key, bucket, f"outside TRAINING_PREFIX {settings.training_prefix!r}"), False
    started = time.perf_counter()
    metrics.add_metric(name="TrainingsStarted", unit=MetricUnit.Count, value=1)
    registry = ModelRegistry(settings.model_bucket or bucket, settings.model_prefix, s3_client)
    try:
        routed = route_upload(s3_client(), bucket, key, version_id, SparkSettings.from_env())
        if routed is not None:    # too big for this function: a Spark job run trains and publishes it
            metrics.add_metric(name="TrainingsSubmitted", unit=MetricUnit.Count, value=1)
            logger.info("handed to Spark", extra={"bucket": bucket, "key": key, **routed})
            return RetrainSummary(sourceBucket=bucket, sourceKey=key, **routed), False
        source = read_source(s3_client(), bucket, key, version_id, settings.max_training_bytes)
        summary = retrain(registry, source, training_config(settings), promotion_policy(settings),
                          deadline=deadline)
    except Exception as exc:  # outermost edge of one record: report it, let the others run
        kind = retrain_failure_kind(exc)
        return _failed(exc, kind, bucket, key, version_id, started), kind != "data"
    _published_metrics(summary)
    logger.info("retrain finished", extra={"summary": document(summary)})
    return summary, False


#: reason of the summary, per kind of failure (virality.errors.retrain_failure_kind).
_FAILURE_REASONS: dict[RetrainFailureKind, str] = {
    "data": "training data rejected",
    "in_progress": "in progress in another delivery; retry later",
    "retryable": "training failed",
}


def _failed(exc: Exception, kind: RetrainFailureKind, bucket: str, key: str, version_id: str | None,
            started: float) -> RetrainSummary:
    """Log and count a failed record; its summary."""
    error = str(exc)
    if kind == "data":
        metrics.add_metric(name="TrainingsFailed", unit=MetricUnit.Count, value=1)
        logger.error("training data rejected; nothing was written",
                     extra={"bucket": bucket, "key": key, "error": str(exc), "error_type": type(exc).__name__})
    elif kind == "in_progress":
        # Another delivery of this event holds its lease: nothing written; come back later.
        logger.warning("another delivery is processing this event", extra={"bucket": bucket, "key": key,
                                                                          "error": str(exc)})
    else:
        metrics.add_metric(name="TrainingsFailed", unit=MetricUnit.Count, value=1)
        logger.exception("training failed", extra={"bucket": bucket, "key": key})
        error = f"{type(exc).__name__}: {exc}"
    return RetrainSummary(status="failed", sourceBucket=bucket, sourceKey=key, sourceVersion=version_id,
                          reason=_FAILURE_REASONS[kind], error=error, errorType=type(exc).__name__,
                          durationSeconds=time.perf_counter() - started)


def _published_metrics(summary: RetrainSummary) -> None:
    if summary.status != "published":
        return
    metrics.add_metric(name="TrainingsSucceeded", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="TrainingRows", unit=MetricUnit.Count, value=sum((summary.rows or {}).values()))
    metrics.add_metric(name="TrainingDuration", unit=MetricUnit.Seconds, value=summary.durationSeconds)
    metrics.add_metric(name="TestAccuracy", unit=MetricUnit.Percent,
                       value=100 * (summary.metrics or {}).get("accuracy", 0.0))
    metrics.add_metric(name="Promoted", unit=MetricUnit.Count, value=int(summary.promoted))


def _handle_records(records: list[Any], settings: RetrainSettings, deadline: float,
                    results: list[dict[str, Any]]) -> tuple[bool, bool]:
    """Handle the S3 records of one notification; returns (any retryable failure, any malformed record)."""
    retryable = malformed = False
    for index, raw in enumerate(records):
        problem = _malformed(raw)
        if problem is None and raw.get("eventSource") not in (None, "aws:s3"):
            logger.warning("ignoring a record that is not an S3 notification",
                           extra={"event_source": raw.get("eventSource")})
            continue
        if problem is not None:
            results.append(document(_malformed_summary(index, problem)))
            malformed = True
            continue
        summary, failed = handle_record(S3EventRecord(raw), settings, deadline)
        results.append(document(summary))
        retryable = retryable or failed
    return retryable, malformed


def _sqs_batch(event: dict[str, Any], settings: RetrainSettings, deadline: float,
               context: LambdaContext) -> dict[str, Any]:
    """SQS-wrapped notifications: each message succeeds or fails alone (partial batch response)."""
    results: list[dict[str, Any]] = []

    def record_handler(record: SQSRecord) -> None:
        try:
            body = json.loads(record.body or "")
        except ValueError:
            raise PoisonMessageError(f"message {record.message_id}: the body is not JSON") from None
        if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
            logger.info("ignoring an S3 test event", extra={"message_id": record.message_id})
            return
        records = _records_of(body)
        if isinstance(records, str):
            raise PoisonMessageError(f"message {record.message_id}: {records}")
        retryable, malformed = _handle_records(records, settings, deadline, results)
        if malformed:
            raise PoisonMessageError(f"message {record.message_id}: a record is not an S3 notification")
        if retryable:
            raise RetrainFailedError(f"message {record.message_id}: training failed; retry may help")

    # A new processor per invocation: it keeps per-batch state, and tests run handlers in threads.
    processor = BatchProcessor(event_type=EventType.SQS)
    response = process_partial_response(event=event, record_handler=record_handler, processor=processor,
                                        context=context)
    return {**response, "results": results}


def _is_sqs(event: Any) -> bool:
    records = event.get("Records") if isinstance(event, dict) else None
    return (isinstance(records, list) and bool(records) and isinstance(records[0], dict)
            and records[0].get("eventSource") == "aws:sqs")


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = RetrainSettings.from_env()
    deadline = wall_clock() + context.get_remaining_time_in_millis() / 1000
    if _is_sqs(event):
        return _sqs_batch(event, settings, deadline, context)
    # Direct S3 notification (asynchronous invocation): malformed records are reported, the others run.
    results: list[dict[str, Any]] = []
    records = _records_of(event)
    if isinstance(records, str):
        results.append(document(_malformed_summary(0, records)))
        return {"results": results}
    retryable, _ = _handle_records(records, settings, deadline, results)
    response = {"results": results}
    if retryable:
        raise RetrainFailedError(json.dumps(response))
    return response
