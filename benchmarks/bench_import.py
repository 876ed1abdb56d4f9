"""Importing exports vs reading the canonical raw records: rows per second, as a ratio.

The same synthetic videos are written as an Apify-style scraper export (JSON
Lines, and the flattened CSV with ``authorMeta/fans``, ``hashtags/0/name``...)
and as the project's canonical JSON Lines / CSV. The importer converts row by
row (paths, abbreviated counts, durations) and then validates through
``RawColumnsBuilder``; the canonical readers are the peers, timed in the same
run. Prints only (no docs section).

Usage::

    PYTHONPATH=layers/virality python benchmarks/bench_import.py            # 20,000 rows, 3 repeats
    PYTHONPATH=layers/virality python benchmarks/bench_import.py --rows 200000
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import parser  # noqa: E402

from tests import export_samples as ex  # noqa: E402
from virality.data.importers import import_export, preset  # noqa: E402
from virality.data.readers.csv_records import read_csv  # noqa: E402
from virality.data.readers.json_lines import read_jsonl  # noqa: E402
from virality_dev.synthetic import sample_csv, sample_records  # noqa: E402


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rows", type=int, default=20_000, help="videos per file (default: 20000)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per reader (default: 3)")
    args = p.parse_args()
    rows, repeats = (2_000, 1) if args.quick else (args.rows, args.repeats)
    records = sample_records(rows, 1)
    scraper = preset("scraper")
    export_jsonl = "".join(json.dumps(i) + "\n" for i in ex.scraper_items(records)).encode()
    canonical_jsonl = "".join(json.dumps(r) + "\n" for r in records).encode()
    export_csv, canonical_csv = ex.scraper_csv(records), sample_csv(rows, 1)
    cases = {
        "JSON Lines": (lambda: import_export(export_jsonl, "export.jsonl", scraper),
                       lambda: read_jsonl(canonical_jsonl, "v.jsonl")),
        "CSV": (lambda: import_export(export_csv, "export.csv", scraper),
                lambda: read_csv(canonical_csv, "v.csv")),
    }
    print(f"{rows:,} videos, median of {repeats}")
    print(f"{'shape':<11} {'import (rows/s)':>16} {'canonical (rows/s)':>19} {'import / canonical time':>24}")
    for shape, (imported, canonical) in cases.items():
        a, b = _median_seconds(imported, repeats), _median_seconds(canonical, repeats)
        print(f"{shape:<11} {rows / a:>16,.0f} {rows / b:>19,.0f} {a / b:>23.1f}x")


if __name__ == "__main__":
    main()
