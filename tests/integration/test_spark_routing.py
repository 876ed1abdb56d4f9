"""Routing: the retrain Lambda hands uploads above SPARK_MIN_BYTES to EMR Serverless (moto control plane)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.retrain_helpers import all_keys, csv_bytes, event_for, put_training, run_one
from virality.config import RetrainSettings
from virality.errors import ConfigurationError
from virality.services.sparkjob import (
    DEFAULT_SPARK_MIN_BYTES,
    SparkLauncher,
    SparkSettings,
    client_token,
    job_request,
    route_upload,
    should_use_spark,
    training_arguments,
)
from virality.services.training import TrainingConfig
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET
from virality_spark.entry import build_parser

ROLE = "arn:aws:iam::123456789012:role/virality-spark-job"


@pytest.fixture
def emr(s3: Any) -> Any:
    """moto's EMR Serverless with one Spark application (inside the same mock as ``s3``)."""
    import boto3

    client = boto3.client("emr-serverless", region_name="us-east-1")
    # moto only accepts "emr-X.Y.0" labels; the template pins emr-spark-8.0.0 (Spark 4.0), which it rejects.
    app = client.create_application(name="virality-train", releaseLabel="emr-7.12.0", type="SPARK")
    client.app_id = app["applicationId"]
    return client


def _job_runs(emr: Any) -> list[dict[str, Any]]:
    """Job runs of the application (moto answers ResourceNotFound until the first run exists)."""
    emr.get_application(applicationId=emr.app_id)          # the application itself does exist
    try:
        return emr.list_job_runs(applicationId=emr.app_id)["jobRuns"]
    except emr.exceptions.ResourceNotFoundException:
        return []


def _settings(app_id: str | None, min_bytes: int = 1000) -> SparkSettings:
    env = {"SPARK_MIN_BYTES": str(min_bytes), "SPARK_JOB_ROLE_ARN": ROLE,
           "SPARK_ENTRY_POINT": "s3://artifacts/spark/spark_entry.py",
           "SPARK_PY_FILES": "s3://artifacts/spark/virality.zip", "MODEL_BUCKET": MODEL_BUCKET,
           "SPARK_LOG_URI": "s3://logs/spark/"}
    if app_id:
        env["SPARK_APPLICATION_ID"] = app_id
    return SparkSettings.from_env(env)


def test_the_decision_is_size_against_the_threshold_and_only_when_enabled() -> None:
    on = _settings("app-1", min_bytes=1000)
    assert not should_use_spark(1000, on)          # "larger than": the threshold itself stays in the Lambda
    assert should_use_spark(1001, on)
    assert not should_use_spark(10**12, _settings(None))
    assert SparkSettings.from_env({}).spark_min_bytes == DEFAULT_SPARK_MIN_BYTES
    with pytest.raises(ConfigurationError, match="SPARK_MIN_BYTES"):
        SparkSettings.from_env({"SPARK_MIN_BYTES": "0"})


def test_a_large_upload_starts_one_job_run_of_the_entry_point(s3: Any, emr: Any) -> None:
    put = put_training(s3, "training-data/big.csv", csv_bytes(600, 2))
    settings = _settings(emr.app_id)
    routed = route_upload(s3, DATA_BUCKET, "training-data/big.csv", put["VersionId"], settings)
    assert routed is not None and routed["status"] == "submitted"
    run = emr.get_job_run(applicationId=emr.app_id, jobRunId=routed["jobRunId"])["jobRun"]
    assert run["executionRole"] == ROLE
    submit = run["jobDriver"]["sparkSubmit"]
    assert submit["entryPoint"] == "s3://artifacts/spark/spark_entry.py"
    args = submit["entryPointArguments"]
    assert args[args.index("--source") + 1] == f"s3://{DATA_BUCKET}/training-data/big.csv"
    assert args[args.index("--source-version") + 1] == put["VersionId"]
    assert args[args.index("--model-bucket") + 1] == MODEL_BUCKET
    assert "spark.submit.pyFiles=s3://artifacts/spark/virality.zip" in submit["sparkSubmitParameters"]
    # the Lambda's training defaults travel with the job: lambda by CV, temperature, all features
    assert args[args.index("--l2") + 1] == "auto"
    assert args[args.index("--calibration") + 1] == "temperature"
    assert args[args.index("--feature-set") + 1] == "full"
    # one token per object version: a redelivered event is the same StartJobRun request
    source_id = f"{DATA_BUCKET}/training-data/big.csv#{put['VersionId']}"
    assert routed["sourceVersion"] == put["VersionId"]
    assert client_token(source_id) == client_token(source_id) != client_token(source_id + "x")


def test_small_uploads_and_disabled_spark_stay_in_the_lambda(s3: Any, emr: Any) -> None:
    put = put_training(s3, "training-data/small.csv", csv_bytes(600, 2))
    size = s3.head_object(Bucket=DATA_BUCKET, Key="training-data/small.csv")["ContentLength"]
    calls: list[Any] = []
    launcher = SparkLauncher(lambda: calls.append(1) or emr)
    assert route_upload(s3, DATA_BUCKET, "training-data/small.csv", put["VersionId"],
                        _settings(emr.app_id, min_bytes=size), launcher) is None
    assert route_upload(s3, DATA_BUCKET, "training-data/small.csv", None, _settings(None), launcher) is None
    assert route_upload(s3, DATA_BUCKET, "training-data/gone.csv", None, _settings(emr.app_id), launcher) is None
    assert calls == []                              # no EMR client was even created
    assert _job_runs(emr) == []


