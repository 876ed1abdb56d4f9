"""The named-features fast path of the predict API accepts exactly what pydantic accepts.

The fast path skips building pydantic objects for bodies made only of named
features; whenever it accepts a body, the full validator must accept it too
and yield the same matrix, and it must never accept what the validator rejects.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from virality.http.api import _named_features_fast, instances_to_matrix, parse_predict_request
from virality.http.models import PredictRequest
from virality.ml.features import FEATURE_NAMES
from virality.services.serving import load_bundled_model

MODEL = load_bundled_model()

values = st.one_of(
    st.floats(min_value=0, max_value=1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-2, max_value=2),
    st.integers(min_value=10**20, max_value=10**30),
    st.booleans(),
    st.just("0.5"),
    st.none(),
)


@st.composite
def feature_maps(draw: st.DrawFn) -> dict[str, object]:
    names = list(FEATURE_NAMES)
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from([*FEATURE_NAMES, "extra"]), unique=True, max_size=16))
    return {name: draw(values) for name in names}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, object]:
    kind = draw(st.sampled_from(["single", "batch"]))
    if kind == "single":
        body: dict[str, object] = {"features": draw(feature_maps())}
    else:
        body = {"instances": [{"features": draw(feature_maps())} for _ in range(draw(st.integers(0, 3)))]}
    if draw(st.booleans()):
        body["explain"] = draw(st.one_of(st.booleans(), st.just(1)))
    return body


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_fast_path_never_accepts_what_pydantic_rejects(body: dict[str, object]) -> None:
    raw = json.dumps(body).encode()
    fast = _named_features_fast(raw, max_batch=1000)
    try:
        request = PredictRequest.model_validate(json.loads(raw))
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        instances = request.instances if request.instances is not None else [request]
        np.testing.assert_array_equal(fast.feature_matrix(), instances_to_matrix(instances, MODEL))
        assert fast.batch == (request.instances is not None)
        assert fast.explain == request.explain


def test_valid_named_features_take_the_fast_path() -> None:
    row = {name: 0.5 for name in FEATURE_NAMES}
    raw = json.dumps({"instances": [{"features": row}] * 3, "explain": True}).encode()
    parsed = parse_predict_request(raw, max_batch=10)
    assert parsed.X is not None and parsed.X.shape == (3, 15) and parsed.explain and parsed.batch


def test_a_boolean_feature_leaves_the_fast_path_and_is_rejected() -> None:
    row: dict[str, object] = {name: 0.5 for name in FEATURE_NAMES}
    row["hasTrendingSound"] = True
    raw = json.dumps({"features": row}).encode()
    assert _named_features_fast(raw, max_batch=1000) is None


def _row_text(row: dict[str, object]) -> str:
    return ", ".join(f'"{k}": {json.dumps(v)}' for k, v in row.items())


def _duplicate_bodies() -> list[str]:
    row = {name: 0.5 for name in FEATURE_NAMES}
    body = _row_text(row)
    return [
        # a plain duplicate inside a features object (single and batch)
        '{"features": {' + body + ', "shareRate": 0.25}}',
        '{"instances": [{"features": {' + body + '}}, {"features": {' + body + ', "likeRate": 0.1}}]}',
        # a duplicate spelled with an escape: decodes to the same key
        '{"features": {' + body + ', "share\\u0052ate": 0.25}}',
        # a duplicate hiding a string value behind the number that wins
        '{"features": {"shareRate": "high", ' + body + '}}',
        # a duplicated top-level key
        '{"features": {' + body + '}, "explain": true, "explain": false}',
        # a body long enough (> 4 KiB) that the quotes are counted with NumPy
        '{"instances": [' + ", ".join(['{"features": {' + body + '}}'] * 40
                                      + ['{"features": {' + body + ', "likeRate": 0.1}}']) + ']}',
    ]


def test_duplicated_keys_never_pass_the_fast_path() -> None:
    import pytest

    from virality.errors import RequestValidationError

    for text in _duplicate_bodies():
        json.loads(text)     # valid JSON (last key wins): only the duplicate check can refuse it
        with pytest.raises(RequestValidationError) as err:
            parse_predict_request(text.encode(), max_batch=100)
        assert err.value.status == 400
        assert "duplicated" in err.value.message
