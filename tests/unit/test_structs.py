"""virality.structs: the JSON documents of the stored records."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from virality.artifact import CalibrationInfo, dump_artifact, load_artifact
from virality.errors import ArtifactValidationError
from virality.ml.metrics import EvaluationReport, Interval
from virality.services.audit import ModelAudit
from virality.store.base import Pointer
from virality.structs import checked, document, from_builtins


def test_document_leaves_out_none_fields_of_records_at_every_level_but_keeps_plain_dicts() -> None:
    pointer = Pointer(version="v1", key="models/v1/ml-weights.json", metrics={"ece": None, "accuracy": 0.5})
    doc = document(pointer)
    # absent fields are left out, so the file reads back as the same record ...
    assert doc == {"version": "v1", "key": "models/v1/ml-weights.json", "metrics": {"ece": None, "accuracy": 0.5}}
    assert Pointer.from_json(pointer.to_json()) == pointer
    # ... a None the caller put in a plain dict is data, and stays
    assert json.loads(pointer.to_json())["metrics"]["ece"] is None


def test_document_walks_records_inside_dicts_and_lists() -> None:
    interval = Interval(estimate=0.5, low=0.4, high=0.6, nResamples=10, seed=0)
    cal = CalibrationInfo(method="temperature", temperature=2.0, source="cv", provenance={"a": "b"})
    assert document(cal) == {"method": "temperature", "temperature": 2.0, "source": "cv", "provenance": {"a": "b"}}
    assert document(cal, exclude=frozenset({"provenance"})) == {"method": "temperature", "temperature": 2.0,
                                                               "source": "cv"}
    report = from_builtins({"nSamples": 1, "accuracy": 1, "confusionMatrix": [[1]], "perClass": [],
                            "macroF1": 1.0, "logLoss": 0.0, "ece": 0.0, "majorityBaselineAccuracy": 1.0,
                            "intervals": {"ece": msgspec.to_builtins(interval)}}, EvaluationReport)
    doc = document(report)
    assert "brier" not in doc and doc["intervals"]["ece"] == msgspec.to_builtins(interval)
    assert doc["accuracy"] == 1.0 and isinstance(doc["accuracy"], float)   # decoded: ints in float fields are floats


def test_checked_refuses_a_record_built_with_wrong_types(trained) -> None:
    # Construction in Python checks no types (only __post_init__ rules): checked() is what writers rely on
    bad = msgspec.structs.replace(trained.artifact, trainedAt=20261201)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.trainedAt"):
        checked(bad)
    with pytest.raises(ArtifactValidationError, match="trainedAt"):
        dump_artifact(bad)
    assert load_artifact(dump_artifact(trained.artifact)).modelVersion == trained.artifact.modelVersion


def test_document_writes_what_reading_back_gives_numpy_scalars_and_ints_in_float_fields_included() -> None:
    figures = ModelAudit(modelVersion="v1", rows=np.int64(3), accuracy=np.float64(0.5),
                         eceInterval={"low": 0.1, "high": 0.2, "nResamples": 50})
    doc = document(figures)
    assert doc == {"modelVersion": "v1", "rows": 3, "accuracy": 0.5,
                   "eceInterval": {"low": 0.1, "high": 0.2, "nResamples": 50.0}}
    assert type(doc["rows"]) is int and type(doc["eceInterval"]["nResamples"]) is float
    with pytest.raises(msgspec.ValidationError, match="ndarray"):
        document(ModelAudit(modelVersion="v1", rows=0, confusionMatrix=np.eye(5, dtype=int)))


def test_a_pointer_with_a_non_finite_metric_is_written_as_json_it_can_read_back() -> None:
    pointer = Pointer(version="v1", key="models/v1/ml-weights.json", metrics={"logLoss": float("inf")})
    assert Pointer.from_json(pointer.to_json()).metrics == {"logLoss": None}
