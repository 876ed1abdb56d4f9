"""Draw docs/img/audit-reliability.png, the README's reliability-diagram example.

A deliberately mis-regularised model (150 SYNTHETIC rows, lambda = 1e-6, no
calibration: over-confident) is audited on 2,000 later SYNTHETIC outcomes,
then temperature-scaled the way the audit recalibrates (T fitted on one half
of the outcomes) and audited again on the other half. Both reliability
curves go in one picture. Deterministic; needs matplotlib (the dev or plots
extra). Run from the repository root: ``python scripts/gen_audit_figure.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import virality_dev  # noqa: F401
except ImportError:
    sys.path[:0] = [str(REPO / "layers" / "virality"), str(REPO / "src")]

OUT = REPO / "docs" / "img" / "audit-reliability.png"


def main() -> int:
    from virality.data.datasets import records_to_jsonl
    from virality.data.split import stratified_split
    from virality.ml.calibration import fit_temperature
    from virality.ml.model import ViralityModel
    from virality.services.audit import (
        RECALIBRATION_SEED,
        audit_files,
        judge,
        read_outcomes,
        temperature_scaled,
    )
    from virality.services.training import TrainingConfig, train_file
    from virality_dev.auditplot import reliability_png
    from virality_dev.synthetic import sample_csv, sample_records

    over = train_file(sample_csv(150, 1), "small.csv", TrainingConfig(l2=1e-6, calibration="none"),
                      model_version="over-confident (150 rows, l2 1e-6)").artifact
    records = sample_records(2000, 2)
    model = ViralityModel(over)
    _, X, tiers, _ = judge(model, [read_outcomes(records_to_jsonl(records), "o.jsonl")], n_resamples=10)
    fit, check = stratified_split(tiers, 0.5, RECALIBRATION_SEED)
    t = fit_temperature(X[fit] @ model.coef.T + model.intercept, tiers[fit] - 1)
    recal = ViralityModel(temperature_scaled(over, t, f"recalibrated (T = {t:.2f})"))
    held_out = records_to_jsonl([records[i] for i in check])
    before = audit_files(model, [("held-out.jsonl", held_out)])
    after = audit_files(recal, [("held-out.jsonl", held_out)])
    after["previous"] = before["model"]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    reliability_png(after, OUT)
    print(f"wrote {OUT.relative_to(REPO)}: ECE {before['model']['ece']:.3f} -> {after['model']['ece']:.3f} "
          f"on {after['model']['rows']} held-out rows (T = {t:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
