"""The calibration-audit Lambda end to end on moto S3, with real EventBridge and S3 event shapes.

Models are published into the model bucket the way retrain publishes them
(write-once version + pointer); outcomes are uploaded under ``outcomes/`` of
the data bucket; the handler is called with ``events/audit-scheduled.json``
whose ``time`` is moved just past the uploads.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from virality.artifact import ModelArtifact, load_artifact
from virality.data.split import stratified_split
from virality.errors import VersionExistsError
from virality.ml.metrics import expected_calibration_error
from virality.ml.model import ViralityModel
from virality.services.audit import RECALIBRATION_SEED, judge, read_outcomes
from virality.services.training import TrainingConfig, train_file
from virality.store.s3 import AuditStore, Pointer
from virality.structs import replace
from virality_dev.events import load_event, s3_put_event
from virality_dev.fakeaws import DATA_BUCKET, MODEL_BUCKET
from virality_dev.handlers import load_handler, repo_root
from virality_dev.synthetic import sample_csv, sample_jsonl

PREFIX = "models/"


# --------------------------------------------------------------------------- models and data


def _config(l2: float) -> TrainingConfig:
    """Exactly this lambda, no post-hoc calibration (when the trainer offers it)."""
    fields = getattr(TrainingConfig, "__dataclass_fields__", {})
    extra = {"calibration": "none"} if "calibration" in fields else {}
    return TrainingConfig(l2=l2, **extra)


@lru_cache(maxsize=4)
def calibrated_artifact() -> ModelArtifact:
    """Trained on 3,000 synthetic rows with a light penalty: ECE about 0.04 on fresh draws."""
    return train_file(sample_csv(3000, 1), "train.csv", _config(1e-5), model_version="v-calibrated").artifact


@lru_cache(maxsize=4)
def misregularised_artifact() -> ModelArtifact:
    """150 rows, almost no penalty: a badly over-confident model (ECE about 0.28 on fresh draws)."""
    return train_file(sample_csv(150, 1), "small.csv", _config(1e-6), model_version="v-overconfident").artifact


def publish(s3: Any, artifact: ModelArtifact, previous: str | None = None) -> str:
    store = AuditStore(MODEL_BUCKET, PREFIX, lambda: s3)
    key, sha = store.publish(artifact, "report\n")
    state = store.read_pointer()
    store.write_pointer(Pointer(version=artifact.modelVersion, key=key, sha256=sha, trainedAt=artifact.trainedAt,
                                previous=previous), state.etag if state else None)
    return key


def upload(s3: Any, key: str, body: bytes) -> dict[str, Any]:
    return s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=body)


def scheduled(at: datetime | None = None) -> dict[str, Any]:
    event = copy.deepcopy(load_event("audit-scheduled.json"))
    event["time"] = ((at or datetime.now(UTC) + timedelta(minutes=1)).astimezone(UTC)
                     .strftime("%Y-%m-%dT%H:%M:%SZ"))
    return event


def emf_records(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            out.append(json.loads(line))
    return out


def audit_metrics(text: str) -> dict[str, Any]:
    """The audit's EMF record (the one carrying OutcomeRows), single values unwrapped from EMF's lists."""
    (record,) = [r for r in emf_records(text) if "OutcomeRows" in r]
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in record.items()}


def reports(s3: Any) -> list[str]:
    return AuditStore(MODEL_BUCKET, PREFIX, lambda: s3).list_audit_reports()


def read_json(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=MODEL_BUCKET, Key=key)["Body"].read())


def versions(s3: Any) -> list[str]:
    return AuditStore(MODEL_BUCKET, PREFIX, lambda: s3).list_versions()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def audit_app(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in {"MODEL_BUCKET": MODEL_BUCKET, "DATA_BUCKET": DATA_BUCKET, "MODEL_PREFIX": PREFIX,
                        "AUDIT_BOOTSTRAP_RESAMPLES": "200", "AUTO_RECALIBRATE": "false"}.items():
        monkeypatch.setenv(name, value)
    module = load_handler("audit")
    yield module
    module.reset()


def run(app: ModuleType, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
    return app.lambda_handler(scheduled() if event is None else event, context)


# --------------------------------------------------------------------------- the cases of the issue


def test_calibrated_model_on_in_distribution_outcomes_raises_no_alarm(s3, audit_app, lambda_context, capsys):
    publish(s3, calibrated_artifact())
    upload(s3, "outcomes/2026/12/week1.csv", sample_csv(1200, 2))
    capsys.readouterr()
    result = run(audit_app, lambda_context)
    assert result["status"] == "audited"
    assert result["decision"]["status"] == "ok" and result["decision"]["alarm"] is False
    assert result["rows"] == 1200 and result["objects"] == 1 and result["skipped"] == 0
    assert 0 < result["ece"] < 0.1 and result["ece"] <= result["eceUpper"] < 0.15
    assert "recalibration" not in result
    # The report: write-once key named by time and version, every figure, the objects read.
    (key,) = reports(s3)
    assert key.startswith(PREFIX + "audits/") and key.endswith("-v-calibrated.json")
    assert key == result["reportKey"]
    doc = read_json(s3, key)
    obj = doc["outcomes"]["objects"][0]
    assert obj["key"] == "outcomes/2026/12/week1.csv" and obj["versionId"] and len(obj["sha256"]) == 64
    m = doc["model"]
    for name in ("accuracy", "macroF1", "logLoss", "brier", "ece", "classwiseEce", "maxCalibrationError"):
        assert isinstance(m[name], float), name
    assert len(m["reliability"]) == 10 and sum(b["count"] for b in m["reliability"]) == 1200
    assert m["tierMix"]["psi"] < 0.1          # same generator: the tier mix is stable
    assert doc["decision"] == result["decision"]
    # EMF: the figures per ModelVersion and per service (what the alarm watches).
    emf = audit_metrics(capsys.readouterr().out)
    dims = emf["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert ["service"] in dims and ["service", "ModelVersion"] in dims
    assert emf["ModelVersion"] == "v-calibrated"
    names = {d["Name"] for d in emf["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert {"CalibrationECE", "CalibrationECEUpper", "OutcomeAccuracy", "OutcomeLogLoss", "OutcomeBrier",
            "OutcomeRows", "TierMixPSI"} <= names
    assert emf["CalibrationECE"] == pytest.approx(result["ece"]) and emf["OutcomeRows"] == 1200
    assert versions(s3) == ["v-calibrated"]


def test_misregularised_model_alarms_and_recalibration_lowers_held_out_ece(s3, audit_app, lambda_context,
                                                                          monkeypatch, capsys):
    monkeypatch.setenv("AUTO_RECALIBRATE", "true")
    parent = misregularised_artifact()
    publish(s3, parent)
    upload(s3, "outcomes/a.csv", sample_csv(1500, 2))
    upload(s3, "outcomes/b.jsonl", sample_jsonl(500, 3))
    capsys.readouterr()
    result = run(audit_app, lambda_context)
    assert result["decision"]["status"] == "alarm" and result["ece"] > 0.15
    assert audit_metrics(capsys.readouterr().out)["CalibrationECE"] > 0.15
    recal = result["recalibration"]
    assert recal["status"] == "published" and recal["promoted"] is True
    assert recal["checkEceAfter"] < recal["checkEceBefore"]
    assert recal["checkLogLossAfter"] < recal["checkLogLossBefore"]
    assert recal["temperature"] > 1           # over-confident: the logits are cooled down
    # The pointer names the new version, published write-once with its calibration record.
    store = AuditStore(MODEL_BUCKET, PREFIX, lambda: s3)
    pointer = store.read_pointer().pointer
    assert pointer.version == recal["version"] != parent.modelVersion
    assert pointer.previous == parent.modelVersion
    new, _ = store.load_key(pointer.key, pointer.sha256)
    assert new.calibration.source == "audit" and new.calibration.method == "temperature"
    prov = new.calibration.provenance
    assert prov["parentVersion"] == parent.modelVersion
    assert {"outcome:outcomes/a.csv", "outcome:outcomes/b.jsonl"} <= set(prov)
    np.testing.assert_allclose(new.weights, np.asarray(parent.weights) / recal["temperature"], rtol=1e-12)
    np.testing.assert_allclose(new.biases, np.asarray(parent.biases) / recal["temperature"], rtol=1e-12)
    assert store.read_promotion(pointer.version)["promoted"] is True
    # Held out, checked independently: the half of the rows T was not fitted on.
    outcomes = [read_outcomes(sample_csv(1500, 2), "a.csv"), read_outcomes(sample_jsonl(500, 3), "b.jsonl")]
    _, X, tiers, _ = judge(ViralityModel(parent), outcomes, n_resamples=10)
    _, check = stratified_split(tiers, 0.5, RECALIBRATION_SEED)
    before = expected_calibration_error(tiers[check] - 1, ViralityModel(parent).predict_proba(X[check]))
    after = expected_calibration_error(tiers[check] - 1, ViralityModel(new).predict_proba(X[check]))
    assert after < before and after < 0.15
    assert before == pytest.approx(recal["checkEceBefore"]) and after == pytest.approx(recal["checkEceAfter"])
    # And on fresh outcomes no model has seen.
    _, X2, t2, _ = judge(ViralityModel(parent), [read_outcomes(sample_csv(1000, 9), "fresh.csv")], n_resamples=10)
    assert expected_calibration_error(t2 - 1, ViralityModel(new).predict_proba(X2)) < \
        expected_calibration_error(t2 - 1, ViralityModel(parent).predict_proba(X2))


def test_alarm_without_auto_recalibrate_publishes_nothing(s3, audit_app, lambda_context):
    publish(s3, misregularised_artifact())
    upload(s3, "outcomes/a.csv", sample_csv(800, 2))
    result = run(audit_app, lambda_context)
    assert result["decision"]["alarm"] is True and "recalibration" not in result
    assert versions(s3) == ["v-overconfident"]


def test_insufficient_rows_reports_and_neither_alarms_nor_recalibrates(s3, audit_app, lambda_context,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("AUTO_RECALIBRATE", "true")
    publish(s3, misregularised_artifact())
    upload(s3, "outcomes/few.csv", sample_csv(150, 2))
    capsys.readouterr()
    result = run(audit_app, lambda_context)
    assert result["decision"]["status"] == "insufficient-data" and result["decision"]["alarm"] is False
    assert "150 outcome rows; at least 200" in result["decision"]["reason"]
    assert "recalibration" not in result
    emf = audit_metrics(capsys.readouterr().out)
    assert emf["OutcomeRows"] == 150 and "CalibrationECE" not in emf    # the alarm gets nothing to judge
    assert versions(s3) == ["v-overconfident"]
    assert read_json(s3, result["reportKey"])["decision"]["status"] == "insufficient-data"


def test_outside_the_window_and_no_model(s3, audit_app, lambda_context):
    assert run(audit_app, lambda_context)["status"] == "no-model"
    publish(s3, calibrated_artifact())
    upload(s3, "outcomes/a.csv", sample_csv(400, 2))
    # Audited "eight days later": the object is outside the 7-day window.
    result = run(audit_app, lambda_context, scheduled(datetime.now(UTC) + timedelta(days=8)))
    assert result["rows"] == 0 and result["objects"] == 0
    assert result["decision"]["status"] == "insufficient-data"
    # And a manual run with an empty event audits now.
    assert run(audit_app, lambda_context, {})["rows"] == 400


def test_bad_outcome_file_beside_good_ones_is_reported_by_row_and_column_and_skipped(s3, audit_app,
                                                                                    lambda_context):
    publish(s3, calibrated_artifact())
    good = sample_csv(600, 2)
    upload(s3, "outcomes/good.csv", good)
    lines = good.decode().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("likes")] = "lots"
    upload(s3, "outcomes/bad.csv", "\n".join([lines[0], lines[1], lines[2], ",".join(row)]).encode() + b"\n")
    upload(s3, "outcomes/bad.jsonl", b'{"views": 10}\n{not json}\n')
    upload(s3, "outcomes/labels.csv", (lines[0] + ",labelViews\n" + lines[1] + ",-5\n").encode())
    upload(s3, "outcomes/deep.jsonl", b'{"views": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n")
    upload(s3, "outcomes/binary.csv", b"\xff\xfe\x00garbage")
    result = run(audit_app, lambda_context)
    assert result["rows"] == 600 and result["objects"] == 1 and result["skipped"] == 5
    doc = read_json(s3, result["reportKey"])
    skipped = {s["key"]: s for s in doc["outcomes"]["skipped"]}
    assert skipped["outcomes/bad.csv"]["row"] == 4 and skipped["outcomes/bad.csv"]["column"] == "likes"
    assert skipped["outcomes/bad.jsonl"]["row"] == 1 and skipped["outcomes/bad.jsonl"]["errorType"] == \
        "DataValidationError"
    assert skipped["outcomes/labels.csv"]["row"] == 2 and skipped["outcomes/labels.csv"]["column"] == "labelViews"
    assert skipped["outcomes/deep.jsonl"]["errorType"] == skipped["outcomes/binary.csv"]["errorType"] == \
        "DataValidationError"
    assert all(s["versionId"] and s["sha256"] for s in skipped.values())
    assert [o["key"] for o in doc["outcomes"]["objects"]] == ["outcomes/good.csv"]
    assert result["decision"]["status"] == "ok"


def test_a_second_run_over_the_same_window_publishes_nothing_new(s3, audit_app, lambda_context, monkeypatch):
    monkeypatch.setenv("AUTO_RECALIBRATE", "true")
    publish(s3, misregularised_artifact())
    upload(s3, "outcomes/a.csv", sample_csv(1500, 2))
    event = scheduled()
    first = run(audit_app, lambda_context, event)
    assert first["recalibration"]["status"] == "published"
    after_first = versions(s3)
    assert len(after_first) == 2
    pointer = s3.get_object(Bucket=MODEL_BUCKET, Key=PREFIX + "latest.json")["Body"].read()
    # The same window again, and a later schedule with no new outcomes: no new version, pointer unmoved.
    for ev in (copy.deepcopy(event), scheduled(datetime.now(UTC) + timedelta(hours=1))):
        again = run(audit_app, lambda_context, ev)
        assert again["modelVersion"] == first["recalibration"]["version"]
        assert (again.get("recalibration") or {}).get("status") in (None, "duplicate", "rejected")
        assert versions(s3) == after_first
        assert s3.get_object(Bucket=MODEL_BUCKET, Key=PREFIX + "latest.json")["Body"].read() == pointer
    # Reports: one for the first model, one for the recalibrated one; the repeat is a duplicate.
    assert len(reports(s3)) == 2
    third = run(audit_app, lambda_context, copy.deepcopy(event))
    assert third["status"] == "duplicate" and len(reports(s3)) == 2


def test_recalibration_claim_holds_across_models(s3, audit_app, lambda_context, monkeypatch):
    """Whatever model is promoted later, a window is recalibrated once."""
    monkeypatch.setenv("AUTO_RECALIBRATE", "true")
    parent = misregularised_artifact()
    publish(s3, parent)
    upload(s3, "outcomes/a.csv", sample_csv(1000, 2))
    event = scheduled()
    first = run(audit_app, lambda_context, event)
    assert first["recalibration"]["status"] == "published"
    # Another over-confident model is promoted by hand: the same window alarms again, publishes nothing.
    other = replace(parent, modelVersion="v-overconfident-2")
    publish(s3, other, previous=first["recalibration"]["version"])
    again = run(audit_app, lambda_context, copy.deepcopy(event))
    assert again["modelVersion"] == "v-overconfident-2" and again["decision"]["alarm"] is True
    assert again["recalibration"]["status"] == "duplicate"
    assert again["recalibration"]["version"] == first["recalibration"]["version"]
    assert len(versions(s3)) == 3
    assert AuditStore(MODEL_BUCKET, PREFIX, lambda: s3).read_pointer().pointer.version == "v-overconfident-2"
    # The same (window, version) once more: a duplicate of its first report.
    third = run(audit_app, lambda_context, copy.deepcopy(event))
    assert third["status"] == "duplicate"


def test_outcome_uploads_never_trigger_retrain(s3, retrain_app, lambda_context, monkeypatch):
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
    for prefix in ("training-data/", ""):            # even a bucket-root TRAINING_PREFIX never trains on outcomes
        monkeypatch.setenv("TRAINING_PREFIX", prefix)
        put = upload(s3, "outcomes/week+1.csv", sample_csv(400, 2))
        event = s3_put_event(DATA_BUCKET, "outcomes/week%2B1.csv", encoded=True, version_id=put["VersionId"],
                             etag=put["ETag"].strip('"'))
        (result,) = retrain_app.lambda_handler(event, lambda_context)["results"]
        assert result["status"] == "ignored" and "outcomes" in result["reason"]
    assert s3.list_objects_v2(Bucket=MODEL_BUCKET).get("KeyCount", 0) == 0


def test_the_report_is_write_once(s3, audit_app, lambda_context):
    publish(s3, calibrated_artifact())
    upload(s3, "outcomes/a.csv", sample_csv(400, 2))
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=1)
    store = AuditStore(MODEL_BUCKET, PREFIX, lambda: s3)
    key = store.audit_report_key(at.strftime("%Y%m%dT%H%M%SZ"), "v-calibrated")
    # Someone (or an earlier attempt) already wrote a report at exactly this key: it is never overwritten.
    s3.put_object(Bucket=MODEL_BUCKET, Key=key, Body=b'{"decision": {"status": "earlier"}}')
    before = s3.get_object(Bucket=MODEL_BUCKET, Key=key)
    result = run(audit_app, lambda_context, scheduled(at))
    assert result["status"] == "duplicate" and result["reportKey"] == key
    after = s3.get_object(Bucket=MODEL_BUCKET, Key=key)
    assert after["ETag"] == before["ETag"] and after["Body"].read() == b'{"decision": {"status": "earlier"}}'
    with pytest.raises(VersionExistsError):
        store.write_audit_report(key, {"x": 1})
    assert len(s3.list_object_versions(Bucket=MODEL_BUCKET, Prefix=key)["Versions"]) == 1


def test_previous_model_is_audited_for_comparison(s3, audit_app, lambda_context):
    old = misregularised_artifact()
    publish(s3, old)
    publish(s3, calibrated_artifact(), previous=old.modelVersion)
    upload(s3, "outcomes/a.csv", sample_csv(600, 2))
    doc = read_json(s3, run(audit_app, lambda_context)["reportKey"])
    assert doc["model"]["modelVersion"] == "v-calibrated"
    assert doc["previous"]["modelVersion"] == "v-overconfident"
    assert doc["previous"]["ece"] > doc["model"]["ece"]


def test_prediction_log_columns_are_counted_not_required(s3, audit_app, lambda_context):
    publish(s3, calibrated_artifact())
    lines = sample_csv(300, 2).decode().splitlines()
    body = [lines[0] + ",predictedVersion,predictionId"]
    body += [ln + (",v-calibrated,p" + str(i) if i % 2 else ",,") for i, ln in enumerate(lines[1:])]
    upload(s3, "outcomes/logged.csv", ("\n".join(body) + "\n").encode())
    doc = read_json(s3, run(audit_app, lambda_context)["reportKey"])
    log = doc["model"]["predictionLog"]
    assert log == {"rowsWithPredictedVersion": 150, "byPredictedVersion": {"v-calibrated": 150},
                   "rowsWithPredictionId": 150}
    assert doc["model"]["rows"] == 300


def test_sample_events_are_the_real_shapes():
    event = load_event("audit-scheduled.json")
    assert event["source"] == "aws.events" and event["detail-type"] == "Scheduled Event"
    assert set(event) >= {"id", "account", "time", "region", "resources", "detail"}
    assert json.loads((repo_root() / "events" / "audit-manual.json").read_text()) == {}


def test_recalibrated_artifact_loads_and_keeps_the_argmax(s3):
    parent = misregularised_artifact()
    from virality.artifact import dump_artifact
    from virality.services.audit import audit_calibration, temperature_scaled

    cal = audit_calibration(parent, 3.0, window="w", objects=[{"key": "outcomes/a.csv", "versionId": "1",
                                                                "sha256": "ab"}], n_fit=10, ece=(0.3, 0.1),
                            loss=(2.0, 1.0))
    new = load_artifact(dump_artifact(temperature_scaled(parent, 3.0, "v-new", cal)))
    X = np.random.default_rng(0).random((200, 15))
    assert (ViralityModel(new).predict(X).tiers == ViralityModel(parent).predict(X).tiers).all()
    assert new.calibration.temperature == pytest.approx(3.0)


class _FailingPuts:
    """An S3 client whose ``put_object`` on matching keys fails ``times`` times (then works)."""

    def __init__(self, client: Any, match: Any, times: int = 1) -> None:
        self._client, self._match, self.left = client, match, times

    def put_object(self, **kwargs: Any) -> Any:
        if self.left and self._match(kwargs["Key"]):
            from botocore.exceptions import EndpointConnectionError

            self.left -= 1
            raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.parametrize("fails_on", ["latest.json", "/ml-weights.json", "/promotion.json", "audits/2"])
def test_a_retry_after_a_failed_write_finishes_the_same_recalibration(s3, audit_app, lambda_context,
                                                                     monkeypatch, fails_on):
    """At-least-once, as retrain: the invocation raises, the retry of the same event converges."""
    import boto3

    monkeypatch.setenv("AUTO_RECALIBRATE", "true")
    parent = misregularised_artifact()
    publish(s3, parent)
    upload(s3, "outcomes/a.csv", sample_csv(1000, 2))
    event = scheduled()
    proxy = _FailingPuts(boto3.client("s3", region_name="us-east-1"), lambda key: fails_on in key)
    monkeypatch.setattr(audit_app.s3_client, "_client", proxy)
    with pytest.raises(Exception, match="Could not connect"):
        audit_app.lambda_handler(copy.deepcopy(event), lambda_context)
    assert proxy.left == 0
    retry = audit_app.lambda_handler(copy.deepcopy(event), lambda_context)
    new = [v for v in versions(s3) if v != parent.modelVersion]
    assert len(new) == 1                                      # one recalibrated version, whatever failed
    store = AuditStore(MODEL_BUCKET, PREFIX, lambda: s3)
    pointer = store.read_pointer().pointer
    assert pointer.version == new[0] and pointer.previous == parent.modelVersion
    assert store.read_promotion(new[0])["promoted"] is True   # the release was seen through
    assert len(s3.list_object_versions(Bucket=MODEL_BUCKET, Prefix=PREFIX + "latest.json")["Versions"]) == 2
    if retry["modelVersion"] == parent.modelVersion:
        assert retry["recalibration"]["version"] == new[0]
        (report,) = reports(s3)
        assert read_json(s3, report)["recalibration"]["version"] == new[0]
    else:       # the version was published: the retry finished its release first, then audited it
        assert fails_on != "/ml-weights.json" and retry["modelVersion"] == new[0]
    # Late duplicates of the event audit the promoted recalibrated model once, and publish nothing.
    late = audit_app.lambda_handler(copy.deepcopy(event), lambda_context)
    assert late["modelVersion"] == new[0] and late["decision"]["status"] == "ok"
    assert audit_app.lambda_handler(copy.deepcopy(event), lambda_context)["status"] == "duplicate"
    assert versions(s3) == sorted([parent.modelVersion, new[0]]) and len(reports(s3)) <= 2
