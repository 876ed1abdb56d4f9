"""Immutable records (msgspec Structs) and their JSON documents.

The model artifact, its parts, the pointer, the settings and the run summaries
are msgspec Structs, not pydantic models: msgspec checks a whole document in one C call and
imports in milliseconds, while importing pydantic and building its first model
cost the predict function's cold start about 130 ms (docs/benchmarks.md). pydantic
stays where its field-by-field error texts and JSON schema are the product: API
requests and the OpenAPI document (:mod:`virality.http.models`).

A :class:`Record` checks types when it is decoded (:func:`from_builtins`), not when
it is constructed in Python; value rules (shapes, bounds) live in ``__post_init__``,
which runs on both. :func:`checked` re-validates a record built in code, and
:func:`document` (the only way a record is written anywhere) goes through it.
"""

from __future__ import annotations

import numbers
from typing import Any, TypeVar

import msgspec

R = TypeVar("R", bound=msgspec.Struct)


class Record(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the stored records: immutable, unknown fields refused.

    Subclasses declare ``kw_only=True`` (msgspec does not inherit it): fields keep the order of
    the stored document, required ones after optional ones included.
    """


def _fields_set(node: Any) -> Any:
    # None fields of records are left out; plain dicts and lists are kept as they are (as pydantic's
    # exclude_none did), only the records inside them are walked.
    if isinstance(node, msgspec.Struct):
        return {name: _fields_set(value) for name in node.__struct_fields__
                if (value := getattr(node, name)) is not None}
    if isinstance(node, dict):
        return {k: _fields_set(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_fields_set(v) for v in node]
    return node


def document(record: msgspec.Struct, *, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``record`` as JSON-ready builtins, as :func:`checked` makes it, fields in declaration order, its
    records' ``None`` fields left out (what is absent in a stored file is ``None`` when it is read
    back); ``None`` inside a plain dict field stays.

    Raises ``msgspec.ValidationError`` like :func:`checked`.
    """
    doc: dict[str, Any] = _fields_set(checked(record))     # a checked record holds only JSON builtins
    return {k: v for k, v in doc.items() if k not in exclude} if exclude else doc


def from_builtins(doc: Any, cls: type[R]) -> R:
    """Decode ``doc`` (parsed JSON) as ``cls``.

    Raises
    ------
    msgspec.ValidationError
        Naming the path of the first offending value, e.g. ``at `$.weights[0][3]```; also for text
        that is not valid Unicode (a lone surrogate, which ``json`` lets through) and for nesting
        past the interpreter's recursion limit.
    """
    try:
        return msgspec.convert(doc, cls)
    except UnicodeError:
        raise msgspec.ValidationError("text is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise msgspec.ValidationError("nested too deeply") from None


def _number(value: Any) -> Any:
    # NumPy scalars (np.float64, np.int64...) are not builtins for msgspec; pydantic accepted them.
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def checked(record: R) -> R:
    """``record`` as it would be read back from its document: types checked, ints in float fields
    made floats, NumPy scalars made Python numbers.

    Raises
    ------
    msgspec.ValidationError
        Like :func:`from_builtins`, and for a value that has no JSON form.
    """
    try:
        builtins = msgspec.to_builtins(record, enc_hook=_number)
    except TypeError as exc:
        raise msgspec.ValidationError(str(exc)) from None
    return from_builtins(builtins, type(record))


def described(text: str, **bounds: Any) -> msgspec.Meta:
    """``Annotated[T, described("...", ge=0)]``: a field's description (JSON schema) and bounds
    (checked on decode)."""
    return msgspec.Meta(description=text, **bounds)


def field_names(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of ``cls`` in declaration order."""
    return cls.__struct_fields__


replace = msgspec.structs.replace
