"""The artifact's model-quality fields: l2Search, calibration, featureSet, labelColumn."""

from __future__ import annotations

import json

import msgspec
import pytest

from virality.artifact import (
    CalibrationInfo,
    L2Search,
    artifact_document,
    canonical_checksum,
    dump_artifact,
    load_artifact,
)
from virality.errors import ArtifactValidationError
from virality.structs import document, from_builtins, replace

CAL = CalibrationInfo(method="temperature", temperature=0.25, source="cv", nSamples=1200, eceBefore=0.2,
                      eceAfter=0.04, logLossBefore=1.36, logLossAfter=1.16)
SEARCH = L2Search(grid=[1e-8, 1e-5, 1e-2], meanLogLoss=[0.7, 0.69, 1.2], stdLogLoss=[0.01, 0.02, 0.01],
                  chosen=1e-5, folds=5, seed=42)


def _with_fields(artifact):
    training = replace(artifact.training, l2Search=SEARCH)
    data = replace(artifact.data, labelColumn="labelViews")
    return replace(artifact, calibration=CAL, featureSet="prepublication", training=training, data=data)


def test_new_fields_round_trip_byte_identically(trained):
    a = _with_fields(trained.artifact)
    blob = dump_artifact(a)
    loaded = load_artifact(blob)
    assert loaded.calibration == CAL and loaded.training.l2Search == SEARCH
    assert loaded.featureSet == "prepublication" and loaded.data.labelColumn == "labelViews"
    assert dump_artifact(loaded) == blob


def test_artifacts_without_the_new_fields_still_load(trained):
    doc = artifact_document(trained.artifact)
    for key in ("calibration", "featureSet"):
        doc.pop(key, None)
    doc["training"].pop("l2Search", None)
    doc["data"].pop("labelColumn", None)
    for key in ("brier", "classwiseEce", "mce", "reliability", "intervals"):
        doc["metrics"]["test"].pop(key, None)
    doc["checksum"] = canonical_checksum(doc)
    loaded = load_artifact(json.dumps(doc).encode())
    assert loaded.calibration is None and loaded.featureSet is None and loaded.training.l2Search is None


def test_calibration_record_rejects_bad_values(trained):
    with pytest.raises(ValueError, match="temperature"):
        CalibrationInfo(method="temperature", temperature=0.0, source="cv")
    with pytest.raises(msgspec.ValidationError, match="method"):
        from_builtins({"method": "isotonic", "temperature": 1.0, "source": "cv"}, CalibrationInfo)
    doc = artifact_document(_with_fields(trained.artifact))
    doc["calibration"]["temperature"] = -1.0
    doc["checksum"] = canonical_checksum(doc)
    with pytest.raises(ArtifactValidationError, match=r"calibration\.temperature"):
        load_artifact(json.dumps(doc).encode())
    doc["calibration"]["temperature"] = 1.0
    doc["featureSet"] = "postpublication"
    doc["checksum"] = canonical_checksum(doc)
    with pytest.raises(ArtifactValidationError, match="featureSet"):
        load_artifact(json.dumps(doc).encode())


def test_audit_can_record_its_own_provenance():
    cal = CalibrationInfo(method="temperature", temperature=0.8, source="audit", fittedAt="2026-12-01T08:00:00Z",
                          provenance={"labels": "s3://bucket/labels/2026-11.jsonl", "sha256": "ab" * 32})
    assert document(cal)["provenance"]["labels"].startswith("s3://")
