"""Conveniences for tests and benchmarks that the runtime never needs (so they are not in the layer)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from virality.ml.features import FEATURE_NAMES, RawColumnsBuilder, RawVideos


def raw_videos_from_records(records: Sequence[Mapping[str, object]], location: str | None = None) -> RawVideos:
    """Validate a sequence of raw video mappings (rows numbered from 0), as a training reader does."""
    builder = RawColumnsBuilder(location)
    for i, record in enumerate(records):
        builder.add(record, row=i)
    return builder.build()


def named_features_to_vector(features: Mapping[str, float]) -> np.ndarray:
    """Order a mapping of the 15 named features into a vector of shape (15,)."""
    return np.array([float(features[name]) for name in FEATURE_NAMES], dtype=np.float64)