def test_incomplete_spark_configuration_is_a_clear_error(s3: Any) -> None:
    put_training(s3, "training-data/big.csv", csv_bytes(600, 2))
    settings = SparkSettings.from_env({"SPARK_APPLICATION_ID": "app-1", "SPARK_MIN_BYTES": "10"})
    with pytest.raises(ConfigurationError, match=r"SPARK_JOB_ROLE_ARN.*SPARK_ENTRY_POINT.*SPARK_PY_FILES"):
        route_upload(s3, DATA_BUCKET, "training-data/big.csv", None, settings)


def test_the_retrain_handler_returns_submitted_and_writes_no_model(s3: Any, emr: Any, retrain_app: Any,
                                                                    lambda_context: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SPARK_APPLICATION_ID": emr.app_id, "SPARK_JOB_ROLE_ARN": ROLE, "SPARK_MIN_BYTES": "1000",
                        "SPARK_ENTRY_POINT": "s3://artifacts/spark/spark_entry.py",
                        "SPARK_PY_FILES": "s3://artifacts/spark/virality.zip",
                        "MODEL_BUCKET": MODEL_BUCKET}.items():
        monkeypatch.setenv(name, value)
    put = put_training(s3, "training-data/big.csv", csv_bytes(600, 2))
    summary = run_one(retrain_app, lambda_context, event_for("training-data/big.csv", version_id=put["VersionId"]))
    assert summary["status"] == "submitted"
    assert summary["sourceKey"] == "training-data/big.csv"
    runs = _job_runs(emr)
    assert [r["id"] for r in runs] == [summary["jobRunId"]]
    assert all_keys(s3) == set()                    # the Lambda itself wrote nothing
    # below the threshold the Lambda trains and publishes as before
    monkeypatch.setenv("SPARK_MIN_BYTES", str(10**9))
    small = run_one(retrain_app, lambda_context, event_for("training-data/big.csv", version_id=put["VersionId"]))
    assert small["status"] == "published"
    assert len(_job_runs(emr)) == 1


def _entry_config(argv: list[str], environ: dict[str, str] | None = None) -> TrainingConfig:
    """The TrainingConfig spark_entry.run builds from these options."""
    a = build_parser(environ or {}).parse_args(["--source", "s3://b/k.csv", "--model-bucket", "m", *argv])
    return TrainingConfig(l2=a.l2, class_weight=a.class_weight, seed=a.seed, test_fraction=a.test_fraction,
                          calibration=a.calibration, feature_set=a.feature_set)


@pytest.mark.parametrize("environ", [
    {},
    {"TRAIN_L2": "0.01", "TRAIN_CALIBRATION": "none", "TRAIN_FEATURE_SET": "prepublication"},
    {"TRAIN_L2": "auto", "TRAIN_CLASS_WEIGHT": "balanced", "TRAIN_CALIBRATION": "temperature"},
    {"TRAIN_OPTIMIZER": "gd"},
])
def test_the_spark_job_trains_with_the_lambdas_resolved_configuration(environ: dict[str, str]) -> None:
    lam = RetrainSettings.from_env(environ)
    lambda_config = TrainingConfig(optimizer=lam.train_optimizer, l2=lam.training_l2(),
                                   class_weight=lam.train_class_weight, calibration=lam.train_calibration,
                                   feature_set=lam.train_feature_set)
    request = job_request("data", "training-data/big.csv", None, "data/training-data/big.csv#e",
                          _settings("app-1"), lam)
    job = _entry_config(request["jobDriver"]["sparkSubmit"]["entryPointArguments"][6:])
    # Spark runs Newton; everything that decides the model matches the Lambda's resolved choice
    assert job.resolved_l2 == lambda_config.resolved_l2
    assert job.resolved_calibration == lambda_config.resolved_calibration
    assert (job.feature_set, job.class_weight) == (lambda_config.feature_set, lambda_config.class_weight)


def test_the_entry_points_defaults_are_the_retrain_settings() -> None:
    default = _entry_config([])
    assert (default.resolved_l2, default.resolved_calibration, default.feature_set) == (
        TrainingConfig().resolved_l2, TrainingConfig().resolved_calibration, "full") == ("auto", "temperature", "full")
    env = {"TRAIN_L2": "0.01", "TRAIN_CALIBRATION": "none", "TRAIN_FEATURE_SET": "prepublication"}
    assert _entry_config([], env) == TrainingConfig(l2=0.01, calibration="none", feature_set="prepublication")
    assert _entry_config(["--l2", "auto", "--calibration", "temperature"], env).resolved_l2 == "auto"
    assert training_arguments(RetrainSettings.from_env(env)) == [
        "--l2", "0.01", "--calibration", "none", "--feature-set", "prepublication", "--class-weight", "none"]
