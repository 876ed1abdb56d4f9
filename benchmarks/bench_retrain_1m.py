"""End-to-end retrain of 1,000,000 rows, the way the retrain Lambda does it.

The parent makes the synthetic CSV (``virality_dev.synthetic.sample_csv``) and
writes it to a temporary file; a fresh child process then reads the bytes
(as the Lambda holds the S3 object body) and runs ``train_file``'s two steps
separately timed:

1. ``load_training_data(data, "1m.csv")`` — detect, parse, validate, quintile
   tiers, stratified split, caps, features;
2. ``train_model(ts)`` — fit (Newton, timed by the library itself), evaluate
   on the test split, build the artifact.

The child's peak RSS (``VmHWM``) is compared with the Lambda limits
(900 s timeout, 3008 MB memory).

Usage::

    PYTHONPATH=layers/virality python benchmarks/bench_retrain_1m.py          # 1,000,000 rows
    PYTHONPATH=layers/virality python benchmarks/bench_retrain_1m.py --quick  # 100,000 rows
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MB,
    current_rss_bytes,
    docs_target,
    emit,
    environment,
    markdown_table,
    parser,
    peak_rss_bytes,
    run_child,
    verdict,
    write_section,
)

LAMBDA_TIMEOUT_S = 900.0
LAMBDA_MEMORY_MB = 3008.0
SEED = 42
SOURCE = "1m.csv"


def child_main(csv_path: str) -> None:
    from virality.data.datasets import load_training_data
    from virality.services.training import train_model

    rss_base = current_rss_bytes()
    data = Path(csv_path).read_bytes()
    rss_data = current_rss_bytes()
    t0 = time.perf_counter()
    ts = load_training_data(data, SOURCE)
    t1 = time.perf_counter()
    peak_load = peak_rss_bytes()
    outcome = train_model(ts)
    t2 = time.perf_counter()
    a = outcome.artifact
    emit({"load_s": t1 - t0, "train_model_s": t2 - t1, "fit_s": a.training.durationSeconds,
          "rows_train": a.data.rows.train, "rows_test": a.data.rows.test, "iterations": a.training.iterations,
          "objective": a.training.finalObjective, "converged": a.training.converged,
          "test_accuracy": a.metrics.test.accuracy, "macro_f1": a.metrics.test.macroF1,
          "rss_base": rss_base, "rss_data": rss_data, "peak_after_load": peak_load})


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1])
        return 0
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    rows = 100_000 if args.quick else 1_000_000

    from virality_dev.synthetic import sample_csv

    print(f"[bench_retrain_1m] generating {rows:,}-row CSV ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    data = sample_csv(rows, SEED)
    gen_s = time.perf_counter() - t0
    size = len(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / SOURCE
        path.write_bytes(data)
        del data
        print("[bench_retrain_1m] training in a child process ...", file=sys.stderr, flush=True)
        run = run_child([__file__, "--child", str(path)], timeout=2 * LAMBDA_TIMEOUT_S)
    r = run.result
    total = r["load_s"] + r["train_model_s"]
    other = r["train_model_s"] - r["fit_s"]
    peak_mb = run.peak_rss / MB
    table = markdown_table(
        ["step", "wall time", "share", "peak RSS after step (MB)"],
        [["parse + validate + tiers + split + features (`load_training_data`)", f"{r['load_s']:.2f} s",
          f"{r['load_s'] / total:.0%}", f"{r['peak_after_load'] / MB:.0f}"],
         ["fit (Newton)", f"{r['fit_s']:.2f} s", f"{r['fit_s'] / total:.0%}", ""],
         ["evaluate + artifact", f"{other:.2f} s", f"{other / total:.0%}", ""],
         ["**`train_file` total**", f"**{total:.2f} s**", "100%", f"**{peak_mb:.0f}**"]])
    limits = markdown_table(
        ["Lambda limit", "limit", "measured", "measured / limit", "result"],
        [["timeout", f"{LAMBDA_TIMEOUT_S:.0f} s", f"{total:.1f} s", f"{total / LAMBDA_TIMEOUT_S:.3f}",
          verdict(total <= LAMBDA_TIMEOUT_S)],
         ["memory", f"{LAMBDA_MEMORY_MB:.0f} MB", f"{peak_mb:.0f} MB", f"{peak_mb / LAMBDA_MEMORY_MB:.3f}",
          verdict(peak_mb <= LAMBDA_MEMORY_MB)]])
    text = "\n".join([
        f"## Retrain of {rows:,} rows (issue #4)", "",
        f"`python benchmarks/bench_retrain_1m.py{' --quick' if args.quick else ''}` — {environment()}.", "",
        f"Input: synthetic CSV of {rows:,} rows (`sample_csv({rows}, {SEED})`), {size / MB:.1f} MB "
        f"({size / rows:.0f} bytes/row; generated in {gen_s:.1f} s, not counted). Trained as `train_file` does, "
        f"in a fresh process holding the file's bytes: {r['rows_train']:,} train / {r['rows_test']:,} test rows, "
        f"{r['iterations']} Newton iterations ({'converged' if r['converged'] else 'NOT converged'}), "
        f"objective {r['objective']:.8f}, test accuracy {r['test_accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}.",
        "", table, "",
        f"Process RSS: {r['rss_base'] / MB:.0f} MB after imports, {r['rss_data'] / MB:.0f} MB holding the file, "
        f"peak {peak_mb:.0f} MB (VmHWM); child wall time including interpreter start-up {run.wall:.1f} s.", "",
        limits, "",
        "A 3008 MB Lambda gets about 1.7 vCPUs (CPU is allotted in proportion to memory); this machine has "
        "2 shared cores, so the Lambda time should be of the same order.",
    ]) + "\n"
    print(text)
    target = docs_target(args)
    if target is not None:
        print(f"[bench_retrain_1m] wrote section 'retrain' of {write_section('retrain', text, target)}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
