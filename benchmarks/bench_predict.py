"""Warm ``POST /predict`` latency through the whole predict handler, against Powertools floors.

Everything runs in this one process, interleaved round-robin, so the shared
machine's drifting load hits every peer alike; results are medians and p99
of per-call timings, and every comparison is a ratio measured in the same run.

Peers (all called with the same API Gateway REST proxy event and context):

* ``handler``: ``functions/predict/app.py:lambda_handler`` as deployed:
  ``Logger.inject_lambda_context`` (API Gateway correlation id),
  ``Metrics.log_metrics`` (EMF, cold-start metric on) and the resolver, with
  tracing off (``POWERTOOLS_TRACE_DISABLED=true``, as outside Lambda). The
  model is the bundled baseline (no ``MODEL_BUCKET``): after the first call
  the warm path is the same whichever source the model came from.
* ``bare route``: an ``APIGatewayRestResolver`` with one ``POST /predict``
  route returning a constant dict; ``app.resolve(event, context)``.
* ``observability floor``: the same route, adding one metric per call, in a
  handler wrapped in ``Logger.inject_lambda_context(correlation_id_path=
  API_GATEWAY_REST)`` and ``Metrics.log_metrics``.
* ``bare route, batch``: a bare ``APIGatewayRestResolver`` route receiving the
  same 1,000-instance event as the handler and returning the handler's own
  response body to it (pre-serialized ``Response``: routing and the event
  object, no parse, no model, no serialization): the batch goal's peer.
  ``bare route, batch, dict`` is the same route returning that body as a
  dict, serialized by Powertools' default (``json.dumps``) serializer (info).

Goals (issue #14), each a ratio of medians taken in the same run:
warm single ``POST /predict`` / observability floor ≤ 1.25×; batch of 1,000
named features / ``bare route, batch`` ≤ 40×; batch of 1,000 raw videos /
the same batch as named features ≤ 3×.

``sys.stdout`` is replaced by a discarding sink *before* the handler module
and the floor's Logger are created, so the EMF blobs (printed) and log
records (written by a handler bound to ``sys.stdout`` at creation) cost the
same nothing for every peer.

Batches of 1,000 instances (named features; a mix of the three kinds; all
raw videos) go through the same handler, then a stage breakdown (library
calls made directly) and cProfile listings show where the time goes.

Usage::

    PYTHONPATH=layers/virality python benchmarks/bench_predict.py          # full, writes docs/benchmarks.md
    PYTHONPATH=layers/virality python benchmarks/bench_predict.py --quick  # CI smoke: few iterations, no docs
"""

from __future__ import annotations

import base64
import copy
import cProfile
import importlib.util
import io
import json
import math
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, docs_target, environment, markdown_table, parser, verdict, write_section

# The handler reads these at import; set them before anything imports Powertools.
NAMESPACE = "ViralityBench"
SERVICE = "virality"
os.environ["POWERTOOLS_METRICS_NAMESPACE"] = NAMESPACE
os.environ["POWERTOOLS_SERVICE_NAME"] = SERVICE
os.environ["POWERTOOLS_TRACE_DISABLED"] = "true"
for _name in ("MODEL_BUCKET", "MODEL_VERSION", "MODEL_REFRESH_SECONDS", "AWS_LAMBDA_FUNCTION_NAME"):
    os.environ.pop(_name, None)

EVENTS = ROOT / "events"
IMG = ROOT / "docs" / "img" / "predict-latency.png"
FLOOR_RATIO_TARGET = 1.25         # issue #14: handler median <= 1.25x the observability floor's
BATCH = 1000
BATCH_MS_TARGET = 5.0             # <= 5 ms median per 1,000-instance request
RATE_TARGET = 200_000             # >= 200,000 predictions/s
BATCH_BARE_TARGET = 40.0          # issue #14: named batch <= 40x a bare route given the same body
RAW_NAMED_TARGET = 3.0            # issue #14: raw-video batch <= 3x the same batch as named features
NAMED, RAW = "named features", "raw videos"
BARE_BATCH, BARE_BATCH_DICT = "bare route, batch", "bare route, batch, dict (json.dumps; info)"
NAMED_TEXT, RAW_TEXT, BARE_BATCH_TEXT = ("named features, text body", "raw videos, text body",
                                         "bare route, batch, text body")
