"""Tier labels (1..5) from raw view counts.

Rule ``quantile`` (default): the four cut points are the 20/40/60/80 %
quantiles of ``views`` over the whole uploaded file, so tiers are quintiles.
Rule ``thresholds``: four fixed, increasing view counts. Either way the
fitted cut points are stored in the artifact (``tiering.thresholds``) and a
video with ``views`` gets tier ``1 + #{thresholds t : views >= t}``.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

import numpy as np

from virality.errors import ConfigurationError
from virality.structs import Record, described, replace


class Tiering(Record, frozen=True, kw_only=True):
    method: Literal["quantile", "thresholds"] = "quantile"
    quantiles: tuple[float, float, float, float] = (0.2, 0.4, 0.6, 0.8)
    thresholds: Annotated[tuple[float, float, float, float] | None, described("view-count cut points between tiers 1|2, 2|3, 3|4, 4|5")] = None

    def __post_init__(self) -> None:
        q = self.quantiles
        if not all(0 < a < b < 1 for a, b in itertools.pairwise(q)) or not 0 < q[0] < 1:
            raise ValueError("quantiles must be increasing and inside (0, 1)")
        t = self.thresholds
        if t is not None and not all(a <= b for a, b in itertools.pairwise(t)):
            raise ValueError("thresholds must be non-decreasing")


def fit_tiering(views: np.ndarray, rule: Tiering | None = None) -> Tiering:
    """Fix the cut points of ``rule`` on ``views`` (shape (n_samples,))."""
    rule = rule or Tiering()
    if rule.method == "thresholds":
        if rule.thresholds is None:
            raise ConfigurationError("tiering method 'thresholds' needs four thresholds")
        return rule
    cuts = tuple(float(c) for c in np.quantile(views, rule.quantiles))
    return replace(rule, thresholds=cuts)


def assign_tiers(views: np.ndarray, tiering: Tiering) -> np.ndarray:
    """Tiers 1..5, shape (n_samples,), from fitted cut points."""
    if tiering.thresholds is None:
        raise ConfigurationError("tiering has no fitted thresholds")
    return 1 + np.searchsorted(np.asarray(tiering.thresholds), views, side="right")
