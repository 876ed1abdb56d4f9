"""Nesting-depth limits for JSON from outside (request bodies, published artifacts).

Python code that walks a parsed document recursively (pydantic, a duplicate-key
scan, ``repr``) raises ``RecursionError`` near the interpreter's recursion limit
(1,000 in the Lambda runtime), and the standard library parser itself raises it
past that depth. Every untrusted document therefore goes through
:func:`check_depth` right after parsing: one iterative walk (no recursion, so
it cannot overflow whatever the depth), which refuses anything nested deeper
than the caller's limit, far below the interpreter's, and names where.
"""

from __future__ import annotations

from itertools import chain
from typing import Any


class NestingTooDeepError(ValueError):
    """A document nests containers deeper than allowed.

    Attributes
    ----------
    parts : tuple of str and int
        Keys and indices leading to the first container past the limit (empty for the root).
    max_depth : int
    """

    def __init__(self, parts: tuple[str | int, ...], max_depth: int) -> None:
        self.parts = parts
        self.max_depth = max_depth
        where = format_path(parts[:3]) + ("..." if len(parts) > 3 else "")
        super().__init__(f"nested more than {max_depth} levels deep" + (f" (at {where})" if parts else ""))


def format_path(parts: tuple[str | int, ...]) -> str:
    """``("instances", 0, "features")`` -> ``"instances[0].features"``."""
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


_CONTAINERS = (dict, list)


def depth(doc: Any, limit: int | None = None) -> int:
    """Nesting depth of a parsed document: 0 for a scalar, 1 for ``{}`` or ``[1, 2]``.

    Iterative, level by level, linear in the number of values (one C-level pass
    per level; about the cost of parsing the document with jiter). With
    ``limit``, stops at the first level deeper than ``limit`` (and returns ``limit + 1``).
    """
    if not isinstance(doc, _CONTAINERS):
        return 0
    level: list[Any] = [doc]
    deepest = 0
    while level:
        deepest += 1
        if limit is not None and deepest > limit:
            return deepest
        children = chain.from_iterable(node.values() if isinstance(node, dict) else node for node in level)
        level = [child for child in children if isinstance(child, _CONTAINERS)]
    return deepest


def _path_past(doc: Any, max_depth: int) -> tuple[str | int, ...]:
    """The keys/indices of the first container nested deeper than ``max_depth`` (only run on refusal)."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(doc, 1, ())]
    while stack:
        node, level, parts = stack.pop()
        if level > max_depth:
            return parts
        items = node.items() if isinstance(node, dict) else enumerate(node)
        children = [(child, level + 1, (*parts, key)) for key, child in items if isinstance(child, dict | list)]
        stack.extend(reversed(children))     # depth-first, first child first
    return ()


def check_depth(doc: Any, max_depth: int) -> Any:
    """Return ``doc`` unchanged, or raise :class:`NestingTooDeepError` naming where it is too deep."""
    if depth(doc, max_depth) > max_depth:
        raise NestingTooDeepError(_path_past(doc, max_depth), max_depth)
    return doc
