"""Whole-process training vs its peers, as ratios measured in the same run (issue #14).

Three comparisons, every process started fresh (interpreter start-up, imports,
reading the file and writing the artifact all count):

1. ``virality train --l2 0.001 --calibration none --bootstrap 0`` (the peer's
   objective; the defaults add a cross-validated lambda search) on an
   original-format seed JSON vs a process doing
   ``json.load`` + scikit-learn ``LogisticRegression(solver="lbfgs")`` (default
   tol, same objective: ``C = 1 / (l2 * n)``) on one BLAS thread.
2. ``virality train`` on a raw CSV vs the time ``pandas.read_csv`` takes just
   to read the same file (inside its process, imports excluded).
3. Peak memory of (2) per row: peak RSS minus the RSS after imports, over rows.
   The CLI hands the file's bytes over to the reader, which frees them once
   parsed, as the retrain Lambda does with the S3 body; the marginal bytes per
   row give the rows one 10,240 MB Lambda trains.

The seed JSON is made from synthetic raw records through the real pipeline
(``sample_csv`` -> ``load_training_data``), so its features look like real ones.
Runs are interleaved (ours, peer, ours, peer, ...) and medians reported.

Usage::

    python benchmarks/bench_train_e2e.py           # 50,000-row JSON, 250,000-row CSV, 3 rounds (~1 min)
    python benchmarks/bench_train_e2e.py --full    # 200,000-row JSON, 1,000,000-row CSV (the issue's sizes)
    python benchmarks/bench_train_e2e.py --quick   # 20,000 / 50,000 rows, 1 round, prints only
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    current_rss_bytes,
    docs_target,
    emit,
    environment,
    markdown_table,
    parser,
    run_child,
    verdict,
    write_section,
)

L2 = 1e-3
SEED = 42
JSON_GOAL = 0.25        # ours / (json.load + lbfgs), whole processes
CSV_GOAL = 2.5          # ours (whole process) / pandas.read_csv (read only)
BYTES_GOAL = 300        # peak extra bytes per CSV row
LAMBDA_MB = 10_240      # the retrain function's default (and Lambda's maximum) memory
RUNTIME_MB = 256        # runtime, imports and per-block buffers: what does not grow with the file
SEARCH_MB = 640         # the retrain's default lambda search on its <= 1M-row sample (docs/spark.md, "Scaling")
ROWS_GOAL = 40e6        # rows one such Lambda trains


# --------------------------------------------------------------------------- children


def child_ours(path: str, out: str) -> None:
    import virality.services.training  # noqa: F401  (the CLI imports it lazily: part of the baseline, not of the rows)
    from virality_dev.cli import main

    rss_imports = current_rss_bytes()
    t0 = time.perf_counter()
    # The peer's objective: fixed lambda, no calibration or bootstrap (the CLI's defaults add
    # a cross-validated lambda search and test intervals on top of the fit).
    Path(out).unlink(missing_ok=True)       # the CLI refuses to overwrite an artifact
    code = main(["train", path, "--out", out, "--l2", str(L2), "--calibration", "none", "--bootstrap", "0"])
    train_s = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"virality train failed with exit code {code}")
    doc = json.loads(Path(out).read_text())
    emit({"code": code, "train_s": train_s, "rss_imports": rss_imports,
          "objective": doc["training"]["finalObjective"], "rows": doc["data"]["rows"]["train"]})


def child_sklearn(path: str) -> None:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    with open(path, "rb") as f:
        doc = json.load(f)
    X = np.array(doc["trainSet"]["features"], dtype=np.float64)
    y = np.array(doc["trainSet"]["labels"]) - 1
    with threadpool_limits(limits=1):
        clf = LogisticRegression(C=1.0 / (L2 * X.shape[0]), solver="lbfgs", max_iter=10_000).fit(X, y)
    t_done = time.perf_counter()
    from virality.ml.softmax import objective  # after the work: not part of the peer's cost

    emit({"objective": objective(clf.coef_, clf.intercept_, X, y, L2), "n_iter": int(clf.n_iter_[0]),
          "t_done": t_done})


def child_pandas(path: str) -> None:
    import pandas

    t0 = time.perf_counter()
    frame = pandas.read_csv(path)
    emit({"read_s": time.perf_counter() - t0, "rows": len(frame)})


# --------------------------------------------------------------------------- data


def make_files(tmp: Path, json_rows: int, csv_rows: int) -> tuple[Path, Path]:
    from virality.data import datasets
    from virality.ml import features
    from virality_dev import synthetic

    ts = datasets.load_training_data(synthetic.sample_csv(json_rows, SEED + 1), "seed-source.csv", seed=SEED)
    doc = {"featureNames": list(features.FEATURE_NAMES),
           "trainSet": {"features": ts.train.X.tolist(), "labels": ts.train.tiers.tolist()},
           "testSet": {"features": ts.test.X.tolist(), "labels": ts.test.tiers.tolist()}}
    json_path = tmp / f"seed-{json_rows}.json"
    json_path.write_text(json.dumps(doc))           # one line, as the original exporter writes it
    csv_path = tmp / f"raw-{csv_rows}.csv"
    data = synthetic.sample_csv(csv_rows, SEED)
    csv_path.write_bytes(data)
    # the first quarter of the same file: peak(all) - peak(quarter) is the marginal cost of a row
    quarter = data[:data.index(b"\n", len(data) // 4) + 1]
    (tmp / "quarter.csv").write_bytes(quarter)
    return json_path, csv_path


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-ours"]:
        child_ours(argv[1], argv[2])
        return 0
    if argv[:1] == ["--child-sklearn"]:
        child_sklearn(argv[1])
        return 0
    if argv[:1] == ["--child-pandas"]:
        child_pandas(argv[1])
        return 0
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--full", action="store_true", help="the issue's sizes: 200,000-row JSON, 1,000,000-row CSV")
    args = p.parse_args(argv)
    json_rows, csv_rows = (200_000, 1_000_000) if args.full else (20_000, 50_000) if args.quick else (50_000, 250_000)
    rounds = 1 if args.quick else 3
    os.environ.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")   # every child: 1 thread

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(f"[bench_train_e2e] generating {json_rows:,}-row seed JSON and {csv_rows:,}-row CSV ...",
              file=sys.stderr, flush=True)
        json_path, csv_path = make_files(tmp, json_rows, csv_rows)
        out = str(tmp / "ml-weights.json")
        ours_json, peer_json, ours_csv, peer_csv, quarter_csv = [], [], [], [], []
        for r in range(rounds):
            print(f"[bench_train_e2e] round {r + 1}/{rounds}", file=sys.stderr, flush=True)
            ours_json.append(run_child([__file__, "--child-ours", str(json_path), out]))
            peer_json.append(run_child([__file__, "--child-sklearn", str(json_path)]))
            ours_csv.append(run_child([__file__, "--child-ours", str(csv_path), out]))
            peer_csv.append(run_child([__file__, "--child-pandas", str(csv_path)]))
            quarter_csv.append(run_child([__file__, "--child-ours", str(tmp / "quarter.csv"), out]))
        json_size, csv_size = json_path.stat().st_size, csv_path.stat().st_size
        quarter_rows = (tmp / "quarter.csv").read_bytes().count(b"\n") - 1

    def med(values: list[float]) -> float:
        return statistics.median(values)

    t_ours_json = med([c.wall for c in ours_json])
    t_peer_json = med([c.wall for c in peer_json])
    t_ours_csv = med([c.wall for c in ours_csv])
    t_pandas = med([c.result["read_s"] for c in peer_csv])
    bytes_row = med([(c.peak_rss - c.result["rss_imports"]) / csv_rows for c in ours_csv])
    marginal = (med([c.peak_rss for c in ours_csv]) - med([c.peak_rss for c in quarter_csv])) / (csv_rows - quarter_rows)
    ceiling = (LAMBDA_MB - RUNTIME_MB - SEARCH_MB) * 2**20 / marginal
    f_ours, f_sk = ours_json[0].result["objective"], peer_json[0].result["objective"]
    r_json, r_csv = t_ours_json / t_peer_json, t_ours_csv / t_pandas
    table = markdown_table(
        [f"comparison (same run, medians of {rounds})", "ours", "peer", "ours / peer", "goal", "result"],
        [[f"`virality train` {json_rows:,}-row seed JSON ({json_size / 1e6:.0f} MB) vs `json.load` + "
          f"scikit-learn lbfgs, 1 thread (whole processes)",
          f"{t_ours_json:.2f} s", f"{t_peer_json:.2f} s", f"{r_json:.3f}", f"≤ {JSON_GOAL}", verdict(r_json <= JSON_GOAL)],
         [f"`virality train` {csv_rows:,}-row raw CSV ({csv_size / 1e6:.0f} MB, whole process) vs "
          "`pandas.read_csv` reading it",
          f"{t_ours_csv:.2f} s", f"{t_pandas:.2f} s", f"{r_csv:.2f}", f"≤ {CSV_GOAL}", verdict(r_csv <= CSV_GOAL)],
         [f"peak memory training from the CSV, bytes per row: peak RSS − RSS after imports (the file, "
          f"{csv_size / csv_rows:.0f} B/row, is read whole and freed once parsed)", f"{bytes_row:.0f}", "", "", f"≤ {BYTES_GOAL}",
          verdict(bytes_row <= BYTES_GOAL)],
         [f"marginal memory per row: (peak at {csv_rows:,} rows − peak at {quarter_rows:,.0f}) / rows between "
          "(what the single-Lambda ceiling scales with)", f"{marginal:.0f}", "", "", f"≤ {BYTES_GOAL}",
          verdict(marginal <= BYTES_GOAL)],
         [f"rows one {LAMBDA_MB:,} MB retrain Lambda trains: ({LAMBDA_MB:,} − {RUNTIME_MB} runtime − {SEARCH_MB} "
          "λ-search sample) MiB / marginal bytes per row",
          f"{ceiling / 1e6:.1f}M", "", "", f"≥ {ROWS_GOAL / 1e6:.0f}M", verdict(ceiling >= ROWS_GOAL)]])
    text = "\n".join([
        "## Whole-process training vs peers (issue #14)", "",
        f"`python benchmarks/bench_train_e2e.py{' --full' if args.full else ' --quick' if args.quick else ''}` — "
        f"{environment()}. Every number comes from a fresh process; the machine is shared, so only the ratios "
        "of one run mean something.", "",
        table, "",
        f"Same objective: ours {f_ours:.10f}, scikit-learn lbfgs (default tol, {peer_json[0].result['n_iter']} "
        f"iterations) {f_sk:.10f}; (sklearn − ours) / ours = {(f_sk - f_ours) / f_ours:+.1e}. "
        f"`pandas` is a dev-only peer, not in the Lambda layer.",
    ]) + "\n"
    print(text)
    target = docs_target(args)
    if target is not None:
        print(f"[bench_train_e2e] wrote section 'train-e2e' of {write_section('train-e2e', text, target)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
