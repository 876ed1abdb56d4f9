"""``virality`` command line: sample-data, train, predict, serve, versions, rollback.

User mistakes (bad data, bad options, unreadable files) print one clear line
to stderr and exit non-zero; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ViralityError

EXIT_USAGE = 2
EXIT_DATA = 1


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from .synthetic import sample_csv, sample_jsonl

    fmt = args.format or ("jsonl" if args.out.endswith((".jsonl", ".ndjson")) else "csv")
    data = sample_jsonl(args.rows, args.seed) if fmt == "jsonl" else sample_csv(args.rows, args.seed)
    Path(args.out).write_bytes(data)
    print(f"wrote {args.rows} SYNTHETIC video records ({fmt}, seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


def _progress_printer(enabled: bool):
    if not enabled:
        return None
    last = [0.0]

    def progress(iteration: int, objective: float, grad_norm: float) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            print(f"  iteration {iteration:>4}  objective {objective:.10f}  max|grad| {grad_norm:.2e}",
                  file=sys.stderr)

    return progress


def _cmd_train(args: argparse.Namespace) -> int:
    from .artifact import dump_artifact
    from .tiering import Tiering
    from .training import TrainingConfig, format_report, train_file

    path = Path(args.data)
    if args.engine == "spark":
        return _train_spark(args)
    if args.format == "parquet":
        raise ViralityError("--format parquet needs --engine spark")
    data = path.read_bytes()
    tiering = None
    if args.tier_thresholds:
        tiering = Tiering(method="thresholds", thresholds=tuple(args.tier_thresholds))
    config = TrainingConfig(optimizer=args.optimizer, l2=args.l2, class_weight=args.class_weight, seed=args.seed,
                            test_fraction=args.test_fraction, tiering=tiering)
    started = time.perf_counter()
    print(f"training on {path} ({len(data) / 1e6:.1f} MB) with {config.optimizer}...", file=sys.stderr)
    outcome = train_file(data, str(path), config, fmt=args.format, model_version=args.model_version,
                         progress=_progress_printer(len(data) > 5_000_000 or args.verbose))
    Path(args.out).write_bytes(dump_artifact(outcome.artifact))
    print(format_report(outcome.artifact), end="")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


def _train_spark(args: argparse.Namespace) -> int:
    from .artifact import dump_artifact
    from .sparktrain import spark_session, train_spark
    from .tiering import Tiering
    from .training import TrainingConfig, format_report

    tiering = Tiering(method="thresholds", thresholds=tuple(args.tier_thresholds)) if args.tier_thresholds else None
    config = TrainingConfig(optimizer=args.optimizer, l2=args.l2, class_weight=args.class_weight, seed=args.seed,
                            test_fraction=args.test_fraction, tiering=tiering)
    fmt = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}.get(args.format or "")
    if args.format == "seed-json":
        raise ViralityError("--engine spark reads raw records (CSV, JSON Lines, Parquet), not seed JSON")
    started = time.perf_counter()
    from pyspark.sql import SparkSession

    print(f"training on {args.data} with Spark ({args.spark_master})...", file=sys.stderr)
    running = SparkSession.getActiveSession()       # e.g. inside a notebook: use it, leave it running
    spark = running or spark_session(args.spark_master)
    try:
        run = train_spark(spark, args.data, config, fmt=fmt, model_version=args.model_version)
    finally:
        if running is None:
            spark.stop()
    Path(args.out).write_bytes(dump_artifact(run.outcome.artifact))
    print(format_report(run.outcome.artifact), end="")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


def _read_inputs(stream) -> tuple[list[dict[str, Any]], bool]:
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        raise ViralityError("no input on stdin: give one JSON object or JSON Lines")
    try:
        doc = json.loads(stripped)
        return ([doc] if isinstance(doc, dict) else doc), False
    except ValueError:
        pass
    items = []
    for n, line in enumerate(stripped.splitlines(), start=1):
        if line.strip():
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise ViralityError(f"stdin line {n}: invalid JSON ({exc})") from None
    return items, True


def _wrap(item: Any) -> dict[str, Any]:
    """Accept {"features": ...}/{"video": ...}/{"featureVector": ...}, or a bare raw video / feature mapping."""
    from .features import FEATURE_NAMES

    if not isinstance(item, dict):
        return item
    if any(k in item for k in ("features", "video", "featureVector", "instances")):
        return item
    if set(item) >= set(FEATURE_NAMES):
        return {"features": item}
    if "views" in item:
        return {"video": item}
    return {"featureVector": item}


def _cmd_predict(args: argparse.Namespace) -> int:
    from .api import parse_predict_request, predict
    from .artifact import load_artifact
    from .errors import RequestValidationError
    from .model import ViralityModel
    from .serving import load_bundled_model

    if args.model:
        model = ViralityModel(load_artifact(Path(args.model).read_bytes(), source=args.model))
    else:
        model = load_bundled_model()
    items, many = _read_inputs(sys.stdin)
    status = 0
    for n, item in enumerate(items, start=1):
        body = _wrap(item)
        if args.explain and isinstance(body, dict):
            body = {**body, "explain": True}
        try:
            request = parse_predict_request(json.dumps(body).encode(), max_batch=100_000)
        except RequestValidationError as exc:
            fields = "; ".join(f"{d['field']}: {d['message']}" for d in exc.details[:5])
            print(f"input {n}: {exc.message}: {fields}", file=sys.stderr)
            status = EXIT_DATA
            continue
        print(json.dumps(predict(request, model), indent=None if many else 2))
    return status


def _registry(args: argparse.Namespace):
    from .registry import ModelRegistry

    return ModelRegistry(args.bucket, args.prefix)


def _cmd_versions(args: argparse.Namespace) -> int:
    registry = _registry(args)
    state = registry.read_pointer()
    current = state.pointer.version if state else None
    for version in registry.list_versions():
        print(("* " if version == current else "  ") + version)
    if current is None:
        print("(no pointer: nothing promoted yet)", file=sys.stderr)
    return 0


def _cmd_rollback(args: argparse.Namespace) -> int:
    from .artifact import utc_now_iso
    from .registry import Pointer

    registry = _registry(args)
    key = registry.weights_key(args.version)
    artifact, sha256 = registry.load_key(key)       # validates: never point at a broken artifact
    state = registry.read_pointer_lenient()
    pointer = Pointer(version=artifact.modelVersion, key=key, sha256=sha256, trainedAt=artifact.trainedAt,
                      promotedAt=utc_now_iso(), previous=state.pointer.version if state and state.pointer else None,
                      reason=f"manual rollback by the CLI to {args.version}")
    registry.write_pointer(pointer, state.etag if state else None)
    print(f"pointer s3://{args.bucket}/{registry.pointer_key} -> {args.version}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .localapi import serve

    return serve(host=args.host, port=args.port, local_s3=args.local_s3, bucket=args.bucket,
                 prefix=args.prefix, refresh_seconds=args.refresh_seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virality", description="TikTok virality model: data, training, prediction.")
    parser.add_argument("--version", action="version", version=f"virality {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-data", help="write a SYNTHETIC TikTok-like data set of raw video records")
    p.add_argument("--rows", type=int, default=7358)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("csv", "jsonl"))
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser("train", help="train from seed JSON, CSV or JSON Lines and write ml-weights.json")
    p.add_argument("data")
    p.add_argument("--out", default="ml-weights.json")
    p.add_argument("--optimizer", choices=("newton", "gd"), default="newton",
                   help="newton (default) reaches the optimum; gd reproduces the original 200 epochs")
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--class-weight", choices=("none", "balanced"), default="none")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--format", choices=("seed-json", "csv", "jsonl", "parquet"),
                   help="skip format detection (parquet: --engine spark only)")
    p.add_argument("--engine", choices=("numpy", "spark"), default="numpy",
                   help="numpy: in memory on this machine; spark: Apache Spark (the [spark] extra, Java 17+), "
                        "for files past one machine's memory")
    p.add_argument("--spark-master", default="local[*]", help="Spark master URL for --engine spark")
    p.add_argument("--tier-thresholds", type=float, nargs=4, metavar="VIEWS",
                   help="fixed view-count cut points instead of quintiles")
    p.add_argument("--model-version", help="version id to write (default: a fresh timestamped id)")
    p.add_argument("-v", "--verbose", action="store_true", help="print optimizer progress")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("predict", help="predict from one JSON object or JSON Lines on stdin")
    p.add_argument("--model", help="ml-weights.json (default: the bundled baseline)")
    p.add_argument("--explain", action="store_true", help="add per-feature contributions")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("serve", help="local HTTP API in front of the predict handler (no Docker)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--local-s3", action="store_true",
                   help="start moto's S3 on loopback, publish a model trained on sample data, serve from it")
    p.add_argument("--bucket", help="model bucket (default: MODEL_BUCKET, or a local one with --local-s3)")
    p.add_argument("--prefix", default="models/")
    p.add_argument("--refresh-seconds", type=float, default=5.0)
    p.set_defaults(func=_cmd_serve)

    for name, func, text in (("versions", _cmd_versions, "list published versions (* = promoted)"),
                             ("rollback", _cmd_rollback, "point latest.json at an earlier version")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bucket", required=True)
        p.add_argument("--prefix", default="models/")
        if name == "rollback":
            p.add_argument("--version", required=True)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ViralityError as exc:
        print(f"virality {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except OSError as exc:
        print(f"virality {args.command}: error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}",
              file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, BotoCoreError | ClientError):
            print(f"virality {args.command}: AWS error: {exc}", file=sys.stderr)
            return EXIT_DATA
        raise


if __name__ == "__main__":
    sys.exit(main())