HANDLER_TOTAL = "**whole handler** (same loop)"


# --------------------------------------------------------------------------- plumbing


class _Sink(io.TextIOBase):
    """A stdout that discards everything (and counts characters, to prove output happened)."""

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.chars += len(s)
        return len(s)


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def predict_event(body: Any, *, b64: bool = True) -> dict[str, Any]:
    """``events/predict-single.json`` with another body: base64 (as ``sam local generate-event`` makes
    it) or, with ``b64=False``, plain text (as the deployed REST API sends JSON: template.yaml
    declares no binary media types)."""
    event = copy.deepcopy(load_event("predict-single.json"))
    text = json.dumps(body, separators=(",", ":"))
    event["body"] = base64.b64encode(text.encode()).decode() if b64 else text
    event["isBase64Encoded"] = b64
    return event


def load_handler_module() -> ModuleType:
    """``functions/predict/app.py`` imported by path (as the tests do)."""
    spec = importlib.util.spec_from_file_location("predict_app", ROOT / "functions" / "predict" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["predict_app"] = module
    spec.loader.exec_module(module)
    return module


def build_floors() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(bare route handler, observability floor handler)."""
    from aws_lambda_powertools import Logger, Metrics
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver
    from aws_lambda_powertools.logging import correlation_paths
    from aws_lambda_powertools.metrics import MetricUnit

    bare = APIGatewayRestResolver()

    @bare.post("/predict")
    def _bare_route() -> dict[str, Any]:
        return {"ok": True}

    def bare_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return bare.resolve(event, context)

    floor = APIGatewayRestResolver()
    floor_logger = Logger(service="bench-floor")
    floor_metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

    @floor.post("/predict")
    def _floor_route() -> dict[str, Any]:
        floor_metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        return {"ok": True}

    @floor_logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
    @floor_metrics.log_metrics
    def floor_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return floor.resolve(event, context)

    return bare_handler, floor_handler


def build_bare_batch(response_body: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Bare routes that answer any ``POST /predict`` with ``response_body`` (a JSON document):
    (pre-serialized, as a dict through Powertools' default serializer)."""
    from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types

    as_dict = json.loads(response_body)
    raw = APIGatewayRestResolver()

    @raw.post("/predict")
    def _raw_route() -> Response:
        return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=response_body)

    dicts = APIGatewayRestResolver()

    @dicts.post("/predict")
    def _dict_route() -> dict[str, Any]:
        return as_dict

    return (lambda event, context: raw.resolve(event, context)), (lambda event, context: dicts.resolve(event, context))


# --------------------------------------------------------------------------- statistics


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True, slots=True)
class Dist:
    median: float
    p99: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Dist:
        return cls(statistics.median(values), pct(values, 0.99), len(values))


