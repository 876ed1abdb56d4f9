"""The raw-video fast path of the predict API accepts exactly what pydantic accepts.

``_videos_fast`` decodes bodies made only of raw videos without building pydantic
objects; whenever it accepts a body, the full validator must accept it too and the
videos must yield the same feature matrix and ids; whatever the validator rejects,
the fast path must refuse (the pydantic path then names the field).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from virality.errors import DataValidationError, RequestValidationError
from virality.http.api import (
    _videos_fast,
    instances_to_matrix,
    parse_predict_request,
    predict,
)
from virality.http.models import PredictRequest
from virality.services.serving import load_bundled_model
from virality_dev.synthetic import sample_records

MODEL = load_bundled_model()

numbers = st.one_of(
    st.integers(min_value=0, max_value=10**7),
    st.floats(min_value=0, max_value=1e9),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-3, max_value=-1),
    st.integers(min_value=10**400, max_value=10**401),
    st.booleans(),
    st.just("12"),
    st.none(),
)
posted = st.one_of(
    st.sampled_from(["2025-03-15T05:18:53Z", "2025-03-15 05:18:53", "2025-03-15T05:18:53+05:30", "2025-03-15",
                     " 2025-03-15T23:59:59-01:00 ", "1700000000", "-5", "1e9", "20240101", "not a date", "",
                     "9999-12-31T23:59:59-01:00", "2025-13-01T00:00:00"]),
    st.integers(min_value=-10, max_value=2 * 10**9),
    st.floats(min_value=0, max_value=4e9),
    st.integers(min_value=10**14, max_value=10**20),
    st.booleans(),
    st.none(),
)
strings = st.one_of(st.none(), st.text(max_size=5), st.just("x" * 257), st.just("é\"\\\n🎵"), st.integers(0, 3))

OPTIONAL = ("videoId", "followers", "captionLength", "caption")


@st.composite
def videos(draw: st.DrawFn) -> dict[str, object]:
    video: dict[str, object] = {name: draw(st.integers(0, 10**6)) for name in
                                ("views", "likes", "comments", "shares", "saves", "durationSeconds", "hashtagCount")}
    video["hasTrendingSound"] = draw(st.booleans())
    video["postedAt"] = draw(posted)
    video["captionLength"] = draw(st.integers(0, 300))
    for name in OPTIONAL:
        if draw(st.booleans()):
            video.pop(name, None)
        elif draw(st.integers(0, 3)) == 0:
            video[name] = draw(numbers if name in ("followers", "captionLength") else strings)
    if draw(st.integers(0, 4)) == 0:      # break one field
        name = draw(st.sampled_from([*video, "extra", "hasTrendingSound"]))
        video[name] = draw(st.one_of(numbers, strings, posted, st.just({"nested": 1}), st.just([1])))
    if draw(st.integers(0, 8)) == 0:
        video.pop(draw(st.sampled_from(sorted(video))), None)
    return video


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, object]:
    if draw(st.booleans()):
        body: dict[str, object] = {"video": draw(videos())}
    else:
        body = {"instances": [{"video": draw(videos())} for _ in range(draw(st.integers(0, 3)))]}
    if draw(st.integers(0, 3)) == 0:
        body["explain"] = draw(st.one_of(st.booleans(), st.just(1)))
    return body


def _reference(raw: bytes) -> tuple[np.ndarray, list[str | None]] | None:
    """The pydantic path's matrix and ids, or None when it rejects the body."""
    try:
        request = PredictRequest.model_validate(json.loads(raw))
    except ValidationError:
        return None
    instances = request.instances if request.instances is not None else [request]
    try:
        X = instances_to_matrix(instances, MODEL)
    except DataValidationError:     # featurising refuses what pydantic let through
        return None
    return X, [inst.video.videoId if inst.video is not None else None for inst in instances]


@settings(max_examples=500, deadline=None)
@given(bodies(), st.booleans())
def test_video_fast_path_never_accepts_what_pydantic_rejects(body: dict[str, object], ascii_only: bool) -> None:
    raw = json.dumps(body, ensure_ascii=ascii_only).encode()
    fast = _videos_fast(json.loads(raw), raw)
    reference = _reference(raw)
    if reference is None:
        assert fast is None
        return
    if fast is not None:
        X, ids = reference
        np.testing.assert_array_equal(MODEL.featurize(fast.videos), X)   # type: ignore[arg-type]
        assert list(fast.video_ids or []) == ids
        assert fast.batch == ("instances" in body)
        assert fast.explain == body.get("explain", False)


def test_sample_videos_take_the_fast_path_and_predict_as_pydantic_does() -> None:
    records = sample_records(200, seed=3)
    records[0]["caption"] = "emoji 🎵 and \"quotes\"\n"
    records[1].pop("captionLength")
    records[1]["caption"] = "no length given"
    records[2]["postedAt"] = 1_700_000_000.5
    records[3]["postedAt"] = "2025-03-15T23:30:00-02:00"
    records[4]["followers"] = None
    for explain in (False, True):
        body = {"instances": [{"video": r} for r in records], "explain": explain}
        for raw in (json.dumps(body).encode(), json.dumps(body, ensure_ascii=False).encode()):
            parsed = parse_predict_request(raw, max_batch=1000)
            assert parsed.videos is not None and len(parsed) == len(records)
            slow = PredictRequest.model_validate(json.loads(raw))
            assert predict(parsed, MODEL) == predict(
                type(parsed)(batch=True, explain=explain, instances=slow.instances), MODEL)
    single = {"video": records[0]}
    parsed = parse_predict_request(json.dumps(single).encode(), max_batch=10)
    assert parsed.videos is not None and not parsed.batch
    slow = PredictRequest.model_validate(single)
    assert predict(parsed, MODEL) == predict(type(parsed)(batch=False, explain=False, instances=[slow]), MODEL)


def _video_text(extra: str = "") -> str:
    record = sample_records(1, seed=1)[0]
    return ", ".join(f'"{k}": {json.dumps(v)}' for k, v in record.items()) + extra


@pytest.mark.parametrize("text", [
    '{"video": {' + _video_text(', "views": 5') + '}}',
    '{"instances": [{"video": {' + _video_text(', "postedAt": "2025-01-01T00:00:00Z"') + '}}]}',
    # a duplicate spelled with an escape (decodes to the same key)
    '{"video": {' + _video_text(', "vi\\u0065ws": 5') + '}}',
    # a duplicate hiding a string value behind the number that wins
    '{"video": {"views": "many", ' + _video_text() + '}}',
    '{"video": {' + _video_text() + '}, "explain": true, "explain": false}',
    # a body long enough (> 4 KiB) that the quotes are counted with NumPy
    '{"instances": [' + ", ".join(['{"video": {' + _video_text() + '}}'] * 30
                                  + ['{"video": {' + _video_text(', "likes": 5') + '}}']) + ']}',
])
def test_duplicated_keys_never_pass_the_video_fast_path(text: str) -> None:
    json.loads(text)
    with pytest.raises(RequestValidationError) as err:
        parse_predict_request(text.encode(), max_batch=100)
    assert err.value.status == 400
    assert "duplicated" in err.value.message
