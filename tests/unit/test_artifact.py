"""The ml-weights.json artifact: round trip, original fields, checksum, validation, the original format."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest

from virality import TIER_MIDPOINTS
from virality.artifact import (
    SCHEMA_VERSION,
    ModelArtifact,
    artifact_document,
    canonical_checksum,
    dump_artifact,
    load_artifact,
    new_version_id,
)
from virality.errors import ArtifactValidationError
from virality.ml.features import FEATURE_NAMES, Preprocessing
from virality.ml.model import ViralityModel
from virality.ml.softmax import softmax
from virality.structs import from_builtins, replace
from virality_dev.testing import raw_videos_from_records

ORIGINAL_FIELDS = ("weights", "biases", "featureNames", "numClasses", "trainedAt", "accuracy", "confusionMatrix")


@pytest.fixture(scope="module")
def dumped(trained) -> bytes:
    return dump_artifact(trained.artifact)


def _doc(dumped: bytes) -> dict:
    return json.loads(dumped)


def _resigned(doc: dict) -> bytes:
    """Re-checksum an edited document, so only the schema validation can object."""
    doc = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = canonical_checksum(doc)
    return json.dumps(doc, indent=2).encode()


def _legacy_doc(trained) -> dict:
    a = trained.artifact
    return {"weights": a.weights, "biases": a.biases, "featureNames": list(FEATURE_NAMES), "numClasses": 5,
            "trainedAt": "2024-05-01T12:00:00.000Z", "accuracy": a.accuracy, "confusionMatrix": a.confusionMatrix}


# --------------------------------------------------------------------------- round trip


def test_dump_load_dump_is_byte_identical(trained, dumped):
    loaded = load_artifact(dumped)
    assert loaded.checksum == _doc(dumped)["checksum"]
    assert replace(loaded, checksum=None) == trained.artifact
    assert dump_artifact(loaded) == dumped
    assert dumped.endswith(b"\n")


def test_every_original_field_is_present_with_the_original_shapes(trained, dumped):
    doc = _doc(dumped)
    for name in ORIGINAL_FIELDS:
        assert name in doc, name
    assert np.array(doc["weights"]).shape == (5, 15)
    assert len(doc["biases"]) == 5
    assert doc["featureNames"] == list(FEATURE_NAMES)
    assert doc["numClasses"] == 5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["trainedAt"])
    report = trained.test_report
    assert doc["accuracy"] == report.accuracy
    assert doc["confusionMatrix"] == report.confusionMatrix
    assert sum(map(sum, doc["confusionMatrix"])) == trained.training_set.test.X.shape[0]


def test_new_fields_are_present(trained, dumped, sample_csv_bytes):
    doc = _doc(dumped)
    assert doc["schemaVersion"] == SCHEMA_VERSION == 2
    assert doc["modelVersion"] == "v-test-newton"
    assert doc["tierMidpoints"] == list(TIER_MIDPOINTS) == [12.5, 35.0, 55.0, 72.5, 90.0]
    t = doc["training"]
    assert (t["optimizer"], t["l2"], t["classWeight"]) == ("newton", 0.001, "none")
    assert t["iterations"] >= 1 and t["converged"] is True and t["gradientNorm"] <= 1e-8
    assert t["finalObjective"] > 0
    m = doc["metrics"]
    assert {"accuracy", "confusionMatrix", "perClass", "macroF1", "logLoss", "ece",
            "majorityBaselineAccuracy"} <= set(m["test"])
    assert 0 < m["trainAccuracy"] <= 1
    d = doc["data"]
    assert d["source"] == "sample.csv" and d["format"] == "csv"
    assert d["sha256"] == hashlib.sha256(sample_csv_bytes).hexdigest()
    assert d["rows"]["train"] + d["rows"]["test"] == 1500
    assert sum(d["classCounts"]["train"]) == d["rows"]["train"]
    assert sum(d["classCounts"]["test"]) == d["rows"]["test"]
    assert from_builtins(doc["preprocessing"], Preprocessing) == trained.training_set.preprocessing
    assert len(doc["tiering"]["thresholds"]) == 4
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", doc["checksum"])
    assert doc["checksum"] == canonical_checksum(doc)


def test_checksum_is_over_canonical_json_of_everything_else(dumped):
    doc = _doc(dumped)
    body = {k: v for k, v in doc.items() if k != "checksum"}
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert doc["checksum"] == "sha256:" + hashlib.sha256(blob.encode()).hexdigest()
    # reformatting the file (key order, whitespace) keeps it valid
    reformatted = json.dumps(dict(reversed(list(doc.items()))), separators=(",", ":")).encode()
    assert load_artifact(reformatted) == load_artifact(dumped)


def test_artifact_document_refreshes_the_checksum(trained):
    stale = replace(trained.artifact, checksum="sha256:" + "0" * 64)
    doc = artifact_document(stale)
    assert doc["checksum"] == canonical_checksum(doc) != "sha256:" + "0" * 64


def test_new_version_ids_sort_in_creation_order():
    from datetime import UTC, datetime

    a = new_version_id(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    b = new_version_id(datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC))
    assert re.fullmatch(r"v20260102T030405000006Z-[0-9a-f]{8}", a)
    assert a < b


# --------------------------------------------------------------------------- tampering and corruption


def test_changing_one_weight_breaks_the_checksum(dumped):
    # Given the dumped file with one weight nudged in its text
    doc = _doc(dumped)
    doc["weights"][2][7] += 1e-6
    tampered = json.dumps(doc, indent=2).encode()
    # Then loading refuses it and says why
    with pytest.raises(ArtifactValidationError, match="checksum"):
        load_artifact(tampered, source="s3://bucket/models/v1/ml-weights.json")


def test_text_level_tampering_is_detected(dumped, trained):
    text = dumped.decode()
    accuracy = json.dumps(trained.artifact.accuracy)
    assert f'"accuracy": {accuracy}' in text
    tampered = text.replace(f'"accuracy": {accuracy}', '"accuracy": 0.99', 1)
    with pytest.raises(ArtifactValidationError, match="checksum mismatch"):
        load_artifact(tampered)


def test_error_names_the_source(dumped):
    doc = _doc(dumped)
    doc["biases"][0] += 1
    with pytest.raises(ArtifactValidationError, match=r"^s3://b/k\.json: "):
        load_artifact(json.dumps(doc), source="s3://b/k.json")


def test_missing_checksum_is_rejected(dumped):
    doc = _doc(dumped)
    del doc["checksum"]
    with pytest.raises(ArtifactValidationError, match="missing checksum"):
        load_artifact(json.dumps(doc))


def test_nan_weight_is_rejected(dumped):
    doc = _doc(dumped)
    doc["weights"][0][0] = 12345.678
    text = json.dumps(doc).replace("12345.678", "NaN", 1)
    with pytest.raises(ArtifactValidationError, match="non-finite"):
        load_artifact(text)


@pytest.mark.parametrize(("edit", "fragment"), [
    (lambda d: d["weights"].pop(), "weights must be 5 x 15"),
    (lambda d: d["weights"][1].pop(), "weights must be 5 x 15"),
    (lambda d: d["weights"][1].append(0.0), "weights must be 5 x 15"),
    (lambda d: d["biases"].pop(), "biases must have 5"),
    (lambda d: d.__setitem__("numClasses", 4), "numClasses"),
    (lambda d: d["featureNames"].reverse(), "featureNames"),
    (lambda d: d["featureNames"].__setitem__(0, "shares"), "featureNames"),
    (lambda d: d.__setitem__("tierMidpoints", [90, 72.5, 55, 35, 12.5]), "tierMidpoints"),
    (lambda d: d.__setitem__("tierMidpoints", [12.5, 35, 55, 72.5, 190]), "tierMidpoints"),
    (lambda d: d["weights"][0].__setitem__(0, "big"), "weights"),
    (lambda d: d.pop("featureNames"), "featureNames"),
    (lambda d: d.__setitem__("surprise", 1), "surprise"),
    # json lets a lone surrogate escape through; it must be refused as data, not crash as an encoding error
    (lambda d: d.__setitem__("featureSet", "\udcff"), "not valid Unicode"),
    (lambda d: d.__setitem__("\udcff", 1), "not valid Unicode"),
    (lambda d: d["training"].__setitem__("\udcff", 1), "not valid Unicode"),
])
def test_schema_violations_are_rejected_even_with_a_valid_checksum(dumped, edit, fragment):
    doc = _doc(dumped)
    edit(doc)
    with pytest.raises(ArtifactValidationError, match=re.escape(fragment)):
        load_artifact(_resigned(doc))


def test_a_metric_this_version_does_not_know_is_ignored_but_an_unknown_field_elsewhere_is_refused(dumped):
    # A later version may measure more: its models must still load here (the metrics are not served)
    doc = _doc(dumped)
    doc["metrics"]["test"]["aucRoc"] = 0.71
    doc["metrics"]["test"]["perClass"][0]["auc"] = 0.7
    doc["metrics"]["testIntervals"]["ece"]["method"] = "percentile"
    loaded = load_artifact(_resigned(doc))
    assert loaded.metrics is not None and loaded.metrics.test.accuracy == doc["metrics"]["test"]["accuracy"]
    doc = _doc(dumped)
    doc["preprocessing"]["shareCap"] = 1.0
    with pytest.raises(ArtifactValidationError, match="shareCap"):
        load_artifact(_resigned(doc))


def test_unsupported_schema_version_is_rejected(dumped):
    doc = _doc(dumped)
    doc["schemaVersion"] = 3
    with pytest.raises(ArtifactValidationError, match="unsupported schemaVersion 3"):
        load_artifact(_resigned(doc))


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"null"])
def test_non_json_or_non_object_is_rejected(data):
    with pytest.raises(ArtifactValidationError):
        load_artifact(data)


def test_model_artifact_refuses_non_finite_values_in_python(trained):
    weights = [row[:] for row in trained.artifact.weights]
    weights[4][14] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        replace(trained.artifact, weights=weights)


# --------------------------------------------------------------------------- the original format


def test_original_format_loads_and_predicts(trained):
    # Given a file with only the original fields (no schemaVersion, no checksum)
    legacy = json.dumps(_legacy_doc(trained)).encode()
    # When loaded
    artifact = load_artifact(legacy)
    # Then it is valid, named by its content, with the standard midpoints
    assert artifact.schemaVersion is None and artifact.source_kind == "legacy"
    assert artifact.modelVersion == "legacy-" + hashlib.sha256(legacy).hexdigest()[:12]
    assert artifact.tierMidpoints == list(TIER_MIDPOINTS)
    assert artifact.preprocessing is None and artifact.checksum is None
    # And it predicts exactly what the trained model predicts
    X = trained.training_set.test.X[:25]
    model = ViralityModel(artifact)
    np.testing.assert_allclose(model.predict_proba(X), trained.model.predict_proba(X), rtol=0, atol=1e-15)
    assert model.preprocessing == Preprocessing()


def test_original_format_with_unknown_extra_fields_still_loads(trained):
    doc = {**_legacy_doc(trained), "trainSize": 5886, "note": "from the TypeScript trainer"}
    assert load_artifact(json.dumps(doc)).weights == trained.artifact.weights


def test_original_format_is_still_validated(trained):
    doc = _legacy_doc(trained)
    doc["weights"] = doc["weights"][:4]
    with pytest.raises(ArtifactValidationError, match="5 x 15"):
        load_artifact(json.dumps(doc))
    doc = _legacy_doc(trained)
    doc["biases"] = [0.0, 0.0, 0.0, 0.0, 1e999]
    with pytest.raises(ArtifactValidationError, match="finite"):
        load_artifact(json.dumps(doc).replace("Infinity", "1e999"))
    doc = _legacy_doc(trained)
    del doc["weights"]
    with pytest.raises(ArtifactValidationError, match="weights"):
        load_artifact(json.dumps(doc))


def test_original_format_survives_a_dump_and_reload(trained):
    # Given a model loaded from the original format (e.g. imported into the registry)
    artifact = load_artifact(json.dumps(_legacy_doc(trained)))
    # When it is dumped (which adds a checksum) and loaded again
    dumped = dump_artifact(artifact)
    reloaded = load_artifact(dumped)
    # Then it is the same model, and dumping it again is byte-identical
    assert reloaded.weights == artifact.weights and reloaded.biases == artifact.biases
    assert reloaded.modelVersion == artifact.modelVersion
    assert dump_artifact(reloaded) == dumped


# --------------------------------------------------------------------------- weights act on raw features


def test_weights_and_biases_apply_directly_to_the_features(trained, dumped):
    # Given the JSON weights and biases exactly as stored in the file
    doc = _doc(dumped)
    W, b = np.array(doc["weights"]), np.array(doc["biases"])
    X = trained.training_set.test.X
    # When logits = W x + b are computed by hand
    Z = X @ W.T + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    # Then they are the model's probabilities, and argmax is its tier
    model = ViralityModel(load_artifact(dumped))
    np.testing.assert_allclose(model.predict_proba(X), P, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.predict(X).tiers, Z.argmax(axis=1) + 1)
    assert doc["accuracy"] == pytest.approx(np.mean(Z.argmax(axis=1) + 1 == trained.training_set.test.tiers))


def test_raw_video_path_uses_the_stored_caps(trained, dumped, make_record):
    doc = _doc(dumped)
    prep = from_builtins(doc["preprocessing"], Preprocessing)
    record = make_record()
    model = ViralityModel(load_artifact(dumped))
    x = model.featurize(raw_videos_from_records([record]))[0]
    expected_share = min((50 / 10_000) / prep.shareRate, 1.0)
    assert x[0] == pytest.approx(expected_share, rel=1e-12)
    z = np.array(doc["weights"]) @ x + np.array(doc["biases"])
    np.testing.assert_allclose(model.predict_proba(x)[0], softmax(z[None, :])[0], rtol=1e-12)


def test_model_artifact_defaults_for_minimal_construction(trained):
    a = ModelArtifact(schemaVersion=SCHEMA_VERSION, modelVersion="v1", featureNames=list(FEATURE_NAMES),
                      weights=trained.artifact.weights, biases=trained.artifact.biases,
                      trainedAt="2026-01-01T00:00:00.000Z")
    assert a.numClasses == 5 and a.tierMidpoints == list(TIER_MIDPOINTS)
    assert a.accuracy is None and a.training is None and a.metrics is None
    dumped = dump_artifact(a)
    assert "accuracy" not in json.loads(dumped)        # absent optional fields are omitted, not null
    assert replace(load_artifact(dumped), checksum=None) == a
