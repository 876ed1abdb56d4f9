"""The package tree is the architecture: these tests keep its rooms and import directions honest.

Rooms of ``virality`` (the Lambda layer): ``ml`` (math, no I/O), ``data`` (readers), ``store`` (every
AWS call), ``services`` (flows: training, retraining, serving, gate, audit), ``http`` (request and
response schemas); ``artifact``/``config``/``errors``/``observability``/``safejson`` are the shared kernel.
docs/architecture.md draws it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from virality_dev.handlers import FUNCTIONS, repo_root

ROOT = repo_root()
LIBRARY = ROOT / "layers" / "virality" / "virality"
KERNEL = {"artifact", "config", "errors", "observability", "safejson"}
ROOMS = {"ml", "data", "store", "services", "http"}
#: room -> rooms (or kernel modules) it must never import.
FORBIDDEN = {
    "kernel": {"data", "store", "services", "http"},
    "ml": {"data", "store", "services", "http", "observability", "config"},
    "data": {"store", "services", "http"},
    "http": {"store", "services", "data"},
    "store": {"services", "http", "data"},
    "services": {"http"},
}
AWS_SDK = {"boto3", "botocore"}


def _module_name(path: Path, base: Path) -> str:
    parts = path.relative_to(base).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level or inside functions (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in ROOMS:
        return parts[1]
    return "kernel"


LIBRARY_MODULES = {_module_name(p, LIBRARY.parent): p for p in sorted(LIBRARY.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(LIBRARY_MODULES))
def test_each_room_imports_only_inward(module: str) -> None:
    room = _room(module)
    bad = set()
    for target in _imports(LIBRARY_MODULES[module]):
        top = target.split(".")[0]
        if top in {"virality_dev", "virality_spark"}:
            bad.add(f"{target} (dev/Spark code is not in the layer)")
        if top in AWS_SDK and room != "store":
            bad.add(f"{target} (AWS SDK calls belong behind virality.store)")
        if top == "virality" and target.count(".") >= 1:
            name = target.split(".")[1]
            if name in FORBIDDEN[room]:
                bad.add(f"{target} ({room} must not import {name})")
    assert not bad, f"{module}: " + "; ".join(sorted(bad))


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [m for m in start if m in LIBRARY_MODULES]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))   # parent packages run first
        todo.extend(t for t in _imports(LIBRARY_MODULES[module]) if t in LIBRARY_MODULES)
    return seen


def test_the_layer_holds_only_what_the_handlers_import() -> None:
    """Everything under layers/virality/virality is reachable from a handler (lazy imports included).

    The layer build copies that folder whole (layers/virality/Makefile), so a module no handler
    imports would ship dead code to every Lambda; dev tools belong in src/virality_dev.
    """
    handler_imports = set().union(*(_imports(ROOT / "functions" / f / "app.py") for f in FUNCTIONS))
    reachable = _closure(handler_imports)
    unused = set(LIBRARY_MODULES) - reachable
    assert not unused, f"in the layer but imported by no handler: {sorted(unused)}"


def test_handlers_import_the_library_and_never_the_dev_packages() -> None:
    for function in FUNCTIONS:
        imports = _imports(ROOT / "functions" / function / "app.py")
        assert any(m.startswith("virality.") for m in imports), function
        assert not any(m.split(".")[0] in {"virality_dev", "virality_spark", "tests"} for m in imports), function
