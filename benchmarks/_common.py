"""Helpers shared by the benchmark scripts (not part of the library).

Conventions
-----------
* Every script accepts ``--quick`` (small sizes, one repeat: the CI / test
  smoke mode). Quick runs print their tables but do not touch
  ``docs/benchmarks.md`` unless ``--docs PATH`` is given; full runs write
  their section there unless ``--no-docs`` is given.
* Timings are the median of several repeats; a comparison is always made
  against its peer *in the same run* and reported as a ratio, because the
  machine is shared and noisy.
* Peak memory is measured in a child process (``ru_maxrss`` from ``wait4``),
  so nothing the parent allocated pollutes it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "layers" / "virality"
DEV = ROOT / "src"                     # virality_dev, virality_spark (CLI, local tools; not in the layer)
DOCS = ROOT / "docs" / "benchmarks.md"
RESULT_PREFIX = "BENCH-RESULT "
MB = 1024 * 1024

for _path in (DEV, LIBRARY):            # so `python benchmarks/x.py` works without PYTHONPATH
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


# --------------------------------------------------------------------------- command line


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the shared ``--quick`` / ``--docs`` / ``--no-docs`` flags."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes and one repeat (CI smoke)")
    p.add_argument("--docs", type=Path, default=None,
                   help=f"markdown file to update (default: {DOCS.relative_to(ROOT)} on full runs only)")
    p.add_argument("--no-docs", action="store_true", help="print only, never write the markdown file")
    return p


def docs_target(args: argparse.Namespace) -> Path | None:
    """Where this run's section goes, or None."""
    if args.no_docs:
        return None
    if args.docs is not None:
        return args.docs
    return None if args.quick else DOCS


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True, slots=True)
class Timing:
    median: float
    runs: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.median:.4g} s (median of {len(self.runs)})"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median_time(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> tuple[Timing, Any]:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones; also the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    runs = []
    for _ in range(max(1, repeats)):
        seconds, result = timed(fn)
        runs.append(seconds)
    return Timing(statistics.median(runs), tuple(runs)), result


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1
                      ) -> dict[str, tuple[Timing, Any]]:
    """Like :func:`median_time` for several peers, run round-robin so drifting load hits them alike."""
    last: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            last[name] = fn()
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            seconds, last[name] = timed(fn)
            runs[name].append(seconds)
    return {name: (Timing(statistics.median(r), tuple(r)), last[name]) for name, r in runs.items()}


# --------------------------------------------------------------------------- memory


def current_rss_bytes() -> int:
    """Resident set size now (Linux ``/proc``; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """This process's peak RSS since it started its current program.

    Linux: ``VmHWM`` of ``/proc/self/status``. Not ``ru_maxrss``: Linux carries
    the *parent's* RSS at fork over into the child's ``ru_maxrss`` across
    ``exec``, so a child of a big parent would report the parent's size.
    Elsewhere: ``ru_maxrss`` (bytes on macOS, kB otherwise).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass(frozen=True, slots=True)
class ChildRun:
    result: dict[str, Any]      # what the child passed to :func:`emit`
    peak_rss: int               # bytes, the child's own peak RSS at its last emit()
    wall: float                 # seconds, including interpreter start-up
    stdout: str


def run_child(argv: Sequence[str], timeout: float = 3600.0) -> ChildRun:
    """Run ``python *argv`` and return its last :func:`emit` payload and its own peak RSS.

    The child must call :func:`emit` after the work being measured: the peak
    is taken there (see :func:`peak_rss_bytes`); ``wait4``'s ``ru_maxrss`` is
    only the fallback when the child did not report one.

    The child inherits the environment (``OPENBLAS_CORETYPE`` and friends are
    left as they are) with the library on ``PYTHONPATH``.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LIBRARY), str(DEV), env.get("PYTHONPATH", "")) if p)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = start + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise TimeoutError(f"child {argv} exceeded {timeout} s")
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)   # reaped here: stop Popen from waiting again
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed with exit code {proc.returncode}:\n{stderr[-4000:]}")
    payload = [line[len(RESULT_PREFIX):] for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not payload:
        raise RuntimeError(f"child {argv} emitted no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    result = json.loads(payload[-1])
    peak = result.pop("_peak_rss", None)
    if peak is None:
        peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024
    return ChildRun(result, peak, wall, stdout)


def emit(result: dict[str, Any]) -> None:
    """Child side of :func:`run_child`: hand a JSON-able dict (and our peak RSS so far) to the parent."""
    print(RESULT_PREFIX + json.dumps({**result, "_peak_rss": peak_rss_bytes()}), flush=True)


# --------------------------------------------------------------------------- reporting


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` is one of ``l``/``r``/``c`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(4, *(len(r[j]) for r in cells)) for j in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(row, widths, align, strict=True)) + " |"

    rule = "| " + " | ".join(marks[a].rjust(w, "-") if a == "r" else marks[a].ljust(w, "-")
                             for w, a in zip(widths, align, strict=True)) + " |"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def environment(*extra: str) -> str:
    """One line describing where the numbers were taken (``extra``: more versions, e.g. ``"pyspark 4.0.5"``)."""
    import numpy as np

    parts = [f"Python {platform.python_version()}", f"NumPy {np.__version__}", *extra]
    try:
        import sklearn

        parts.append(f"scikit-learn {sklearn.__version__}")
    except ImportError:
        pass
    parts += [f"{os.cpu_count()} CPUs ({platform.machine()})"]
    if os.environ.get("OPENBLAS_CORETYPE"):
        parts.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']}")
    parts.append(time.strftime("%Y-%m-%d", time.gmtime()))
    return ", ".join(parts)


def write_section(name: str, body: str, path: Path | None = None) -> Path:
    """Put ``body`` between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``path``.

    The file (and its folder) is created if needed; an existing section is
    replaced in place, a new one is appended; other sections are untouched.
    """
    path = Path(path or DOCS)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)           # benchmark scripts may finish at the same time
        f.seek(0)
        text = f.read() or (
            "# Benchmarks\n\nGenerated by the scripts in `benchmarks/`; each section is rewritten by its script.\n")
        if begin in text and end in text and text.index(begin) < text.index(end):
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
        f.seek(0)
        f.truncate()
        f.write(text)
    return path
