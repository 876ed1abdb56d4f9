"""``virality train --report-dir DIR``: a Markdown training report with PNG plots.

Writes ``DIR/report.md`` (the printed report, the lambda search, calibration,
test metrics with intervals, the reliability table) plus
``DIR/reliability.png`` (reliability diagram) and ``DIR/confusion.png``
(confusion-matrix heat map). Plotting needs matplotlib, an optional extra
(``pip install virality[plots]``); it is never part of the Lambda layer, and
this module is imported only by the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from virality.errors import ConfigurationError

if TYPE_CHECKING:
    from virality.services.training import TrainingOutcome


def require_plotting() -> None:
    """Fail early (before any training) when ``--report-dir`` cannot draw its plots."""
    _pyplot()


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConfigurationError("--report-dir needs matplotlib: pip install 'virality[plots]'") from None
    matplotlib.use("Agg")       # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _reliability_png(outcome: TrainingOutcome, path: Path, plt) -> None:
    metrics = outcome.artifact.metrics
    bins = (metrics.test.reliability if metrics else None) or []
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    filled = [b for b in bins if b.count]
    width = filled[0].upper - filled[0].lower if filled else 0.1
    ax.bar([b.lower for b in filled], [b.accuracy for b in filled], width=width, align="edge",
           edgecolor="black", alpha=0.7, label="accuracy in bin")
    ax.plot([b.meanConfidence for b in filled], [b.accuracy for b in filled], "o", color="black",
            markersize=4, label="(mean confidence, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-tier confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability, test split (ECE {outcome.test_report.ece:.3f})")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def _confusion_png(outcome: TrainingOutcome, path: Path, plt) -> None:
    cm = np.asarray(outcome.test_report.confusionMatrix)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=100)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black", fontsize=9)
    ticks = range(cm.shape[0])
    ax.set_xticks(ticks, [str(k + 1) for k in ticks])
    ax.set_yticks(ticks, [str(k + 1) for k in ticks])
    ax.set_xlabel("predicted tier")
    ax.set_ylabel("actual tier")
    ax.set_title("Confusion matrix, test split (colour = share of the row)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def render_markdown(outcome: TrainingOutcome) -> str:
    """The Markdown body of the report (no plotting needed)."""
    from virality.services.training import format_report

    a = outcome.artifact
    r = outcome.test_report
    lines = [f"# Training report: {a.modelVersion}", ""]
    if a.data:
        lines += [f"Data `{a.data.source}` ({a.data.format}), {a.data.rows.train} training and "
                  f"{a.data.rows.test} test rows; tiers from `{a.data.labelColumn or 'labels'}`; "
                  f"feature set `{a.featureSet or 'full'}`.", ""]
    lines += ["## Test split", "", "| metric | value | 95% interval |", "|---|---|---|"]
    intervals = (a.metrics.testIntervals or {}) if a.metrics else {}
    for label, key, value in (("accuracy", "accuracy", r.accuracy), ("macro-F1", "macroF1", r.macroF1),
                              ("log-loss", "logLoss", r.logLoss), ("ECE (10 bins)", "ece", r.ece)):
        iv = intervals.get(key)
        lines.append(f"| {label} | {value:.4f} | " + (f"[{iv.low:.4f}, {iv.high:.4f}] |" if iv else "– |"))
    extra: tuple[tuple[str, float | None], ...] = (
        ("classwise-ECE", r.classwiseEce), ("MCE", r.mce), ("Brier", r.brier),
        ("majority baseline accuracy", r.majorityBaselineAccuracy))
    for label, maybe in extra:
        if maybe is not None:
            lines.append(f"| {label} | {maybe:.4f} | – |")
    lines += ["", "![reliability diagram](reliability.png) ![confusion matrix](confusion.png)", ""]
    if r.reliability:
        lines += ["## Reliability", "", "| confidence bin | rows | mean confidence | accuracy |", "|---|---|---|---|"]
        lines += [f"| [{b.lower:.1f}, {b.upper:.1f}) | {b.count} | {b.meanConfidence:.3f} | {b.accuracy:.3f} |"
                  for b in r.reliability if b.count]
        lines.append("")
    if a.training and a.training.l2Search:
        sr = a.training.l2Search
        lines += ["## Lambda search", "",
                  f"{sr.folds}-fold stratified cross-validation on the training split (seed {sr.seed}); "
                  f"chosen l2 = {sr.chosen:g}.", "", "| l2 | mean held-out log-loss | std |", "|---|---|---|"]
        lines += [f"| {v:g}{' (chosen)' if v == sr.chosen else ''} | {m:.4f} | {sd:.4f} |"
                  for v, m, sd in zip(sr.grid, sr.meanLogLoss, sr.stdLogLoss, strict=True)]
        lines.append("")
    if a.calibration and a.calibration.method == "temperature":
        c = a.calibration
        lines += ["## Calibration", "",
                  f"Temperature T = {c.temperature:.4f}, fitted on {c.nSamples} out-of-fold rows "
                  f"(source `{c.source}`), folded into the published weights (W/T, b/T).", "",
                  "| out-of-fold | before | after |", "|---|---|---|",
                  f"| ECE | {c.eceBefore:.4f} | {c.eceAfter:.4f} |",
                  f"| log-loss | {c.logLossBefore:.4f} | {c.logLossAfter:.4f} |", ""]
    lines += ["## Full printed report", "", "```", format_report(a).rstrip("\n"), "```", ""]
    return "\n".join(lines)


def write_report(outcome: TrainingOutcome, directory: Path) -> Path:
    """Write ``report.md``, ``reliability.png`` and ``confusion.png`` into ``directory``.

    Each file is written to a temporary name and renamed, so a failure leaves
    no half-written file. Returns the path of ``report.md``.

    Raises
    ------
    ConfigurationError
        When matplotlib is not installed.
    """
    plt = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    outputs = {"reliability.png": lambda p: _reliability_png(outcome, p, plt),
               "confusion.png": lambda p: _confusion_png(outcome, p, plt),
               "report.md": lambda p: p.write_text(render_markdown(outcome), encoding="utf-8")}
    for name, write in outputs.items():
        tmp = directory / f".{name}.tmp.png" if name.endswith(".png") else directory / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, directory / name)
    return directory / "report.md"
