"""Plain constants shared by unit test modules (the fixtures are in conftest.py)."""

from __future__ import annotations

from virality.services.training import TrainingConfig

#: Today's exact optimum: the original's lambda, no calibration.
PINNED_CONFIG = TrainingConfig(l2=1e-3, calibration="none")
