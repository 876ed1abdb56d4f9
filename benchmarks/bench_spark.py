"""NumPy trainer vs ``--engine spark`` (local, 2 cores) on the same CSV: wall time and peak memory.

    python benchmarks/bench_spark.py                       # 50,000 rows (well under a minute of training)
    python benchmarks/bench_spark.py --rows 1000000 5000000
    python benchmarks/bench_spark.py --defaults            # both engines with the default l2 auto + temperature

Each engine trains in a fresh child process exactly as ``virality train``
does (NumPy: ``train_file`` on the file's bytes; Spark: ``train_spark`` on
``local[2]``). Peak memory is the peak of the *summed* RSS of the child and
all its descendants (the JVM and Spark's Python workers), sampled from
/proc every 50 ms. Results are printed as a table, with the ratio Spark /
NumPy of the same run (the machine is shared: only ratios carry over).

By default both engines fit one fixed lambda (``l2=0.001, calibration=none``,
no bootstrap): the cost of the exact fit itself. ``--defaults`` runs both with
the default configuration (lambda search and T; on Spark on the driver sample).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "layers" / "virality"

CHILD = {
    "numpy": """
import json, sys, time
from pathlib import Path
from virality.services.training import TrainingConfig, train_file
t = time.perf_counter()
data = Path(sys.argv[1]).read_bytes()
out = train_file(data, sys.argv[1], TrainingConfig(**json.loads(sys.argv[2])))
a = out.artifact
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "iterations": a.training.iterations,
      "objective": a.training.finalObjective, "train": a.data.rows.train, "passes": None}))
""",
    "spark": """
import json, sys, time
from virality_spark.train import spark_session, train_spark
from virality.services.training import TrainingConfig
t0 = time.perf_counter()
spark = spark_session("local[2]", "bench")
spark.sparkContext.setLogLevel("ERROR")
t = time.perf_counter()
run = train_spark(spark, sys.argv[1], TrainingConfig(**json.loads(sys.argv[2])))
a = run.outcome.artifact
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t, "startup": t - t0,
      "iterations": a.training.iterations, "objective": a.training.finalObjective, "train": a.data.rows.train,
      "passes": a.training.cluster.passes}))
spark.stop()
""",
}


def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of ``pid`` and every descendant."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


#: The fixed-lambda configuration of the default run (the exact fit alone).
FIXED = {"l2": 1e-3, "calibration": "none", "bootstrap": 0}


def run_child(engine: str, path: Path, config: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(LIBRARY), "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen([sys.executable, "-c", CHILD[engine], str(path), json.dumps(config or {})], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    peak = 0
    started = time.perf_counter()
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        time.sleep(0.05)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"{engine} child failed (exit {proc.returncode})")
    return {**json.loads(line[7:]), "wall": wall, "peak_mb": peak / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--rows", type=int, nargs="+", default=[50_000])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--defaults", action="store_true",
                   help="train with the default config (l2 auto, temperature; no bootstrap) instead of l2 0.001")
    args = p.parse_args()
    config = {"bootstrap": 0} if args.defaults else FIXED
    sys.path.insert(0, str(LIBRARY))
    from virality_dev.synthetic import sample_csv

    print("| rows | engine | train time (s) | + Spark start (s) | passes | peak RSS, process tree (MiB) "
          "| objective | time spark/numpy | memory spark/numpy |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for rows in args.rows:
            path = Path(tmp) / f"videos-{rows}.csv"
            path.write_bytes(sample_csv(rows, args.seed))
            res = {engine: run_child(engine, path, config) for engine in ("numpy", "spark")}
            for engine, r in res.items():
                ratio_t = r["seconds"] / res["numpy"]["seconds"]
                ratio_m = r["peak_mb"] / res["numpy"]["peak_mb"]
                print(f"| {rows:,} | {engine} | {r['seconds']:.1f} | {r.get('startup', 0):.1f} | "
                      f"{r['passes'] or '-'} | {r['peak_mb']:.0f} | {r['objective']:.10f} | {ratio_t:.2f} | "
                      f"{ratio_m:.2f} |", flush=True)
            gap = abs(res["spark"]["objective"] - res["numpy"]["objective"]) / res["numpy"]["objective"]
            print(f"<!-- {rows} rows: objective gap {gap:.1e} (different splits: hash vs stratified) -->")
            path.unlink()


if __name__ == "__main__":
    main()
