"""The named-features fast path on larger batches, with one value or the shape broken.

``test_api_fast_path`` draws batches of up to 3 rows with any value anywhere; these
bodies have 5 to 8 valid rows, then break one value or one row's shape, so the typed
decode must refuse them deep inside a batch (and build the matrix with ``np.fromiter``
when it accepts).
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from virality.http.api import _named_features_fast, instances_to_matrix
from virality.http.models import PredictRequest
from virality.ml.features import FEATURE_NAMES
from virality.services.serving import load_bundled_model

MODEL = load_bundled_model()

valid = st.one_of(st.floats(min_value=0, max_value=1), st.sampled_from([0, 1, 1e-5, 5e-324, 0.999]))
invalid = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-2, max_value=2),
    st.integers(min_value=10**20, max_value=10**400),
    st.booleans(),
    st.just("0.5"),
    st.none(),
    st.just([0.5]),
    st.just({}),
)


@st.composite
def batches(draw: st.DrawFn) -> dict[str, object]:
    instances = []
    for _ in range(draw(st.integers(5, 8))):
        row: dict[str, object] = {name: draw(valid) for name in FEATURE_NAMES}
        if draw(st.integers(0, 3)) == 0:       # break one value
            row[draw(st.sampled_from(FEATURE_NAMES))] = draw(invalid)
        if draw(st.integers(0, 15)) == 0:      # or the shape
            row.pop(draw(st.sampled_from(FEATURE_NAMES))) if draw(st.booleans()) else row.update(extra=0.5)
        instances.append({"features": row})
    body: dict[str, object] = {"instances": instances}
    if draw(st.booleans()):
        body["explain"] = draw(st.one_of(st.booleans(), st.just(1)))
    return body


@settings(max_examples=300, deadline=None)
@given(batches(), st.booleans())
def test_batch_fast_path_never_accepts_what_pydantic_rejects(body: dict[str, object], spaced: bool) -> None:
    raw = json.dumps(body, separators=(", ", ": ") if spaced else (",", ":")).encode()
    fast = _named_features_fast(raw, max_batch=1000)
    try:
        request = PredictRequest.model_validate(json.loads(raw))
    except ValidationError:
        assert fast is None
        return
    assert fast is not None and fast.X is not None      # a valid batch of named features is never sent the slow way
    np.testing.assert_array_equal(fast.X, instances_to_matrix(request.instances or [], MODEL))
    assert fast.batch and fast.explain == request.explain
