"""The README's generated blocks: their markers, and the writer of the demo block."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("update_readme_demo", ROOT / "scripts" / "update_readme_demo.py")
update = importlib.util.module_from_spec(spec)
spec.loader.exec_module(update)


@pytest.mark.parametrize("name", ["demo-output", "bench-headline"])
def test_the_readme_keeps_each_generated_block_once(name: str) -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    assert text.count(begin) == text.count(end) == 1
    assert text.index(begin) < text.index(end)


def test_replace_section_changes_only_the_block() -> None:
    text = "a\n<!-- BEGIN x -->\nold\n<!-- END x -->\nb <!-- BEGIN y -->keep<!-- END y -->\n"
    assert update.replace_section(text, "x", "new\n") == \
        "a\n<!-- BEGIN x -->\nnew\n<!-- END x -->\nb <!-- BEGIN y -->keep<!-- END y -->\n"


@pytest.mark.parametrize("text", ["no markers", "<!-- END x --> <!-- BEGIN x -->",
                                  "<!-- BEGIN x --> <!-- END x --> <!-- BEGIN x --> <!-- END x -->"])
def test_replace_section_refuses_missing_misordered_or_repeated_markers(text: str) -> None:
    with pytest.raises(ValueError, match="BEGIN x"):
        update.replace_section(text, "x", "new")


def test_a_failed_demo_leaves_the_readme_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("<!-- BEGIN demo-output -->\nold\n<!-- END demo-output -->\n")

    class Failed:
        returncode, stdout = 1, "[1/7] starting\n"

    monkeypatch.setattr(update.subprocess, "run", lambda *a, **k: Failed())
    assert update.main(["--readme", str(readme)]) == 1
    assert "old" in readme.read_text()


def test_the_block_is_the_intro_and_the_output_as_text() -> None:
    block = update.demo_block("[1/7] a\ndone in 1.0 s\n\n")
    assert block == f"{update.INTRO}\n\n```text\n[1/7] a\ndone in 1.0 s\n```"
