"""Routing: an upload too big for one Lambda goes to Spark on EMR Serverless.

The retrain Lambda asks :func:`route_upload` before it downloads anything.
When Spark is configured (``SPARK_APPLICATION_ID``) and the object is larger
than ``SPARK_MIN_BYTES``, it starts a job run of the Spark entry point
(:mod:`virality_spark.entry`) and returns a ``submitted`` summary carrying the
job-run id; otherwise it returns None and the Lambda trains as usual.

Redelivered S3 events cannot start two trainings: the ``clientToken`` of
``StartJobRun`` is derived from the source id (EMR Serverless treats a repeated
token as the same request), and the entry point claims the same write-once
source id as the Lambda does, so at most one version is published.

Why 256 MiB by default: the 3008 MB retrain Lambda peaks at about 600 bytes of
memory per row (``docs/benchmarks.md``: 643 MB at 1,000,000 rows, 68 bytes of CSV
per row), so 256 MiB of CSV (~4M rows) peaks near 2.4 GB, the most it holds with
headroom; beyond that Spark is the engine. This module imports no pyspark: it
runs in the Lambda, and its EMR Serverless client is created on first use.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from virality.config import RetrainSettings, _EnvSettings
from virality.errors import ConfigurationError
from virality.store.emr import SparkLauncher
from virality.store.s3 import head_source
from virality.structs import described

#: Default SPARK_MIN_BYTES (see the module docstring).
DEFAULT_SPARK_MIN_BYTES = 256 * 1024 * 1024
#: The EMR Serverless release of the template's application (Apache Spark 4.0.2).
EMR_RELEASE_LABEL = "emr-spark-8.0.0"
#: Its Python: the release ships 3.11, 3.12 and 3.13 (EMR release guide, emr-spark-8.0.0 application
#: versions); the dependencies archive is built for this one and the job runs it explicitly.
EMR_PYTHON_VERSION = "3.11"
EMR_PYTHON = f"/usr/bin/python{EMR_PYTHON_VERSION}"
#: ``make spark-archive``'s third-party dependencies (scripts/build_spark_archive.py), a flat site-packages
#: tree that Spark unpacks as ``./deps`` on the driver and on every executor.
DEPS_ARCHIVE = "virality-spark-deps.tar.gz"
DEPS_ALIAS = "deps"


class SparkSettings(_EnvSettings, frozen=True, kw_only=True):
    """Spark routing of the retrain function (all optional: no application id, no routing)."""

    _PREFIXES = ("model_prefix",)

    spark_application_id: Annotated[str | None, described("EMR Serverless application id; unset disables Spark.")] = None
    spark_job_role_arn: Annotated[str | None, described("Execution role of the Spark job runs.")] = None
    spark_min_bytes: Annotated[int, described("Uploads larger than this are trained on Spark.", ge=1)] = DEFAULT_SPARK_MIN_BYTES
    spark_entry_point: Annotated[str | None, described("s3:// URI of spark_entry.py.")] = None
    spark_py_files: Annotated[str | None, described("s3:// URI of the library zip (spark.submit.pyFiles).")] = None
    spark_archives: Annotated[str | None, described(f"s3:// URI of the dependencies archive ({DEPS_ARCHIVE}), "
                                             f"optionally #alias (default #{DEPS_ALIAS}).")] = None
    spark_python: Annotated[str, described("Interpreter of the job's driver and executors.")] = EMR_PYTHON
    spark_log_uri: Annotated[str | None, described("s3:// prefix for the job runs' logs.")] = None
    model_bucket: Annotated[str | None, described("Bucket the models are written to (default: the event's).")] = None
    model_prefix: Annotated[str, described("Key prefix of model versions and latest.json.")] = "models/"

    @property
    def enabled(self) -> bool:
        return bool(self.spark_application_id)


def should_use_spark(size_bytes: int, settings: SparkSettings) -> bool:
    """Whether an upload of ``size_bytes`` goes to Spark."""
    return settings.enabled and size_bytes > settings.spark_min_bytes


def client_token(source_id: str) -> str:
    """StartJobRun idempotency token of one source object (same object, same token)."""
    return hashlib.sha256(source_id.encode()).hexdigest()[:64]


def training_arguments(training: RetrainSettings) -> list[str]:
    """Entry-point options that make the job train exactly as the Lambda would (its resolved TRAIN_* defaults)."""
    # imported here: the training modules are not needed to route an upload
    from virality.services.configuration import training_config

    config = training_config(training)
    # Spark runs Newton: gd's resolved fixed lambda and calibration (0.001, none) are passed as such.
    return ["--l2", str(config.resolved_l2), "--calibration", config.resolved_calibration,
            "--feature-set", config.feature_set, "--class-weight", config.class_weight]


def job_request(bucket: str, key: str, version_id: str | None, source_id: str, settings: SparkSettings,
                training: RetrainSettings | None = None) -> dict[str, Any]:
    """The ``StartJobRun`` request for one training object.

    ``training`` (default: the retrain settings of this environment) becomes
    the entry point's training options, so both engines train with one configuration.
    """
    missing = [name.upper() for name in ("spark_application_id", "spark_job_role_arn", "spark_entry_point",
                                         "spark_py_files") if not getattr(settings, name)]
    if missing:
        raise ConfigurationError(f"Spark routing needs {', '.join(missing)}")
    args = ["--source", f"s3://{bucket}/{key}", "--model-bucket", settings.model_bucket or bucket,
            "--model-prefix", settings.model_prefix]
    if version_id:
        args += ["--source-version", version_id]
    args += training_arguments(training if training is not None else RetrainSettings.from_env())
    request: dict[str, Any] = {
        "applicationId": settings.spark_application_id,
        "clientToken": client_token(source_id),
        "executionRoleArn": settings.spark_job_role_arn,
        "name": f"virality-train-{client_token(source_id)[:16]}",
        "jobDriver": {"sparkSubmit": {"entryPoint": settings.spark_entry_point, "entryPointArguments": args,
                                      "sparkSubmitParameters": " ".join(submit_parameters(settings))}},
        "tags": {"virality:source": source_id[:256]},
    }
    if settings.spark_log_uri:
        request["configurationOverrides"] = {
            "monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": settings.spark_log_uri}}}
    return request


def submit_parameters(settings: SparkSettings) -> list[str]:
    """``--conf`` options that put the library and its dependencies on the job's Python path.

    The library zip goes in ``spark.submit.pyFiles`` (pure Python imports from
    a zip). The dependencies archive (compiled wheels: numpy, pydantic-core,
    pyarrow ... cannot) goes in ``spark.archives`` under an alias; Spark unpacks
    it into ``./<alias>`` in the working directory of the driver and of each
    executor, and ``PYTHONPATH`` (driver: ``spark.emr-serverless.driverEnv``,
    executors: ``spark.executorEnv``) points there. Both run ``SPARK_PYTHON``,
    the interpreter the archive was built for.
    """
    params = [f"--conf spark.submit.pyFiles={settings.spark_py_files}"]
    if settings.spark_archives:
        uri, _, alias = settings.spark_archives.partition("#")
        alias = alias or DEPS_ALIAS
        python = settings.spark_python
        params += [f"--conf spark.archives={uri}#{alias}",
                   f"--conf spark.emr-serverless.driverEnv.PYTHONPATH=./{alias}",
                   f"--conf spark.executorEnv.PYTHONPATH=./{alias}",
                   f"--conf spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON={python}",
                   f"--conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON={python}",
                   f"--conf spark.executorEnv.PYSPARK_PYTHON={python}"]
    return params


def route_upload(s3_client: Any, bucket: str, key: str, version_id: str | None, settings: SparkSettings,
                 launcher: SparkLauncher | None = None) -> dict[str, Any] | None:
    """Hand a large upload to Spark; None when the Lambda should train it itself.

    Returns
    -------
    dict or None
        ``{"status": "submitted", "jobRunId": ..., "sourceVersion": ..., "reason": ...}``.
    """
    if not settings.enabled:
        return None
    head = head_source(s3_client, bucket, key, version_id)
    if head is None:
        return None     # the Lambda's own read reports the missing object as a data error
    if not should_use_spark(head.size, settings):
        return None
    size, version = head.size, head.version_id or version_id
    # The retrain Lambda's source id: the Lambda and Spark share one claim per object.
    source_id = f"{bucket}/{key}#{version or head.etag}"
    job_run_id = (launcher or SparkLauncher()).submit(job_request(bucket, key, version, source_id, settings))
    return {"status": "submitted", "jobRunId": job_run_id, "sourceVersion": version,
            "reason": f"{size} bytes > SPARK_MIN_BYTES {settings.spark_min_bytes}: EMR Serverless job run "
                      f"{job_run_id} on application {settings.spark_application_id}"}
