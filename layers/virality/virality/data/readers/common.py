"""What several readers share: the UTF-8 check and the bounded, duplicate-refusing JSON parse."""

from __future__ import annotations

import jiter

from virality.errors import DataValidationError


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"not UTF-8 text (byte {exc.start})", location=source or None) from None


def _parse_training_json(data: bytes, source: str, row: int | None = None) -> object:
    """One JSON document from training data: depth-bounded, duplicate keys refused.

    jiter refuses nesting deeper than a few hundred levels (the standard library
    recursed until ``RecursionError``) and duplicated keys (``json`` silently kept
    the last one, e.g. a second ``"trainSet"``). NaN/Infinity parse, so the value
    checks can name them with their row and column.
    """
    try:
        return jiter.from_json(data, allow_inf_nan=True, catch_duplicate_keys=True)
    except ValueError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise DataValidationError(f"not UTF-8 text (byte {bad.start})", location=source or None,
                                      row=row) from None
        message = str(exc)
        if message.startswith("Detected duplicate key"):
            raise DataValidationError(f"duplicated key: {message[len('Detected duplicate key '):]}",
                                      location=source or None, row=row) from None
        if message.startswith("recursion limit exceeded"):
            message = f"nested too deeply ({message})"
        raise DataValidationError(f"invalid JSON: {message}", location=source or None, row=row) from None
