"""Newton vs the seed-faithful gd: objective gap per iteration on the 7,358-row data.

Uses the ``callback`` of ``virality.ml.solvers.fit`` to record the objective and
max|gradient| after every Newton iteration / gd epoch, and plots
``F - F*`` (``F*`` = Newton's final objective) on a log scale. Writes
``docs/img/convergence.png``.

Usage::

    PYTHONPATH=layers/virality python benchmarks/plot_convergence.py [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from _common import ROOT
from bench_train import L2, SMALL_N, small_data

from virality.ml import softmax, solvers

OUT = ROOT / "docs" / "img" / "convergence.png"


def trace(X: np.ndarray, y: np.ndarray, optimizer: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(iterations, objective, max|grad|)``, starting with the initial point (iteration 0)."""
    hist: list[tuple[int, float, float]] = []
    solvers.fit(X, y, optimizer=optimizer, l2_reg_strength=L2,
                callback=lambda it, f, g: hist.append((it, f, g)))
    # gd's callback reports the objective *before* each epoch's step (epoch 1 = the start);
    # Newton's reports it after each step: prepend Newton's starting point (all zeros).
    if optimizer == "newton":
        k = int(y.max()) + 1
        f0, gw, gb = softmax.loss_gradient(np.zeros((k, X.shape[1])), np.zeros(k), X, y, L2)
        hist.insert(0, (0, f0, max(np.abs(gw).max(), np.abs(gb).max())))
    else:
        hist = [(it - 1, f, g) for it, f, g in hist]
    it, f, g = (np.array(v) for v in zip(*hist, strict=True))
    return it, f, g


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    X, y = small_data()
    f_star = solvers.fit(X, y, l2_reg_strength=L2).objective
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, style in (("newton", "o-"), ("gd", "-")):
        it, f, g = trace(X, y, name)
        gap = np.maximum(f - f_star, 1e-16)
        label = "Newton (default)" if name == "newton" else "gd (original, 200 epochs)"
        ax1.semilogy(it, gap, style, label=label, markersize=4)
        ax2.semilogy(it, g, style, label=label, markersize=4)
    ax1.set(xscale="symlog", xlabel="iteration / epoch", ylabel="F − F*  (F* = Newton's optimum)",
            title=f"Objective gap, {SMALL_N:,} synthetic rows")
    ax2.axhline(1e-8, color="grey", linestyle=":", label="Newton tol (max|grad| ≤ 1e-8)")
    ax2.set(xscale="symlog", xlabel="iteration / epoch", ylabel="max |gradient|", title="Gradient norm")
    ax1.set_ylim(bottom=1e-16)          # exact zero gap (Newton's last iterate) is drawn at 1e-16
    for ax in (ax1, ax2):
        ax.set_xlim(left=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
