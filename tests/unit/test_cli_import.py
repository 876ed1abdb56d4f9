"""CLI: ``virality import``, ``train --preset/--mapping/--force``, help texts, ``--local-s3``, warnings."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from virality.artifact import load_artifact
from virality.data.datasets import load_training_data
from virality.data.readers.csv_records import read_csv
from virality_dev.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None,
        monkeypatch: pytest.MonkeyPatch | None = None) -> tuple[int, str, str]:
    if stdin is not None and monkeypatch is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize(("example", "options"), [
    ("scraper-export.json", ["--preset", "scraper"]),
    ("research-api-videos.json", ["--preset", "research-api", "--join", str(EXAMPLES / "research-api-users.jsonl")]),
    ("custom-export.csv", ["--mapping", str(EXAMPLES / "custom-mapping.json")]),
])
def test_import_each_shipped_example_to_the_canonical_csv(example: str, options: list[str], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "videos.csv"
    code, _, err = run(capsys, "import", str(EXAMPLES / example), *options, "--out", str(out))
    assert code == 0, err
    assert "imported 60 videos" in err and "followers known for 52" in err
    raw = read_csv(out.read_bytes(), "videos.csv")
    assert len(raw) == 60
    # The canonical CSV trains like any other raw file.
    ts = load_training_data(out.read_bytes(), "videos.csv")
    assert sum(ts.train.class_counts()) + sum(ts.test.class_counts()) == 60


def test_all_example_shapes_describe_the_same_videos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = []
    for example, options in (("scraper-export.json", ["--preset", "scraper"]),
                             ("custom-export.csv", ["--mapping", str(EXAMPLES / "custom-mapping.json")])):
        out = tmp_path / f"{example}.csv"
        assert run(capsys, "import", str(EXAMPLES / example), *options, "--out", str(out))[0] == 0
        outs.append(read_csv(out.read_bytes()))
    scraper, custom = outs
    # The spreadsheet rounds counts the way the site does (541.2K) and durations to whole seconds.
    assert (abs(custom.views - scraper.views) <= 0.005 * scraper.views).all()       # 16.4K for 16,387
    assert (abs(custom.durationSeconds - scraper.durationSeconds) <= 0.5).all()
    assert (custom.hashtagCount == scraper.hashtagCount).all()
    assert (custom.hasTrendingSound == scraper.hasTrendingSound).all()
    assert (custom.captionLength == scraper.captionLength).all()
    assert (custom.hour == scraper.hour).all() and (custom.weekday == scraper.weekday).all()


def test_import_with_malformed_cells_writes_nothing_and_names_each_cell(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    items = json.loads((EXAMPLES / "scraper-export.json").read_text())
    items[3]["playCount"] = "12.3X"
    items[7]["videoMeta"]["duration"] = "1:99"
    src = tmp_path / "export.json"
    src.write_text(json.dumps(items))
    out = tmp_path / "videos.csv"
    code, _, err = run(capsys, "import", str(src), "--preset", "scraper", "--out", str(out))
    assert code == 1 and "Traceback" not in err
    assert "row 3, column 'playCount'" in err and "'12.3X'" in err
    assert "row 7, column 'videoMeta.duration'" in err and "'1:99'" in err
    assert not out.exists() and list(tmp_path.iterdir()) == [src]


def test_import_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "videos.csv"
    out.write_text("keep me")
    args = ("import", str(EXAMPLES / "scraper-export.json"), "--preset", "scraper", "--out", str(out))
    code, _, err = run(capsys, *args)
    assert code == 1 and "exists; pass --force" in err and out.read_text() == "keep me"
    assert run(capsys, *args, "--force")[0] == 0 and out.read_text().startswith("videoId,views")


def test_print_mapping_is_a_mapping_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "import", "--preset", "scraper", "--print-mapping")
    assert code == 0 and json.loads(out)["name"] == "scraper"
    mapping = tmp_path / "mine.json"
    mapping.write_text(out)
    code, _, err = run(capsys, "import", str(EXAMPLES / "scraper-export.json"), "--mapping", str(mapping),
                       "--out", str(tmp_path / "v.csv"))
    assert code == 0, err


@pytest.mark.parametrize(("argv", "message"), [
    (["import", "x.json", "--out", "v.csv"], "give --preset NAME or --mapping FILE"),
    (["import", "x.json", "--preset", "scraper", "--mapping", "m.json", "--out", "v.csv"], "not both"),
    (["import", "--preset", "scraper"], "give SRC and --out"),
    (["import", str(EXAMPLES / "scraper-export.json"), "--preset", "scraper", "--join", "u.jsonl", "--out", "v.csv"],
     "has no 'join' rule"),
    (["train", "x.csv", "--join", "u.jsonl", "--out", "v.csv"], "--join needs --preset or --mapping"),
    (["train", "x.json", "--preset", "scraper", "--format", "csv", "--out", "v.csv"], "shape (CSV, JSON Lines"),
])
def test_import_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str],
                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 1 and message in err and not (tmp_path / "v.csv").exists()


# --------------------------------------------------------------------------- train


def test_train_with_a_preset_and_a_join(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    code, report, err = run(capsys, "train", str(EXAMPLES / "research-api-videos.json"), "--preset", "research-api",
                            "--join", str(EXAMPLES / "research-api-users.jsonl"), "--out", str(out))
    assert code == 0, err
    artifact = load_artifact(out.read_bytes())
    assert artifact.data.format == "research-api:json" and "(research-api:json," in report
    assert artifact.data.rows.train + artifact.data.rows.test == 60


def test_train_with_a_mapping_equals_train_on_the_imported_csv(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    mapping = str(EXAMPLES / "custom-mapping.json")
    src = str(EXAMPLES / "custom-export.csv")
    assert run(capsys, "train", src, "--mapping", mapping, "--out", str(tmp_path / "a.json"))[0] == 0
    assert run(capsys, "import", src, "--mapping", mapping, "--out", str(tmp_path / "v.csv"))[0] == 0
    assert run(capsys, "train", str(tmp_path / "v.csv"), "--out", str(tmp_path / "b.json"))[0] == 0
    a, b = (load_artifact((tmp_path / n).read_bytes()) for n in ("a.json", "b.json"))
    assert a.weights == b.weights and a.preprocessing == b.preprocessing


def test_train_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ml-weights.json"
    out.write_text("previous model")
    args = ("train", str(EXAMPLES / "scraper-export.json"), "--preset", "scraper", "--out", str(out))
    code, _, err = run(capsys, *args)
    assert code == 1 and f"{out} exists; pass --force to overwrite it" in err
    assert out.read_text() == "previous model"
    assert run(capsys, *args, "--force")[0] == 0 and load_artifact(out.read_bytes()).data.format == "scraper:json"


def test_tier_thresholds_that_leave_a_tier_empty_warn_with_per_tier_counts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "videos.csv"
    assert run(capsys, "sample-data", "--rows", "800", "--seed", "4", "--out", str(data))[0] == 0
    views = read_csv(data.read_bytes()).views
    code, _, err = run(capsys, "train", str(data), "--tier-thresholds", "100", "200", "1e12", "2e12",
                       "--out", str(tmp_path / "m.json"))
    assert code == 0
    counts = [int((views < 100).sum()), int(((views >= 100) & (views < 200)).sum()), int((views >= 200).sum())]
    assert "tier(s) 4, 5 empty" in err
    assert f"tier 1: {counts[0]}, tier 2: {counts[1]}, tier 3: {counts[2]}, tier 4: 0, tier 5: 0" in err
    # Thresholds that fill every tier stay quiet.
    q = sorted(views.tolist())
    cuts = [str(q[len(q) * k // 5]) for k in (1, 2, 3, 4)]
    code, _, err = run(capsys, "train", str(data), "--tier-thresholds", *cuts, "--out", str(tmp_path / "n.json"))
    assert code == 0 and "warning" not in err


def test_predict_says_how_many_problems_were_not_shown(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"features": {"shareRate": "x", "likeRate": "y"}})      # 2 bad + 13 missing
    code, _, err = run(capsys, "predict", stdin=body, monkeypatch=monkeypatch)
    assert code == 1 and "(and 10 more problem(s) not shown)" in err


# --------------------------------------------------------------------------- help


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_subcommand_has_a_description_and_an_example() -> None:
    for name, sub in _subcommands(build_parser()).items():
        assert sub.description, name
        assert sub.epilog and sub.epilog.startswith("example:") and f"virality {name}" in sub.epilog, name


def test_every_option_has_a_help_text_that_shows_its_default() -> None:
    for name, sub in _subcommands(build_parser()).items():
        formatter = sub._get_formatter()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"virality {name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, where
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                text = formatter._expand_help(action)
                assert "default" in text and str(action.default) in text, (where, text)


def test_help_runs_for_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    for name in _subcommands(build_parser()):
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        assert "example:" in capsys.readouterr().out


# --------------------------------------------------------------------------- versions / rollback


def test_versions_without_bucket_or_local_s3_says_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "versions")
    assert code == 1 and "give --bucket" in err and "--local-s3 URL" in err


def test_the_shipped_examples_are_what_the_script_writes(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_import_examples", ROOT / "scripts" / "make_import_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path)])
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in EXAMPLES.iterdir() if p.name in written)
    for name in written:
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


def test_the_readme_import_commands_run_as_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import shlex

    readme = (ROOT / "docs" / "importing.md").read_text()      # moved out of README.md (issue 13)
    section = readme[readme.index("# Importing real TikTok data"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    (tmp_path / "examples").symlink_to(EXAMPLES)
    monkeypatch.chdir(tmp_path)
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert len(commands) == 5
    for argv in commands:
        # In process (fast): `virality ARGS [> FILE]`, the only shapes this block uses.
        assert argv[0] == "virality"
        redirect = argv.index(">") if ">" in argv else None
        args = argv[1:redirect]
        code, out, err = run(capsys, *args)
        assert code == 0, (argv, err)
        if redirect is not None:
            Path(argv[redirect + 1]).write_text(out)
    assert read_csv((tmp_path / "videos.csv").read_bytes()).views.size == 60
    assert load_artifact((tmp_path / "ml-weights.json").read_bytes()).data.format == "scraper:json"
    assert json.loads((tmp_path / "my-mapping.json").read_text())["name"] == "scraper"
