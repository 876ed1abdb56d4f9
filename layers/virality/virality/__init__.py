"""virality: predict how viral a TikTok video will be.

A multinomial logistic-regression (softmax) model maps the 15 features of
:mod:`virality.ml.features` to five virality tiers; the 0-100 score is the
probability-weighted sum of the tier midpoints ``[12.5, 35, 55, 72.5, 90]``.

Layering (top to bottom): ``cli`` / Lambda handlers -> ``training`` and
``serving`` (orchestration) -> ``softmax``, ``metrics``, ``features``,
``datasets``, ``artifact`` (pure, no I/O besides parsing bytes) and
``registry`` (the only module that talks to S3).
"""

__version__ = "1.0.0"

TIER_MIDPOINTS: tuple[float, ...] = (12.5, 35.0, 55.0, 72.5, 90.0)
NUM_CLASSES = 5
