#!/usr/bin/env python3
"""Write (or check) docs/openapi.json: the predict API's OpenAPI document.

The document is generated from the pydantic models by the predict handler's
``openapi_schema()``; ``tests/integration/test_predict_openapi.py`` fails when
the committed file is out of date.

    python scripts/gen_openapi.py            # rewrite docs/openapi.json
    python scripts/gen_openapi.py --check    # exit 1 if it is out of date
    python scripts/gen_openapi.py --stdout   # print it instead
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HANDLER = ROOT / "functions" / "predict" / "app.py"
OUTPUT = ROOT / "docs" / "openapi.json"


def _ensure_library_importable() -> None:
    try:
        import virality_dev  # noqa: F401
    except ImportError:
        sys.path[:0] = [str(ROOT / "layers" / "virality"), str(ROOT / "src")]


def render(schema: dict[str, Any]) -> str:
    """The committed text of ``schema`` (stable: 2-space indent, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, Any]:
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "virality")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Virality")
    _ensure_library_importable()
    from virality_dev.handlers import load_handler

    # Library log lines (if any) must not end up in --stdout output.
    with contextlib.redirect_stdout(sys.stderr):
        module = load_handler("predict")
        return module.openapi_schema()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is out of date")
    parser.add_argument("--stdout", action="store_true", help="print the document instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.stdout:
        sys.stdout.write(text)
        return 0
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python scripts/gen_openapi.py`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
