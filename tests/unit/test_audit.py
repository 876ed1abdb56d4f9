"""The audit's figures against an independent, slow, plain-Python implementation written here.

Nothing below calls :mod:`virality.ml.metrics` for the expected values: the
reference re-scores each row from the artifact's weights with ``math.exp``,
labels it from the view cut points by counting, and computes every figure
with loops over rows and bins.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np
import pytest

from virality.errors import DataValidationError
from virality.ml.calibration import fit_temperature
from virality.ml.features import FEATURE_NAMES
from virality.ml.metrics import population_stability_index
from virality.ml.model import ViralityModel
from virality.services.audit import (
    Outcomes,
    audit_figures,
    decide,
    format_audit,
    judge,
    read_outcomes,
    reliability_diagram_text,
)
from virality.services.training import TrainingConfig, train_file
from virality.structs import document
from virality_dev.synthetic import sample_csv

BINS = 10


@lru_cache(maxsize=2)
def model() -> ViralityModel:
    return ViralityModel(train_file(sample_csv(600, 5), "t.csv", TrainingConfig(l2=1e-4), model_version="v-unit").artifact)


# --------------------------------------------------------------------------- the slow reference


def slow_proba(artifact, x_row):
    logits = [b + sum(w * x for w, x in zip(ws, x_row, strict=True))
              for ws, b in zip(artifact.weights, artifact.biases, strict=True)]
    top = max(logits)
    e = [math.exp(z - top) for z in logits]
    return [v / sum(e) for v in e]


def slow_tier(views, thresholds):
    return 1 + sum(1 for t in thresholds if views >= t)


def slow_bin(p):
    return min(int(p * BINS), BINS - 1)


def slow_figures(y, P, train_mix):
    n, k = len(y), len(P[0])
    pred = [max(range(k), key=lambda c: (p[c], -c)) for p in P]
    conf = [max(p) for p in P]
    acc = sum(a == b for a, b in zip(pred, y, strict=True)) / n
    f1s = []
    for c in range(k):
        tp = sum(1 for a, b in zip(pred, y, strict=True) if a == c and b == c)
        np_, na = pred.count(c), y.count(c)
        if np_ + na == 0:
            continue
        prec = tp / np_ if np_ else 0.0
        rec = tp / na if na else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    ll = -sum(math.log(max(p[t], 1e-15)) for p, t in zip(P, y, strict=True)) / n
    brier = sum(sum((p[c] - (1.0 if c == t else 0.0)) ** 2 for c in range(k)) for p, t in zip(P, y, strict=True)) / n
    table = []
    for b in range(BINS):
        rows = [i for i in range(n) if slow_bin(conf[i]) == b]
        if rows:
            table.append((len(rows), sum(conf[i] for i in rows) / len(rows),
                          sum(pred[i] == y[i] for i in rows) / len(rows)))
        else:
            table.append((0, None, None))
    ece = sum(c * abs(a - m) for c, m, a in table if c) / n
    mce = max(abs(a - m) for c, m, a in table if c)
    cw = 0.0
    for c in range(k):
        total = 0.0
        for b in range(BINS):
            rows = [i for i in range(n) if slow_bin(P[i][c]) == b]
            if rows:
                total += abs(sum(P[i][c] for i in rows) - sum(y[i] == c for i in rows))
        cw += total / n
    cw /= k
    mix = [y.count(c) for c in range(k)]
    e = [max(v / sum(train_mix), 1e-4) for v in train_mix]
    a = [max(v / n, 1e-4) for v in mix]
    e = [v / sum(e) for v in e]
    a = [v / sum(a) for v in a]
    psi = sum((ai - ei) * math.log(ai / ei) for ai, ei in zip(a, e, strict=True))
    return {"accuracy": acc, "macroF1": sum(f1s) / len(f1s), "logLoss": ll, "brier": brier, "ece": ece,
            "maxCalibrationError": mce, "classwiseEce": cw, "table": table, "mix": mix, "psi": psi}


def slow_ece(y, P):
    n = len(y)
    sums = [[0, 0.0, 0] for _ in range(BINS)]
    for t, p in zip(y, P, strict=True):
        c = max(p)
        s = sums[slow_bin(c)]
        s[0] += 1
        s[1] += c
        s[2] += int(p.index(c) == t)
    return sum(abs(s[2] - s[1]) for s in sums if s[0]) / n


def slow_percentile(values, q):
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# --------------------------------------------------------------------------- the comparison


def _outcome_csv(rows: int, seed: int, *, label_shift: float = 1.7) -> bytes:
    """Synthetic records plus a labelViews column (the count at the outcome horizon) on every row."""
    lines = sample_csv(rows, seed).decode().splitlines()
    header = lines[0].split(",")
    vi = header.index("views")
    out = [lines[0] + ",labelViews,predictedVersion"]
    for i, line in enumerate(lines[1:]):
        views = float(line.split(",")[vi])
        label = str(int(views * label_shift)) if i % 3 else str(int(views))
        out.append(f"{line},{label},{'v-unit' if i % 4 == 0 else ''}")
    return ("\n".join(out) + "\n").encode()


def test_figures_match_the_slow_reference():
    m = model()
    data = _outcome_csv(700, 8)
    outcomes = read_outcomes(data, "o.csv")
    figures, X, tiers, _ = judge(m, [outcomes], n_resamples=300, seed=4)

    # Labels: from labelViews, with the model's own cut points.
    header = data.decode().splitlines()[0].split(",")
    thresholds = m.artifact.tiering.thresholds
    expected_tiers = []
    for line in data.decode().splitlines()[1:]:
        cells = line.split(",")
        label = cells[header.index("labelViews")]
        expected_tiers.append(slow_tier(float(label), thresholds))
    assert tiers.tolist() == expected_tiers
    # Re-scoring: row by row from the weights.
    P = [slow_proba(m.artifact, x) for x in X.tolist()]
    np.testing.assert_allclose(m.predict_proba(X), P, rtol=1e-10, atol=1e-13)

    y = [t - 1 for t in expected_tiers]
    train_mix = [a + b for a, b in zip(m.artifact.data.classCounts.train, m.artifact.data.classCounts.test,
                                       strict=True)]
    ref = slow_figures(y, P, train_mix)
    assert figures.rows == 700
    for name in ("accuracy", "macroF1", "logLoss", "brier", "ece", "maxCalibrationError", "classwiseEce"):
        assert getattr(figures, name) == pytest.approx(ref[name], rel=1e-9, abs=1e-12), name
    for got, (count, conf, acc) in zip(figures.reliability, ref["table"], strict=True):
        assert got["count"] == count
        assert got["meanConfidence"] == (None if conf is None else pytest.approx(conf, rel=1e-9))
        assert got["accuracy"] == (None if acc is None else pytest.approx(acc, rel=1e-9))
    assert figures.tierMix["outcomes"] == ref["mix"] and figures.tierMix["training"] == train_mix
    assert figures.tierMix["psi"] == pytest.approx(ref["psi"], rel=1e-9)

    # The ECE interval: the same seeded resamples, each scored by the slow ECE, percentile bounds.
    rng = np.random.default_rng(4)
    values = []
    for _ in range(300):
        idx = rng.integers(0, 700, 700).tolist()
        values.append(slow_ece([y[i] for i in idx], [P[i] for i in idx]))
    assert figures.eceInterval["low"] == pytest.approx(slow_percentile(values, 0.025), rel=1e-9)
    assert figures.eceInterval["high"] == pytest.approx(slow_percentile(values, 0.975), rel=1e-9)
    assert figures.eceInterval["low"] <= figures.ece <= figures.eceInterval["high"]
    assert figures.predictionLog == {"rowsWithPredictedVersion": 175, "byPredictedVersion": {"v-unit": 175},
                                     "rowsWithPredictionId": 0}


def test_psi_reference_values():
    assert population_stability_index(np.array([1, 1, 1, 1, 1]), np.array([2, 2, 2, 2, 2])) == 0.0
    # Hand computed: shares (0.5, 0.5) vs (0.9, 0.1).
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert population_stability_index(np.array([5, 5]), np.array([9, 1])) == pytest.approx(expected)
    assert population_stability_index(np.array([1, 1]), np.array([1, 0])) > 4     # an empty tier: large, finite
    with pytest.raises(ValueError):
        population_stability_index(np.array([1, 1]), np.array([0, 0]))


def test_temperature_is_the_brute_force_minimum():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(400, 5)) * 3
    y = np.array([int(np.argmax(row + rng.gumbel(size=5) * 3)) for row in logits / 3])   # over-confident logits

    def nll(t):
        return -sum(math.log(slow_proba_logits([v / t for v in row])[c]) for row, c in zip(logits.tolist(), y, strict=True)) / 400

    grid = [float(v) for v in np.exp(np.linspace(math.log(0.05), math.log(20), 601))]   # 1 % steps
    best = min(grid, key=nll)
    t = fit_temperature(logits, y)
    assert t == pytest.approx(best, rel=1.1e-2)
    assert t > 1 and nll(t) <= nll(best) + 1e-9


def slow_proba_logits(z):
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def test_outcome_readers_and_their_errors():
    csv_out = read_outcomes(_outcome_csv(30, 2), "a.csv")
    assert csv_out.format == "csv" and len(csv_out) == 30
    views = csv_out.raw.views
    assert csv_out.label_views[0] == views[0]
    assert csv_out.label_views[1] == float(int(views[1] * 1.7))
    assert read_outcomes(sample_csv(10, 2), "plain.csv").label_views.tolist() == \
        read_outcomes(sample_csv(10, 2), "plain.csv").raw.views.tolist()      # no labelViews: final views
    blank = _outcome_csv(4, 2).decode().splitlines()
    cells = blank[2].split(",")
    cells[-2] = ""
    with pytest.raises(DataValidationError) as info:
        read_outcomes(("\n".join([*blank[:2], ",".join(cells)]) + "\n").encode(), "blank.csv")
    assert info.value.row == 3 and info.value.column == "labelViews"
    lines = _outcome_csv(5, 2).decode().splitlines()
    bad = lines[0] + "\n" + lines[1] + "\n" + lines[2].rsplit(",", 2)[0] + ",-3,\n"
    with pytest.raises(DataValidationError) as info:
        read_outcomes(bad.encode(), "bad.csv")
    assert info.value.row == 3 and info.value.column == "labelViews"
    jl = b'{"views": 100, "likes": 5, "comments": 1, "shares": 1, "saves": 0, "durationSeconds": 10, ' \
         b'"hashtagCount": 2, "hasTrendingSound": true, "captionLength": 12, "postedAt": "2026-11-01T10:00:00Z", ' \
         b'"labelViews": 5000, "predictionId": "abc", "predictedVersion": "v1"}\n\n'
    out = read_outcomes(jl, "a.jsonl")
    assert out.format == "jsonl" and out.label_views.tolist() == [5000.0]
    assert out.predicted_versions == ["v1"] and out.prediction_ids == 1
    seed = {"featureNames": list(FEATURE_NAMES), "trainSet": {"features": [[0.5] * 15], "labels": [2]},
            "testSet": {"features": [[0.1] * 15, [0.9] * 15], "labels": [1, 5]}}
    s = read_outcomes(json.dumps(seed).encode(), "seed.json")
    assert s.format == "seed-json" and s.tiers.tolist() == [2, 1, 5]
    _, X, tiers, raw = judge(model(), [s], n_resamples=10)
    assert X.shape == (3, 15) and tiers.tolist() == [2, 1, 5] and raw is None


def test_decision_rules():
    figures, _ = audit_figures(model(), *judge(model(), [read_outcomes(sample_csv(300, 3), "o.csv")],
                                               n_resamples=10)[1:3], n_resamples=10)
    assert decide(figures, threshold=0.9, min_rows=200)["status"] == "ok"
    assert decide(figures, threshold=figures.ece / 2, min_rows=200) == {
        "status": "alarm", "alarm": True, "reason": f"ECE {figures.ece:.4f} is above the threshold {figures.ece / 2}"}
    assert decide(figures, threshold=0.0001, min_rows=301)["status"] == "insufficient-data"
    empty = Outcomes("none", "csv", raw=None, X=np.zeros((0, 15)), tiers=np.zeros(0, dtype=int))
    f0, _, t0, _ = judge(model(), [empty], n_resamples=10)
    assert f0.rows == 0 and t0.size == 0
    assert decide(f0, threshold=0.1, min_rows=1)["alarm"] is False


def test_text_output_names_every_figure_and_the_decision():
    figures, *_ = judge(model(), [read_outcomes(sample_csv(300, 3), "o.csv")], n_resamples=20)
    report = {"model": document(figures), "outcomes": {"objects": [{}], "skipped": []},
              "previous": None, "decision": decide(figures, threshold=0.15, min_rows=200), "recalibration": None}
    text = format_audit(report)
    for word in ("accuracy", "macro-F1", "log-loss", "Brier", "ECE (10 bins)", "classwise-ECE", "max cal. error",
                 "PSI", "decision"):
        assert word in text
    diagram = reliability_diagram_text(figures.reliability)
    assert len(diagram.splitlines()) == 11
