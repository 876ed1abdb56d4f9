"""The one nesting-depth check every untrusted document goes through (requests, artifacts)."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from virality.safejson import NestingTooDeepError, check_depth, depth, format_path


def _reference_depth(doc: Any) -> int:
    if isinstance(doc, dict):
        return 1 + max(map(_reference_depth, doc.values()), default=0)
    if isinstance(doc, list):
        return 1 + max(map(_reference_depth, doc), default=0)
    return 0


_JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=3),
                     lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=3), kids, max_size=4),
                     max_leaves=40)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(_JSON)
def test_depth_equals_the_recursive_definition(doc: Any) -> None:
    assert depth(doc) == _reference_depth(doc)
    for limit in range(0, 6):
        assert (depth(doc, limit) > limit) == (_reference_depth(doc) > limit)


@pytest.mark.parametrize(("doc", "expected"), [(1, 0), ("x", 0), ({}, 1), ([], 1), ([[]], 2),
                                               ({"a": [1, {"b": []}]}, 4)])
def test_depth_examples(doc: Any, expected: int) -> None:
    assert depth(doc) == expected


def test_no_recursion_whatever_the_depth() -> None:
    doc = json.loads("[" * 900 + "]" * 900)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)       # far less than the document's depth
    try:
        assert depth(doc) == 900
        with pytest.raises(NestingTooDeepError):
            check_depth(doc, 32)
    finally:
        sys.setrecursionlimit(old)


def test_dict_subclasses_are_walked_too() -> None:
    class Marked(dict):   # the request parser's duplicate-key marker is a dict subclass
        pass

    assert depth(Marked(a=Marked(b=[[]]))) == 4


def test_check_depth_names_the_first_container_past_the_limit() -> None:
    doc = {"instances": [{"features": {}}, {"features": {"likeRate": [[[1]]]}}]}
    assert depth(doc) == 7 and check_depth(doc, 7) is doc
    with pytest.raises(NestingTooDeepError) as caught:
        check_depth(doc, 5)
    assert caught.value.parts == ("instances", 1, "features", "likeRate", 0)
    assert caught.value.max_depth == 5
    assert "more than 5 levels" in str(caught.value) and "instances[1].features..." in str(caught.value)


def test_format_path() -> None:
    assert format_path(("instances", 0, "video", "views")) == "instances[0].video.views"
    assert format_path((0, 1)) == "[0][1]"
    assert format_path(()) == ""