def sample(calls: dict[str, Callable[[], Any]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Per-call seconds of each peer; peers take turns in blocks of ``per_round`` calls.

    The starting peer rotates each round so none always runs right after another.
    """
    names = list(calls)
    out: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for r in range(rounds):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            fn, sink = calls[name], out[name]
            for _ in range(per_round):
                t0 = clock()
                fn()
                sink.append((clock() - t0) * 1e-9)
    return out


# --------------------------------------------------------------------------- workloads


def batch_bodies(n: int) -> dict[str, dict[str, Any]]:
    """Request bodies of ``n`` instances: named features, a 1:1:1 mix of the kinds, raw videos."""
    import numpy as np

    from virality.ml.features import FEATURE_NAMES
    from virality_dev.synthetic import sample_records

    rng = np.random.default_rng(7)
    values = np.round(rng.random((n, len(FEATURE_NAMES))), 4).tolist()
    features = [{"features": dict(zip(FEATURE_NAMES, row, strict=True))} for row in values]
    videos = [{"video": record} for record in sample_records(n, seed=7)]
    vectors = [{"featureVector": {"shareTrigger": int(rng.integers(0, 11)), "commentProvocation": int(rng.integers(0, 11)),
                                  "durationSeconds": int(rng.integers(5, 120)), "hashtagCount": int(rng.integers(0, 12)),
                                  "audioTrendingMatch": round(float(rng.random()), 3),
                                  "captionScore": int(rng.integers(0, 11))}} for _ in range(n)]
    mixed = [(features, videos, vectors)[i % 3][i] for i in range(n)]
    return {"named features": {"instances": features}, "mixed (1/3 each kind)": {"instances": mixed},
            "raw videos": {"instances": videos}}


def _body_of(event: dict[str, Any]) -> Any:
    body = event["body"]
    return json.loads(base64.b64decode(body) if event.get("isBase64Encoded") else body)


def check_ok(response: dict[str, Any], n: int | None = None) -> None:
    if response.get("statusCode") != 200:
        raise RuntimeError(f"handler answered {response.get('statusCode')}: {response.get('body')!r:.500}")
    if n is not None:
        got = len(json.loads(response["body"])["predictions"])
        if got != n:
            raise RuntimeError(f"expected {n} predictions, got {got}")


def profile(label: str, fn: Callable[[], Any], calls: int, out: Any, top: int = 15, top_self: int = 10) -> None:
    """Print the ``top`` entries by cumulative time, then the ``top_self`` by own time."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    for order, n in (("cumulative", top), ("tottime", top_self)):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(order).print_stats(n)
        text = buf.getvalue()
        start = text.find("   ncalls")
        print(f"\n--- cProfile: {label} ({calls} calls; by {order}; top {n}) ---", file=out)
        print(text[start:].rstrip() if start >= 0 else text.rstrip(), file=out)


def stage_breakdown(body: dict[str, Any], model: Any, settings: Any, repeats: int,
                    handler: Callable[[dict[str, Any]], Any]) -> dict[str, float]:
    """Median seconds of the library stages of one request, called directly, and of the whole
    handler on the same request, alternating in one loop."""

    from virality.http import api

    event = predict_event(body)
    handler_runs: list[float] = []
    stages: dict[str, list[float]] = {"decode + parse + validation": [], "`api.predict` (the next two + dicts)": [],
                                      "· features matrix": [], "· `model.predict` (`predict_row` for one named row)": [],
                                      "response JSON (`api.dumps_response`)": []}
    clock = time.perf_counter
    for _ in range(repeats):
        t0 = clock()
        handler(event)
        handler_runs.append(clock() - t0)
        t0 = clock()
        raw = api.decode_body(event["body"], True, settings.max_body_bytes)
        parsed = api.parse_predict_request(raw, settings.max_batch)
        t1 = clock()
        result = api.predict(parsed, model)
        t2 = clock()
        # fast path (named features) arrives as a matrix already, or for one instance as a row
        # that api.predict scores with predict_row, building no matrix
        if parsed.row is None:
            X = (parsed.X if parsed.X is not None else model.featurize(parsed.videos)
                 if parsed.videos is not None else api.instances_to_matrix(parsed.instances, model))
        t3 = clock()
        if parsed.row is not None:
            model.predict_row(parsed.row)
        else:
            model.predict(X)
        t4 = clock()
        api.dumps_response(result)
        t5 = clock()
        for name, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            stages[name].append(seconds)
    return {**{k: statistics.median(v) for k, v in stages.items()}, HANDLER_TOTAL: statistics.median(handler_runs)}


def plot(single: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(single)
    data = [[s * 1e6 for s in single[n]] for n in names]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    try:                                   # matplotlib >= 3.10
        ax.boxplot(data, orientation="horizontal", whis=(1, 99), showfliers=False)
    except TypeError:
        ax.boxplot(data, vert=False, whis=(1, 99), showfliers=False)
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.set_xscale("log")
    lo, hi = min(min(d) for d in data), max(pct(d, 0.99) for d in data)
    ticks = [t for t in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if lo / 2 <= t <= hi * 2]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:g}" for t in ticks]))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if "observability floor" in single:
        limit = FLOOR_RATIO_TARGET * statistics.median(single["observability floor"]) * 1e6
        ax.axvline(limit, color="tab:red", linestyle="--", linewidth=1)
        ax.text(limit, len(names) + 0.35, f" {FLOOR_RATIO_TARGET:g}× floor median", color="tab:red", fontsize=8)
    ax.set_xlabel("µs per call (box: quartiles, whiskers: p1-p99)")
    ax.set_title("Warm POST /predict: handler vs Powertools floors (same run)")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    quick = args.quick
    rounds, per_round = (20, 20) if quick else (400, 50)
    batch_repeats = 5 if quick else 100
    out = sys.stdout                     # the real one: tables and profiles go here

    sink = _Sink()
    sys.stdout = sink                    # before the Logger handlers bind to sys.stdout
    try:
        app = load_handler_module()
        bare_handler, floor_handler = build_floors()
        from virality_dev.handlers import LocalLambdaContext

        ctx = LocalLambdaContext(function_name="PredictFunction", memory_limit_in_mb=1024, timeout_seconds=1e9)
        single_events = {"handler: features": load_event("predict-single.json"),
                         "handler: raw video": load_event("predict-video.json"),
                         "handler: feature vector": load_event("predict-feature-vector.json")}
        for event in single_events.values():      # first call loads the model (the cold part)
            check_ok(app.lambda_handler(event, ctx))
        base_event = single_events["handler: features"]
        check_ok(bare_handler(base_event, ctx))
        check_ok(floor_handler(base_event, ctx))
        chars_before = sink.chars
        h = app.lambda_handler
        calls: dict[str, Callable[[], Any]] = {
            "bare route": lambda: bare_handler(base_event, ctx),
            "observability floor": lambda: floor_handler(base_event, ctx),
            **{name: (lambda e=e: h(e, ctx)) for name, e in single_events.items()},
        }
        for fn in calls.values():                 # warm-up
            for _ in range(200 if not quick else 20):
                fn()
        single = sample(calls, rounds, per_round)
        if sink.chars <= chars_before:
            raise RuntimeError("no EMF output seen: metrics are not being flushed")

        bodies = batch_bodies(BATCH)
        batch_events = {name: predict_event(body) for name, body in bodies.items()}
        for event in batch_events.values():
            check_ok(h(event, ctx), BATCH)
        bare_batch, bare_batch_dict = build_bare_batch(h(batch_events[NAMED], ctx)["body"])
        named_event = batch_events[NAMED]
        text_events = {NAMED_TEXT: predict_event(bodies[NAMED], b64=False),
                       RAW_TEXT: predict_event(bodies[RAW], b64=False)}
        for event in text_events.values():
            check_ok(h(event, ctx), BATCH)
        check_ok(bare_batch(named_event, ctx), BATCH)
        check_ok(bare_batch_dict(named_event, ctx), BATCH)
        check_ok(bare_batch(text_events[NAMED_TEXT], ctx), BATCH)
        batch = sample({**{name: (lambda e=e: h(e, ctx)) for name, e in {**batch_events, **text_events}.items()},
                        BARE_BATCH: lambda: bare_batch(named_event, ctx),
                        BARE_BATCH_TEXT: lambda: bare_batch(text_events[NAMED_TEXT], ctx),
                        BARE_BATCH_DICT: lambda: bare_batch_dict(named_event, ctx)}, batch_repeats, 1)

        provider = app.provider()
        model = provider.get().model
        call = lambda e: h(e, ctx)  # noqa: E731
        breakdown = {name: stage_breakdown(body, model, provider.settings, 200 if quick else 3000, call)
                     for name, body in (("single: features", _body_of(single_events["handler: features"])),
                                        ("single: raw video", _body_of(single_events["handler: raw video"])))}
        breakdown.update({name: stage_breakdown(body, model, provider.settings, batch_repeats, call)
                          for name, body in bodies.items()})

        profiles = io.StringIO()
        profile("single POST /predict (features) through lambda_handler", calls["handler: features"],
                300 if quick else 3000, profiles)
        profile("batch of 1,000 named features through lambda_handler",
                lambda: h(batch_events["named features"], ctx), 3 if quick else 20, profiles)
        profile("batch of 1,000 raw videos through lambda_handler",
                lambda: h(batch_events["raw videos"], ctx), 3 if quick else 20, profiles)
    finally:
        sys.stdout = out

    # ------------------------------------------------------------------ report
    dist = {name: Dist.of(v) for name, v in single.items()}
    floor, bare = dist["observability floor"].median, dist["bare route"].median
    rows = []
    for name, d in dist.items():
        is_handler = name.startswith("handler")
        rows.append([name, f"{d.median * 1e6:.1f}", f"{d.p99 * 1e6:.1f}", f"{d.median / bare:.2f}x",
                     f"{d.median / floor:.2f}x",
                     f"{verdict(d.median / floor <= FLOOR_RATIO_TARGET)}" if is_handler else ""])
    single_table = markdown_table(
        ["warm single request", "median µs", "p99 µs", "/ bare route", "/ obs. floor", f"≤ {FLOOR_RATIO_TARGET:g}× floor"],
        rows)

    brows = []
    bdist = {name: Dist.of(samples) for name, samples in batch.items()}
    for name, d in bdist.items():
        is_handler = not name.startswith("bare")
        rate = BATCH / d.median
        brows.append([name, f"{d.median * 1e3:.3f}", f"{d.p99 * 1e3:.2f}", f"{rate:,.0f}" if is_handler else "",
                      f"{d.median / bdist[BARE_BATCH].median:.1f}x", f"{d.median / floor:.0f}x",
                      verdict(d.median * 1e3 <= BATCH_MS_TARGET and rate >= RATE_TARGET) if is_handler else ""])
    batch_table = markdown_table(
        [f"batch of {BATCH:,} (handler unless 'bare')", "median ms", "p99 ms", "predictions/s", "/ bare route, batch",
         "/ obs. floor", f"≤ {BATCH_MS_TARGET:g} ms, ≥ {RATE_TARGET:,}/s"], brows)

    single_ratio = dist["handler: features"].median / floor
    batch_ratio = bdist[NAMED].median / bdist[BARE_BATCH].median
    raw_ratio = bdist[RAW].median / bdist[NAMED].median
    text_ratio = bdist[NAMED_TEXT].median / bdist[BARE_BATCH_TEXT].median
    raw_text_ratio = bdist[RAW_TEXT].median / bdist[NAMED_TEXT].median
    goal_table = markdown_table(["goal (issue #14)", "measured", "peer (same run)", "ratio", "goal"], [
        ["warm single `POST /predict` (features)", f"{dist['handler: features'].median * 1e6:.1f} µs",
         f"observability floor {floor * 1e6:.1f} µs", f"{single_ratio:.2f}x",
         f"≤ {FLOOR_RATIO_TARGET:g}× {verdict(single_ratio <= FLOOR_RATIO_TARGET)}"],
        [f"batch of {BATCH:,} named features", f"{bdist[NAMED].median * 1e3:.3f} ms",
         f"bare route, same body {bdist[BARE_BATCH].median * 1e6:.1f} µs", f"{batch_ratio:.1f}x",
         f"≤ {BATCH_BARE_TARGET:g}× {verdict(batch_ratio <= BATCH_BARE_TARGET)}"],
        [f"batch of {BATCH:,} named features, text body", f"{bdist[NAMED_TEXT].median * 1e3:.3f} ms",
         f"bare route, same body {bdist[BARE_BATCH_TEXT].median * 1e6:.1f} µs", f"{text_ratio:.1f}x",
         f"≤ {BATCH_BARE_TARGET:g}× {verdict(text_ratio <= BATCH_BARE_TARGET)}"],
        [f"batch of {BATCH:,} raw videos", f"{bdist[RAW].median * 1e3:.3f} ms",
         f"same batch as named features {bdist[NAMED].median * 1e3:.3f} ms", f"{raw_ratio:.2f}x",
         f"≤ {RAW_NAMED_TARGET:g}× {verdict(raw_ratio <= RAW_NAMED_TARGET)}"],
        [f"batch of {BATCH:,} raw videos, text body", f"{bdist[RAW_TEXT].median * 1e3:.3f} ms",
         f"same, named features {bdist[NAMED_TEXT].median * 1e3:.3f} ms", f"{raw_text_ratio:.2f}x",
         f"≤ {RAW_NAMED_TARGET:g}× {verdict(raw_text_ratio <= RAW_NAMED_TARGET)}"],
    ])

    stage_names = list(next(iter(breakdown.values())))
    stage_rows = [[stage, *(f"{breakdown[b][stage] * 1e6:,.1f}" for b in breakdown)] for stage in stage_names]
    stage_table = markdown_table(["stage (library, called directly), µs", *breakdown], stage_rows)

    n_single = dist["bare route"].n
    body = "\n".join([
        "## predict (warm latency)",
        "",
        f"`benchmarks/bench_predict.py{' --quick' if quick else ''}` — {environment()}.",
        "",
        "Goals of issue #14 (the cold-start goal is in the next section); every peer measured in this run. "
        "Bodies are base64 as in `events/` (`sam local generate-event`), and plain text as the deployed "
        "REST API sends JSON (template.yaml declares no binary media types). base64 is decoded by "
        "pybase64 (SIMD: ~40 µs for a 1,000-instance body, against ~1.1 ms for `binascii`), so both "
        "encodings now cost the handler about the same; the bare route decodes neither, so the text-body "
        "ratio divides by a smaller floor. The handler sets the Logger's correlation id from "
        "`requestContext.requestId` with two dict lookups; the floor keeps Powertools' JMESPath "
        "`correlation_id_path` (~10 µs per call): the same log field.",
        "",
        goal_table,
        "",
        f"Single requests: {n_single:,} timed calls per peer ({rounds} interleaved rounds of {per_round}), "
        "same event (`events/predict-single.json`, base64 body) and context for the handler and both floors; "
        "stdout (EMF blobs, logs) goes to a discarding sink for all of them. The handler is "
        "`functions/predict/app.py:lambda_handler` with Logger, Metrics (cold-start metric on) and "
        "tracing off; the model is the bundled baseline (the warm path is the same for a published one).",
        "",
        single_table,
        "",
        "p99 on this shared 2-core machine is dominated by scheduler preemption (~4 ms time slices under "
        "load): the longer a call, the likelier it is hit, so compare medians.",
        "",
        f"Batches: {batch_repeats} interleaved requests per peer, {BATCH:,} instances each, base64 body. "
        "The bare routes receive the named-features event and answer with the handler's own response "
        "body to it (pre-serialized; or as a dict serialized by Powertools' `json.dumps`, info only).",
        "",
        batch_table,
        "",
        "Where a request's time goes: medians of the library stages called directly, alternating in one loop "
        "with the whole handler on the same request (inside the handler the stages run with colder caches; "
        "the rest of its time is Powertools: routing, Logger, EMF metrics):",
        "",
        stage_table,
        "",
        "![warm latency](img/predict-latency.png)" if not quick else "",
    ]).rstrip() + "\n"
    print(body, file=out)
    print(profiles.getvalue(), file=out)

    target = docs_target(args)
    if target is not None:
        if not quick:
            plot({k: v for k, v in single.items()}, IMG)
            print(f"plot: {IMG.relative_to(ROOT)}", file=out)
        print(f"wrote section 'predict' of {write_section('predict', body, target)}", file=out)


if __name__ == "__main__":
    main()
