"""Write the import examples under ``examples/``: real export SHAPES, SYNTHETIC values.

The files show what ``virality import`` / ``virality train --preset`` read: a TikTok
Research API query response plus a user-info list to join followers from, an
Apify-style scraper export, and a spreadsheet export with its own column mapping.
The videos come from :mod:`virality_dev.synthetic` (seeded), so the files are
reproducible: ``python scripts/make_import_examples.py`` (a test checks that it reproduces them).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import export_samples as ex  # noqa: E402
from virality_dev.synthetic import sample_records  # noqa: E402

ROWS, SEED = 60, 2026

CUSTOM_MAPPING = {
    "name": "custom-export",
    "description": "a spreadsheet export: site-style counts, mm:ss lengths, comma-separated hashtags, "
                   "a sound-usage count",
    "fields": {
        "videoId": "Video URL",
        "views": "Views", "likes": "Likes", "comments": "Comments", "shares": "Shares", "saves": "Saves",
        "followers": "Creator followers",
        "durationSeconds": {"from": "Length", "convert": "duration"},
        "hashtagCount": {"from": "Hashtags", "convert": "list-length"},
        "hasTrendingSound": {"from": "Sound uses", "convert": "threshold", "threshold": "100K"},
        "captionLength": {"from": "Caption", "convert": "length", "default": ""},
        "postedAt": {"from": "Posted", "convert": "timestamp", "format": "%Y-%m-%d %H:%M:%S"},
    },
}


def _abbreviated(n: int) -> str:
    """How the site shows a count."""
    if n >= 1_000_000:
        return f"{n / 1e6:.1f}M"
    if n >= 10_000:
        return f"{n / 1e3:.1f}K"
    return f"{n:,}"


def _mmss(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60:02d}:{s % 60:02d}"


def custom_export_csv(records: list[dict]) -> bytes:
    rnd = random.Random(SEED)
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["Video URL", "Posted", "Views", "Likes", "Comments", "Shares", "Saves", "Creator followers",
                     "Length", "Hashtags", "Sound uses", "Caption"])
    for i, r in enumerate(records):
        uses = rnd.randint(200_000, 3_000_000) if r["hasTrendingSound"] else rnd.randint(1, 50_000)
        writer.writerow([f"https://www.tiktok.com/@creator{i}/video/{7_300_000_000_000_000_000 + i}",
                         r["postedAt"].replace("T", " ").replace("Z", ""),
                         *(_abbreviated(r[k]) for k in ("views", "likes", "comments", "shares", "saves")),
                         "" if r["followers"] is None else _abbreviated(r["followers"]),
                         _mmss(r["durationSeconds"]), ",".join(f"t{k}" for k in range(r["hashtagCount"])),
                         _abbreviated(uses), ex._caption(r["captionLength"], r["hashtagCount"])])
    return b"\xef\xbb\xbf" + buf.getvalue().encode()       # a BOM, as spreadsheet apps write


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "examples", help="directory (default: examples/)")
    out = p.parse_args(argv).out
    out.mkdir(exist_ok=True)
    records = sample_records(ROWS, SEED)
    research = ex.research_api_records(records)
    (out / "research-api-videos.json").write_text(
        json.dumps(json.loads(ex.research_api_response(research)), indent=2) + "\n")
    (out / "research-api-users.jsonl").write_bytes(ex.research_api_users(research))
    (out / "scraper-export.json").write_text(json.dumps(ex.scraper_items(records), indent=2) + "\n")
    (out / "custom-export.csv").write_bytes(custom_export_csv(records))
    (out / "custom-mapping.json").write_text(json.dumps(CUSTOM_MAPPING, indent=2) + "\n")
    print(f"wrote {ROWS} synthetic videos in 4 export shapes to {out}")


if __name__ == "__main__":
    main()
