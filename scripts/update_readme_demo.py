"""Rewrite the README's ``<!-- BEGIN demo-output -->`` block from a real ``make demo`` run.

The block shows what ``make demo`` prints; hand-editing it lets it drift from the demo. This runs
``scripts/demo.py`` (its output also goes to the terminal), and only when it succeeds replaces the
text between the markers, leaving the markers and everything else in the README untouched.

    .venv/bin/python scripts/update_readme_demo.py            # from the repository root
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAME = "demo-output"
INTRO = "`make demo` prints (this run, after the environment was created):"


def replace_section(text: str, name: str, body: str) -> str:
    """``text`` with the part between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` set to ``body``.

    Raises ``ValueError`` unless each marker occurs exactly once, BEGIN first: a README is never
    appended to or half-rewritten.
    """
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin} ... {end} pair, in that order")
    head, rest = text.split(begin, 1)
    return f"{head}{begin}\n{body.strip()}\n{end}{rest.split(end, 1)[1]}"


def demo_block(output: str) -> str:
    """The markdown shown between the markers for one demo run's stdout."""
    return f"{INTRO}\n\n```text\n{output.rstrip()}\n```"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", type=Path, default=REPO / "README.md", help="file to update (default: %(default)s)")
    args = ap.parse_args(argv)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py")], cwd=REPO,
                         stdout=subprocess.PIPE, text=True, check=False)
    sys.stdout.write(run.stdout)
    if run.returncode != 0:
        print(f"update_readme_demo: the demo failed (exit {run.returncode}); {args.readme} not changed",
              file=sys.stderr)
        return 1
    text = args.readme.read_text(encoding="utf-8")
    args.readme.write_text(replace_section(text, NAME, demo_block(run.stdout)), encoding="utf-8")
    print(f"update_readme_demo: rewrote the {NAME} block of {args.readme}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
