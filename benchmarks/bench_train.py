"""Trainer vs scikit-learn: time, objective, accuracy and peak memory.

Data (synthetic, see ``virality_dev.synthetic``):

* 7,358 rows through the real pipeline: ``sample_csv`` -> ``load_training_data``
  (parse, validate, quintile tiers, stratified split, caps fitted on the train
  split); the benchmark fits on train + test stacked, i.e. all 7,358 rows.
* 1,000,000 rows straight from ``generate_columns`` -> ``RawVideos`` ->
  ``fit_preprocessing`` / ``extract_features`` and quintile tiers, without a CSV.

Peers: our Newton (``virality.ml.solvers.fit``), our seed-faithful ``gd`` (at the
large size only if its estimated run time fits the budget), and scikit-learn
``LogisticRegression(C=1/(l2*n), solver="lbfgs")`` at its default ``tol=1e-4``
and at ``tol=1e-6`` (tightened further if that is not within 1e-6 of our
optimum). Objectives are all evaluated with ``virality.ml.softmax.objective``.

At the large size every fit runs in its own child process (load X, a small
warm-up fit, the timed fit), which gives both the time and the child's peak
RSS; "extra" memory is that peak minus the RSS right after loading X and y.

Usage::

    PYTHONPATH=layers/virality python benchmarks/bench_train.py          # full, writes docs/benchmarks.md
    PYTHONPATH=layers/virality python benchmarks/bench_train.py --quick  # 7,358 and 100,000 rows, 1 repeat
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import (
    MB,
    ROOT,
    current_rss_bytes,
    docs_target,
    emit,
    environment,
    interleaved_times,
    markdown_table,
    parser,
    run_child,
    verdict,
    write_section,
)

from virality.data import datasets
from virality.data.readers import csv_records
from virality.ml import features, softmax, solvers, tiering
from virality_dev import synthetic

L2 = 1e-3
SEED = 42
SMALL_N = 7358
TIME_BUDGET_SMALL_S = 0.050          # "7,358 rows train in <= 50 ms"
SPEEDUP_TARGET = 3.0                 # ">= 3x faster than scikit-learn's lbfgs" (1M rows)
REL_OBJECTIVE_TARGET = 1e-6          # "reaches scikit-learn's optimum to <= 1e-6 relative objective"
MEMORY_TARGET = 3.0                  # "peak memory on 1M rows <= 3x the float64 feature matrix"
SKLEARN_TOLS = (1e-4, 1e-6)          # default, then tight; 1e-8 is added if 1e-6 is not close enough
IMG = ROOT / "docs" / "img" / "convergence.png"
ONE_THREAD = "newton-1-thread"


# --------------------------------------------------------------------------- data


def raw_from_columns(cols: dict[str, np.ndarray]) -> features.RawVideos:
    """``generate_columns`` output as ``RawVideos`` (what ``read_csv`` would build from its CSV)."""
    posted = np.floor(cols["postedAt"])          # the CSV keeps whole seconds
    days = np.floor(posted / 86400.0)
    return features.RawVideos(
        views=cols["views"].astype(np.float64), likes=cols["likes"].astype(np.float64),
        comments=cols["comments"].astype(np.float64), shares=cols["shares"].astype(np.float64),
        saves=cols["saves"].astype(np.float64), followers=cols["followers"].astype(np.float64),
        durationSeconds=cols["durationSeconds"].astype(np.float64),
        hashtagCount=cols["hashtagCount"].astype(np.float64),
        hasTrendingSound=cols["hasTrendingSound"].astype(np.float64),
        captionLength=cols["captionLength"].astype(np.float64),
        weekday=(days + 3.0) % 7.0,              # 1970-01-01 was a Thursday (Monday = 0)
        hour=np.floor(posted / 3600.0) % 24.0)


def check_columns_path(rows: int = 2000) -> None:
    """The no-CSV shortcut must give the same RawVideos as the CSV reader."""
    fast = raw_from_columns(synthetic.generate_columns(rows, SEED))
    slow = csv_records.read_csv(synthetic.sample_csv(rows, SEED), "check.csv")
    for name in features.RawVideos.__slots__:
        a, b = getattr(fast, name), getattr(slow, name)
        if not np.array_equal(a, b, equal_nan=True):
            raise AssertionError(f"columns path differs from read_csv in {name!r}")


def small_data() -> tuple[np.ndarray, np.ndarray]:
    ts = datasets.load_training_data(synthetic.sample_csv(SMALL_N, SEED), f"synthetic-{SMALL_N}.csv")
    return np.vstack([ts.train.X, ts.test.X]), np.concatenate([ts.train.y, ts.test.y])


def large_data(n: int) -> tuple[np.ndarray, np.ndarray]:
    raw = raw_from_columns(synthetic.generate_columns(n, SEED))
    X = features.extract_features(raw, features.fit_preprocessing(raw))
    y = tiering.assign_tiers(raw.views, tiering.fit_tiering(raw.views)) - 1
    return X, y


# --------------------------------------------------------------------------- peers


def method_label(method: str) -> str:
    if method.startswith("sklearn:"):
        return f"scikit-learn lbfgs, tol={float(method.split(':')[1]):g}"
    return {"newton": "ours: Newton (default)", "gd": "ours: gd (seed-faithful, 200 epochs)",
            ONE_THREAD: "ours: Newton, BLAS limited to 1 thread"}[method]


def fit_method(method: str, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(coef, intercept, iterations)``."""
    if method == ONE_THREAD:                    # diagnostic: OpenBLAS threading on a shared machine
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fit_method("newton", X, y)
    if method in ("newton", "gd"):
        r = solvers.fit(X, y, optimizer=method, l2_reg_strength=L2)
        return r.coef, r.intercept, r.n_iter
    from sklearn.linear_model import LogisticRegression

    tol = float(method.split(":")[1])
    model = LogisticRegression(C=1.0 / (L2 * X.shape[0]), solver="lbfgs", tol=tol, max_iter=100_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    return model.coef_, model.intercept_, int(model.n_iter_[0])


def child_main(method: str, data_dir: str) -> None:
    """Child process: load X and y, warm up, time one fit; the parent reads our peak RSS."""
    if method.startswith("sklearn:"):
        import sklearn.linear_model  # noqa: F401  (imports are not part of the fit's memory)
    rss_base = current_rss_bytes()
    X = np.load(Path(data_dir) / "X.npy")
    y = np.load(Path(data_dir) / "y.npy")
    rss_loaded = current_rss_bytes()
    if method != "gd":
        fit_method(method, X[:4096], y[:4096])       # warm-up: lazy imports, BLAS threads
    start = time.perf_counter()
    coef, intercept, n_iter = fit_method(method, X, y)
    seconds = time.perf_counter() - start
    emit({"seconds": seconds, "coef": coef.tolist(), "intercept": intercept.tolist(), "n_iter": n_iter,
          "rss_base": rss_base, "rss_loaded": rss_loaded})


# --------------------------------------------------------------------------- measuring


@dataclass
class Row:
    method: str
    seconds: float
    runs: int
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    extra_mem: float | None = None    # bytes over RSS-after-load, at peak
    peak_rss: float | None = None
    rss_base: float | None = None


def measure_in_process(X: np.ndarray, y: np.ndarray, methods: list[str], repeats: int) -> list[Row]:
    fns = {m: (lambda m=m: fit_method(m, X, y)) for m in methods}
    out = interleaved_times(fns, repeats=repeats, warmup=1)
    return [Row(m, t.median, len(t.runs), np.asarray(r[0]), np.asarray(r[1]), r[2]) for m, (t, r) in out.items()]


def measure_in_children(data_dir: Path, methods: list[str], repeats: dict[str, int]) -> list[Row]:
    runs: dict[str, list] = {m: [] for m in methods}
    for rep in range(max(repeats.values())):
        for m in methods:
            if rep < repeats[m]:
                # each child fit of the large size takes up to a minute: say what is running
                print(f"[bench_train]   {m} (round {rep + 1}/{repeats[m]}) ...", file=sys.stderr, flush=True)
                runs[m].append(run_child([__file__, "--child", m, str(data_dir)], timeout=3600))
    rows = []
    for m, rs in runs.items():
        last = rs[-1].result
        rows.append(Row(m, float(np.median([r.result["seconds"] for r in rs])), len(rs),
                        np.asarray(last["coef"]), np.asarray(last["intercept"]), last["n_iter"],
                        extra_mem=max(r.peak_rss - r.result["rss_loaded"] for r in rs),
                        peak_rss=max(r.peak_rss for r in rs), rss_base=min(r.result["rss_base"] for r in rs)))
    return rows


def gd_estimate(X: np.ndarray, y: np.ndarray, epochs: int = 200) -> float:
    """Seconds a full ``gd`` run would take: (epochs + 1) objective+gradient passes."""
    coef, b = np.zeros((5, X.shape[1])), np.zeros(5)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        softmax.loss_gradient(coef, b, X, y, L2)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * (epochs + 1)


def run_size(n: int, repeats: int, large_repeats: int, gd_budget: float) -> dict:
    """All peers at one size: rows, objective values, notes."""
    notes: list[str] = []
    if n == SMALL_N:
        X, y = small_data()
        methods = ["newton", ONE_THREAD, "gd", *(f"sklearn:{t:g}" for t in SKLEARN_TOLS)]
        rows = measure_in_process(X, y, methods, repeats)
    else:
        t0 = time.perf_counter()
        X, y = large_data(n)
        notes.append(f"{n:,}-row features + tiers built in {time.perf_counter() - t0:.1f} s (not timed below).")
        est = gd_estimate(X, y)
        methods = ["newton", ONE_THREAD, *(f"sklearn:{t:g}" for t in SKLEARN_TOLS)]
        reps = dict.fromkeys(methods, large_repeats)
        if est <= gd_budget:
            methods.insert(2, "gd")
            reps["gd"] = 1
        else:
            notes.append(f"gd skipped at {n:,} rows: estimated {est:.0f} s > {gd_budget:.0f} s budget "
                         f"(201 objective+gradient passes).")
        with tempfile.TemporaryDirectory() as tmp:
            np.save(Path(tmp) / "X.npy", X)
            np.save(Path(tmp) / "y.npy", y)
            rows = measure_in_children(Path(tmp), methods, reps)
    F = {r.method: softmax.objective(r.coef, r.intercept, X, y, L2) for r in rows}
    # Tighten scikit-learn until it is within the target of our optimum (or 1e-8 was tried).
    if (F[f"sklearn:{SKLEARN_TOLS[-1]:g}"] - F["newton"]) / abs(F["newton"]) > REL_OBJECTIVE_TARGET:
        extra = "sklearn:1e-08"
        if n == SMALL_N:
            more = measure_in_process(X, y, [extra], repeats)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                np.save(Path(tmp) / "X.npy", X)
                np.save(Path(tmp) / "y.npy", y)
                more = measure_in_children(Path(tmp), [extra], {extra: 1})
        rows += more
        F[extra] = softmax.objective(more[0].coef, more[0].intercept, X, y, L2)
    acc = {r.method: float(np.mean((X @ r.coef.T + r.intercept).argmax(axis=1) == y)) for r in rows}
    return {"n": n, "rows": rows, "F": F, "acc": acc, "x_bytes": X.nbytes, "notes": notes}


# --------------------------------------------------------------------------- report


def fmt_time(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def size_table(res: dict) -> str:
    rows = res["rows"]
    ours = next(r for r in rows if r.method == "newton")
    f_ours = res["F"]["newton"]
    table = []
    for r in rows:
        gap = (res["F"][r.method] - f_ours) / abs(f_ours)
        mem = "—" if r.extra_mem is None else f"{r.extra_mem / res['x_bytes']:.2f}"
        table.append([method_label(r.method), f"{fmt_time(r.seconds)} ({r.runs}×)", r.n_iter,
                      f"{res['F'][r.method]:.10f}", "0 (reference)" if r is ours else f"{gap:+.2e}",
                      f"{res['acc'][r.method]:.4f}", f"{r.seconds / ours.seconds:.2f}", mem])
    return markdown_table(["method", "time (median)", "iters", "objective", "rel. gap to ours",
                           "train acc", "time / ours", "peak extra mem / X"], table)


def memory_table(res: dict) -> str:
    xb = res["x_bytes"]
    table = [[method_label(r.method), f"{r.peak_rss / MB:.0f}", f"{r.rss_base / MB:.0f}",
              f"{r.extra_mem / MB:.0f}", f"{r.extra_mem / xb:.2f}", f"{(r.peak_rss - r.rss_base) / xb:.2f}"]
             for r in res["rows"] if r.extra_mem is not None]
    return markdown_table(["method", "child peak RSS", "RSS before X", "peak extra over X+y",
                           "extra / X", "(X + y + extra) / X"], table)


def targets(results: list[dict], quick: bool) -> list[tuple[str, str, bool]]:
    small, large = results[0], results[-1]
    by = {r.method: r for r in small["rows"]}
    t_small = by["newton"].seconds
    lb = {r.method: r for r in large["rows"]}
    speed = lb["sklearn:0.0001"].seconds / lb["newton"].seconds
    speed_tight = lb["sklearn:1e-06"].seconds / lb["newton"].seconds
    speed_1t = lb["sklearn:0.0001"].seconds / lb[ONE_THREAD].seconds
    gaps = []
    for res in results:
        sk_best = min(v for k, v in res["F"].items() if k.startswith("sklearn:"))
        gaps.append((res["n"], (res["F"]["newton"] - sk_best) / abs(sk_best)))
    mem = lb["newton"].extra_mem / large["x_bytes"]
    mem_incl = (lb["newton"].peak_rss - lb["newton"].rss_base) / large["x_bytes"]
    n_large = f"{large['n']:,} rows" + (" (quick mode; the target is stated for 1,000,000)" if quick else "")
    return [
        (f"{SMALL_N:,} rows train in ≤ 50 ms",
         f"{fmt_time(t_small)} (1 BLAS thread: {fmt_time(by[ONE_THREAD].seconds)})", t_small <= TIME_BUDGET_SMALL_S),
        (f"≥ 3× faster than scikit-learn lbfgs at {n_large}",
         f"{speed:.1f}× vs tol=1e-4 (default); {speed_tight:.1f}× vs tol=1e-6 "
         f"(ours on 1 BLAS thread: {speed_1t:.1f}× vs tol=1e-4)", speed >= SPEEDUP_TARGET),
        ("objective within 1e-6 (relative) of scikit-learn's optimum",
         "; ".join(f"{n:,} rows: ours − sklearn best = {g:+.1e}" for n, g in gaps),
         all(g <= REL_OBJECTIVE_TARGET for _, g in gaps)),
        (f"peak memory ≤ 3× X at {n_large}",
         f"extra {mem:.2f}× X ({mem_incl:.2f}× counting X and y themselves)", mem <= MEMORY_TARGET),
    ]


def report(results: list[dict], quick: bool) -> str:
    parts = ["## Trainer vs scikit-learn", "",
             f"`python benchmarks/bench_train.py{' --quick' if quick else ''}` — {environment()}.", "",
             "Objective: mean softmax cross-entropy + (λ/2)‖W‖², λ = 1e-3 (scikit-learn `C = 1/(λ·n)`), "
             "evaluated for every row with `virality.ml.softmax.objective`. *rel. gap* = (F − F_ours)/F_ours; "
             "*time / ours* = method time ÷ our Newton time in the same run; *peak extra mem / X* = "
             "child peak RSS − RSS after loading X and y, over the float64 X "
             f"({results[-1]['x_bytes']:,} bytes = {results[-1]['x_bytes'] / MB:.0f} MiB at {results[-1]['n']:,} rows; "
             "memory columns below are in MiB).", ""]
    for res in results:
        how = ("real pipeline (CSV → `load_training_data`), train + test stacked"
               if res["n"] == SMALL_N else "`generate_columns` → `extract_features`, quintile tiers; "
               "each fit in a fresh child process after a small warm-up fit")
        parts += [f"### {res['n']:,} rows × 15 features — {how}", "", size_table(res), ""]
        parts += [f"- {note}" for note in res["notes"]]
        if res["notes"]:
            parts.append("")
    large = results[-1]
    parts += [f"Peak memory of the {large['n']:,}-row fits (one child process per fit):", "",
              memory_table(large), "", "### Targets (issue #2, \"Fast at scale\")", ""]
    parts.append(markdown_table(["target", "measured", "result"],
                                [[t, m, verdict(ok)] for t, m, ok in targets(results, quick)]))
    if IMG.exists():
        parts += ["", "Convergence on the 7,358-row data (`python benchmarks/plot_convergence.py`):", "",
                  "![Newton vs gd: objective gap per iteration](img/convergence.png)"]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(argv[1], argv[2])
        return 0
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    check_columns_path()
    sizes = (SMALL_N, 100_000) if args.quick else (SMALL_N, 1_000_000)
    results = []
    for n in sizes:
        print(f"[bench_train] {n:,} rows ...", file=sys.stderr, flush=True)
        results.append(run_size(n, repeats=1 if args.quick else 5, large_repeats=1 if args.quick else 2,
                                gd_budget=10.0 if args.quick else 60.0))
    text = report(results, args.quick)
    print(text)
    target = docs_target(args)
    if target is not None:
        print(f"[bench_train] wrote section 'train' of {write_section('train', text, target)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
