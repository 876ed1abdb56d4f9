"""Every command in the README's ``bash`` blocks works as written (issue 13, section 3).

The README's rule, which this test enforces: each line of a ``bash`` block runs verbatim from a fresh
clone, after ``make venv``, with ``.venv/bin`` on ``PATH`` (as after ``source .venv/bin/activate``) —
unless its comment carries a ``[needs …]`` tag (``[needs AWS]``, ``[needs make tools]``,
``[needs minutes]``, …). Tagged lines are not run; untagged lines that plainly need AWS, a server or
minutes of CPU (``aws …``, ``sam …``, ``${API_URL}``, a deployed bucket, ``make test``/``demo``/``bench``)
fail the test, so the tag cannot be forgotten.

The lines run in README order in one scratch directory (files written by one command are read by the
next, as a reader following the README would), which holds links to the checkout's inputs, so nothing
is written into the repository.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
VENV = ROOT / ".venv"

TAG = re.compile(r"#.*\[needs [^\]]+\]")
# Plainly not runnable here: these must carry a tag. Checked on the whole line (comments included),
# so a comment that says "aws s3 …" on an untagged line is a failure too: tag it or reword it.
NEEDS_TAG = re.compile(
    r"(?:^|[\s;(|&/])(?:aws|sam|pyenv|java|curl)\s"
    r"|\$\{?(?:API_URL|API_KEY|DATA_BUCKET|MODEL_BUCKET)\b"
    r"|\bmake\s+(?:test|demo|bench|serve|tools|template|layer-check|build|deploy|sam)\b"
    r"|\bvirality\s+(?:serve|versions|rollback)\b"
    r"|\bpython3\.12\b")
# The checkout's inputs the commands read; outputs land in the scratch directory.
LINKED = ("Makefile", "pyproject.toml", "requirements-dev.txt", "requirements-tools.txt", "examples",
          "events", "layers", "functions", "scripts", "template.yaml", "samconfig.toml", ".venv")


def bash_lines(markdown: str) -> list[tuple[int, str]]:
    """The logical lines of every ``bash`` block: (README line number, text), continuations joined."""
    lines: list[tuple[int, str]] = []
    in_block, pending, start = False, "", 0
    for number, raw in enumerate(markdown.splitlines(), 1):
        stripped = raw.strip()
        if not in_block:
            in_block = stripped == "```bash"
            continue
        if stripped.startswith("```"):
            assert not pending, f"README line {start}: a continued command runs into the end of its block"
            in_block = False
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        line, pending = (pending + stripped).strip(), ""
        if line:
            lines.append((start, line))
    return lines


def test_bash_lines_joins_continuations_and_ignores_other_blocks() -> None:
    text = "```bash\na \\\n  b  # c\n\n```\n```text\nnot shell\n```\n  ```bash\n  d\n  ```\n"
    assert bash_lines(text) == [(2, "a b  # c"), (10, "d")]


def test_every_untagged_readme_line_is_one_that_runs_here() -> None:
    lines = bash_lines(README.read_text(encoding="utf-8"))
    untagged_aws = [(n, line) for n, line in lines if not TAG.search(line) and NEEDS_TAG.search(line)]
    assert not untagged_aws, f"README lines that need AWS, a server or minutes but carry no [needs …] tag: {untagged_aws}"
    tagged = [line for _, line in lines if TAG.search(line)]
    assert any("sam deploy" in line for line in tagged) and any(line.startswith("aws ") for line in tagged)


def _scratch(tmp_path: Path) -> dict[str, str]:
    for name in LINKED:
        if (ROOT / name).exists():
            (tmp_path / name).symlink_to(ROOT / name)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV),
               PYTHONPATH=str(ROOT / "layers" / "virality"),
               # The Makefile rebuilds .venv when another Python is selected: select the one it has.
               PYTHON=str(VENV / "bin" / "python"),
               AWS_DEFAULT_REGION="us-east-1", MPLBACKEND="Agg")
    return env


def test_the_readme_commands_run_as_written(tmp_path: Path) -> None:
    stamp = VENV / ".installed"
    inputs = [ROOT / "pyproject.toml", ROOT / "requirements-dev.txt"]
    if not stamp.exists() or any(p.stat().st_mtime > stamp.stat().st_mtime for p in inputs):
        # `make …` in the scratch directory would rebuild the linked .venv under the running tests.
        pytest.skip("run `make venv` first: .venv is missing or older than its requirements")
    env = _scratch(tmp_path)
    ran: list[str] = []
    for number, line in bash_lines(README.read_text(encoding="utf-8")):
        if TAG.search(line):
            continue
        result = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=tmp_path, env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (
            f"README line {number}: {line}\nexit {result.returncode}\n"
            f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-2000:]}")
        ran.append(line)
    # The path a newcomer takes must be among what ran, or this test proves nothing.
    for command in ("virality sample-data", "virality train", "virality predict", "virality import",
                    "virality audit", "make cli ARGS=", "make invoke", "source .venv/bin/activate"):
        assert any(line.startswith(command) or f"| {command}" in line for line in ran), command
    # What the commands say they write is there and is what it claims to be.
    from virality.artifact import load_artifact
    from virality.data.readers.csv_records import read_csv

    assert read_csv((tmp_path / "data.csv").read_bytes()).views.size == 7358
    assert read_csv((tmp_path / "videos.csv").read_bytes()).views.size > 0
    assert load_artifact((tmp_path / "demo-weights.json").read_bytes()).data.rows
    # The last `train … --out ml-weights.json --force` in the README reads a Research API export.
    assert load_artifact((tmp_path / "ml-weights.json").read_bytes()).data.format.startswith("research-api")
    assert json.loads((tmp_path / "audit-report.json").read_text())


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but ``-``/``_`` dropped, spaces to ``-``."""
    anchors, fence = set(), False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (m := re.match(r"#{1,6} (.+)", line)):
            anchors.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return anchors


def test_links_between_the_readme_and_docs_resolve() -> None:
    # The README's internals moved to docs/ (issue 13): every relative link, and its #anchor, must land.
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            missing_anchor = bool(anchor) and dest.suffix == ".md" and dest.exists() and \
                anchor not in _anchors(dest.read_text(encoding="utf-8"))
            if not dest.exists() or missing_anchor:
                broken.append((page.name, target))
    assert not broken, broken
