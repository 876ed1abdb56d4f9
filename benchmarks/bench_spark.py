"""NumPy trainer vs ``--engine spark`` (local, 2 cores) on the same CSV: wall time and peak memory.

    python benchmarks/bench_spark.py --quick               # 20,000 rows, prints only
    python benchmarks/bench_spark.py                       # 50,000 rows
    python benchmarks/bench_spark.py --rows 1000000 5000000 --timeout 3600
    python benchmarks/bench_spark.py --defaults            # both engines with the default l2 auto + temperature

Full (non ``--quick``) runs rewrite the ``spark-bench`` section of
``docs/spark.md`` (``--no-docs``: print only; ``--docs PATH``: another file).
An engine that fails or passes ``--timeout`` is reported as such, with its
peak until then, and the other sizes still run.

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

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import DEV, LIBRARY, ROOT, environment, parser, write_section

#: Where the table goes (its ``spark-bench`` section), unless --quick / --no-docs; --docs PATH elsewhere.
DOCS = ROOT / "docs" / "spark.md"

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


def run_child(engine: str, path: Path, config: dict | None = None, timeout: float | None = None) -> dict:
    """One engine in a fresh child; ``{"error": ...}`` instead of figures when it fails or times out."""
    with tempfile.TemporaryFile(mode="w+") as errors:      # the child's stderr: the reason when it fails
        return _run_child(engine, path, config, timeout, errors)


def _run_child(engine: str, path: Path, config: dict | None, timeout: float | None, errors: Any) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(LIBRARY), str(DEV))), "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.Popen([sys.executable, "-c", CHILD[engine], str(path), json.dumps(config or {})], env=env,
                            stdout=subprocess.PIPE, stderr=errors, text=True, start_new_session=True)
    peak = 0
    started = time.perf_counter()
    timed_out = False
    while proc.poll() is None:
        peak = max(peak, _tree_rss(proc.pid))
        if timeout is not None and time.perf_counter() - started > timeout:
            os.killpg(proc.pid, signal.SIGKILL)         # the child's own session: the JVM and workers too
            proc.wait()
            timed_out = True
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    out = proc.stdout.read() if proc.stdout else ""
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    errors.seek(0)
    stderr = errors.read()
    if timed_out:
        return {"error": f"stopped after {wall:.0f} s (--timeout)", "wall": wall, "peak_mb": peak / 2**20}
    if proc.returncode != 0 or line is None:
        print(f"{engine} child failed (exit {proc.returncode}); its stderr:\n{stderr[-20000:]}", file=sys.stderr)
        # the first error message line (not a stack frame): the root cause, e.g. an OutOfMemoryError
        reason = next((ln.strip() for ln in stderr.splitlines()
                       if ("Error" in ln or "Exception" in ln) and not ln.lstrip().startswith("at ")), "")[:160]
        return {"error": f"failed after {wall:.0f} s (exit {proc.returncode}{': ' + reason if reason else ''})",
                "wall": wall, "peak_mb": peak / 2**20}
    return {**json.loads(line[7:]), "wall": wall, "peak_mb": peak / 2**20}


HEADER = ("| rows | engine | train time (s) | + Spark start (s) | passes | peak RSS, process tree (MiB) "
          "| objective | time spark/numpy | memory spark/numpy |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|")


def table_rows(rows: int, res: dict[str, dict]) -> list[str]:
    """Markdown rows of one size: both engines, Spark's ratios to NumPy of the same run."""
    out = []
    base = res["numpy"]
    for engine, r in res.items():
        if "error" in r:
            out.append(f"| {rows:,} | {engine} | {r['error']} | | | {r['peak_mb']:.0f} (until then) | | | |")
            continue
        ok = "error" not in base
        ratio_t = f"{r['seconds'] / base['seconds']:.2f}" if ok else "–"
        ratio_m = f"{r['peak_mb'] / base['peak_mb']:.2f}" if ok else "–"
        start = f"{r['startup']:.1f}" if "startup" in r else "–"
        out.append(f"| {rows:,} | {engine} | {r['seconds']:.1f} | {start} | {r['passes'] or '–'} | "
                   f"{r['peak_mb']:.0f} | {r['objective']:.10f} | {ratio_t} | {ratio_m} |")
    return out


def main() -> None:
    p = parser(__doc__.split("\n", 1)[0])
    p.add_argument("--rows", type=int, nargs="+", default=None, help="default 50000 (--quick: 20000)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--defaults", action="store_true",
                   help="train with the default config (l2 auto, temperature; no bootstrap) instead of l2 0.001")
    p.add_argument("--timeout", type=float, default=None, help="stop an engine's child after this many seconds")
    args = p.parse_args()
    sizes = args.rows or ([20_000] if args.quick else [50_000])
    config = {"bootstrap": 0} if args.defaults else FIXED
    from virality_dev.synthetic import sample_csv

    load_before = os.getloadavg()
    lines = [HEADER]
    notes = []
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rows in sizes:
            path = Path(tmp) / f"videos-{rows}.csv"
            path.write_bytes(sample_csv(rows, args.seed))
            res = {engine: run_child(engine, path, config, args.timeout) for engine in ("numpy", "spark")}
            for line in table_rows(rows, res):
                print(line, flush=True)
                lines.append(line)
            if not any("error" in r for r in res.values()):
                gap = abs(res["spark"]["objective"] - res["numpy"]["objective"]) / res["numpy"]["objective"]
                notes.append(f"{rows:,} rows: objective gap {gap:.1e} (different splits: hash vs stratified); "
                             f"Spark {res['spark']['passes']} passes, wall incl. start "
                             f"{res['spark']['wall']:.0f} s vs NumPy {res['numpy']['wall']:.0f} s")
                print(f"<!-- {notes[-1]} -->", flush=True)
            path.unlink()
    load_after = os.getloadavg()
    target = None if args.no_docs else args.docs or (None if args.quick else DOCS)
    if target is None:
        return
    argv = " ".join(["python benchmarks/bench_spark.py", *sys.argv[1:]])
    what = ("both engines with the defaults (λ by CV, temperature)" if args.defaults
            else "both engines fit one fixed λ (`l2=0.001, calibration=none`, no bootstrap)")
    where = environment(f"pyspark {version('pyspark')}")
    body = "\n".join([
        f"`{argv}` — {where}; Spark `local[2]`, "
        f"{what}; 1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
        "(a shared machine: only the ratios carry over).",
        "",
        *lines,
        "",
        *[f"- {n}" for n in notes],
    ])
    written = write_section("spark-bench", body, target)
    print(f"wrote the table to {written}")


if __name__ == "__main__":
    main()
