"""``virality audit --png FILE``: the audit's reliability diagram as a PNG.

Plotting needs matplotlib, an optional extra (``pip install 'virality[plots]'``);
it is never part of the Lambda layer, and this module is imported only by the
CLI and ``scripts/gen_audit_figure.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from virality.errors import ConfigurationError


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ConfigurationError("--png needs matplotlib: pip install 'virality[plots]'") from None
    matplotlib.use("Agg")       # files only, no display
    import matplotlib.pyplot as plt

    return plt


def reliability_png(report: dict[str, Any], path: Path) -> Path:
    """Draw the reliability diagram of an audit report (and of the previous model, when audited).

    Top: per confidence bin, accuracy (bars) against mean confidence (dots) and the
    diagonal of perfect calibration; bars below the diagonal are over-confidence.
    Bottom: how many outcome rows fall in each bin.
    """
    plt = _pyplot()
    model = report["model"]
    if not model.get("reliability"):
        raise ConfigurationError("the audit has no outcome rows: nothing to draw")
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.5, 6.5), dpi=100, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
    models = [(model, "tab:blue", "promoted")]
    prev = report.get("previous")
    if prev and prev.get("reliability"):
        models.append((prev, "tab:orange", "previous"))
    width = 0.1 / len(models)
    for i, (m, colour, role) in enumerate(models):
        filled = [b for b in m["reliability"] if b["count"]]
        ax.bar([b["lower"] + i * width for b in filled], [b["accuracy"] for b in filled], width=width,
               align="edge", color=colour, alpha=0.55, edgecolor="black", linewidth=0.5,
               label=f"{role} {m['modelVersion']}: accuracy in bin (ECE {m['ece']:.3f})")
        ax.plot([b["meanConfidence"] for b in filled], [b["accuracy"] for b in filled], "o-", color=colour,
                markersize=4, linewidth=1)
        hist.bar([b["lower"] + i * width for b in m["reliability"]], [b["count"] for b in m["reliability"]],
                 width=width, align="edge", color=colour, alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (share of rows whose top tier was right)")
    d = report["decision"]
    ax.set_title(f"Calibration audit: {model['rows']} outcomes, decision {d['status']}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    hist.set_xlabel("top-tier confidence (bins of 0.1); dots = mean confidence in the bin")
    hist.set_ylabel("rows")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
