"""audit Lambda: judge the promoted model on the labelled outcomes of the last days.

Triggered by an EventBridge schedule (``AuditSchedule``), or by hand with an
empty event. Thin by design: read the settings and the event time, then
:func:`virality.services.audit.run_audit`; publish the figures as EMF metrics with a
``ModelVersion`` dimension (plus a ``service``-only copy the alarm watches)
and log a one-line summary. Bad outcome files are reported in the report
and skipped; an error that a retry may fix raises, so Lambda's async retry
and on-failure destination see it (a retry of the same event audits the same
window and writes no second report).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from virality.config import AuditSettings
from virality.errors import ConfigurationError
from virality.observability import capture_lambda_handler, logger, metrics
from virality.services.audit import AuditConfig, AuditSummary, run_audit
from virality.store.s3 import AuditStore, LazyClient
from virality.structs import document

#: One S3 client per container, created on first use.
s3_client = LazyClient()


def reset() -> None:
    """Drop the cached client (tests start a fresh moto backend)."""
    s3_client.reset()


def event_time(event: dict[str, Any] | None) -> datetime:
    """The scheduled time of an EventBridge event (a retry audits the same window); now for a manual run."""
    text = (event or {}).get("time") if isinstance(event, dict) else None
    if isinstance(text, str) and text:
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            logger.warning("ignoring an event time that is not ISO 8601", extra={"time": text})
    return datetime.now(UTC)


def config_from(settings: AuditSettings) -> AuditConfig:
    if not settings.data_bucket or not settings.model_bucket:
        raise ConfigurationError("DATA_BUCKET and MODEL_BUCKET must be set")
    return AuditConfig(data_bucket=settings.data_bucket, outcomes_prefix=settings.outcomes_prefix,
                       window_days=settings.audit_window_days, min_rows=settings.audit_min_rows,
                       ece_threshold=settings.calibration_ece_threshold, auto_recalibrate=settings.auto_recalibrate,
                       n_resamples=settings.audit_bootstrap_resamples, max_outcome_bytes=settings.max_outcome_bytes,
                       f1_tolerance=settings.promotion_f1_tolerance,
                       logloss_tolerance=settings.promotion_logloss_tolerance)


def publish_metrics(summary: AuditSummary) -> None:
    """EMF: every figure per ModelVersion, and the same figures per service (what the alarm watches)."""
    if summary.modelVersion is None:
        return
    metrics.add_dimensions(service=metrics.service or "virality", ModelVersion=summary.modelVersion)
    metrics.add_metric(name="OutcomeRows", unit=MetricUnit.Count, value=summary.rows)
    metrics.add_metric(name="OutcomeFilesSkipped", unit=MetricUnit.Count, value=summary.skipped)
    if (summary.decision or {}).get("status") == "insufficient-data" or summary.ece is None:
        return      # no calibration figures below AUDIT_MIN_ROWS: the alarm must not judge on them
    figures = {"CalibrationECE": summary.ece, "CalibrationECEUpper": summary.eceUpper,
               "OutcomeAccuracy": summary.accuracy, "OutcomeLogLoss": summary.logLoss,
               "OutcomeBrier": summary.brier, "TierMixPSI": summary.psi}
    for name, value in figures.items():
        if value is not None:
            metrics.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)
    metrics.add_metric(name="CalibrationAlarm", unit=MetricUnit.Count, value=int(bool((summary.decision or {}).get("alarm"))))
    recal = summary.recalibration or {}
    if recal.get("status") == "published":
        metrics.add_metric(name="Recalibrations", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics(capture_cold_start_metric=True)
@capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    settings = AuditSettings.from_env()
    config = config_from(settings)
    store = AuditStore(settings.model_bucket or "", settings.model_prefix, s3_client)
    summary, _ = run_audit(store, s3_client(), config, event_time(event))
    publish_metrics(summary)
    d = summary.decision or {}
    doc = document(summary)
    ece = "-" if summary.ece is None else f"{summary.ece:.4f} (95% <= {summary.eceUpper:.4f})"
    logger.info(f"audit {summary.modelVersion}: {summary.status}, {summary.rows} rows from {summary.objects} "
                f"file(s) ({summary.skipped} skipped), ECE {ece}, decision {d.get('status')}"
                + (f", recalibration {summary.recalibration['status']}" if summary.recalibration else ""),
                extra={"summary": doc})
    return doc
