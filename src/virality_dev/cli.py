"""``virality`` command line: sample-data, import, train, predict, serve, versions, rollback.

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

from virality import __version__
from virality.config import l2_value
from virality.errors import ConfigurationError, ViralityError

EXIT_USAGE = 2
EXIT_DATA = 1


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's example lines as written and shows each option's default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" not in text and action.default not in (None, False, argparse.SUPPRESS)
                and (action.option_strings or action.nargs in ("?", "*"))):
            text += " (default: %(default)s)"
        return text


#: Shown under each subcommand's --help (the README's commands, runnable as written).
EXAMPLES: dict[str, str] = {
    "sample-data": "virality sample-data --rows 5000 --out videos.csv",
    "import": "virality import examples/scraper-export.json --preset scraper --out videos.csv\n"
              "  virality import export.csv --mapping my-mapping.json --out videos.csv\n"
              "  virality import --preset research-api --print-mapping > my-mapping.json",
    "train": "virality train videos.csv --out ml-weights.json\n"
             "  virality train examples/scraper-export.json --preset scraper --out ml-weights.json --force",
    "predict": "echo '{\"featureVector\": {\"shareTrigger\": 8}}' | virality predict --model ml-weights.json",
    "serve": "virality serve --local-s3 --port 3000",
    "versions": "virality versions --bucket \"$MODEL_BUCKET\"\n"
                "  virality versions --local-s3 http://127.0.0.1:PORT   (the URL 'virality serve --local-s3' prints)",
    # The audit branch's subcommand (unused until it is merged).
    "audit": "virality audit --model ml-weights.json outcomes/*.csv\n"
             "  virality audit --local-s3 --recalibrate",
    "rollback": "virality rollback --bucket \"$MODEL_BUCKET\" --version v20261127T183000Z-1a2b3c\n"
                "  virality rollback --local-s3 http://127.0.0.1:PORT --version <version>",
}

#: Help of options declared without one, by (subcommand, dest); kept apart so parser lines stay untouched.
OPTION_HELP: dict[tuple[str, str], str] = {
    ("sample-data", "rows"): "number of video records",
    ("sample-data", "seed"): "random seed (same seed, same file)",
    ("sample-data", "out"): "file to write",
    ("sample-data", "format"): "csv or jsonl (default: jsonl for a .jsonl/.ndjson --out, else csv)",
    ("train", "data"): "training file: seed JSON, raw-record CSV / JSON Lines, or an export with --preset/--mapping",
    ("train", "out"): "artifact to write",
    ("train", "l2"): "L2 penalty lambda of (lambda/2)*||W||^2",
    ("train", "class_weight"): "balanced weighs each tier by the inverse of its frequency",
    ("train", "seed"): "seed of the train/test split (and of gd)",
    ("train", "test_fraction"): "share of each tier held out for testing",
    ("serve", "host"): "address to listen on",
    ("serve", "port"): "port to listen on",
    ("serve", "prefix"): "model prefix in the bucket",
    ("serve", "refresh_seconds"): "how often the handler re-reads the model pointer",
    ("versions", "prefix"): "model prefix in the bucket",
    ("rollback", "prefix"): "model prefix in the bucket",
    ("rollback", "version"): "version id to promote (see 'virality versions')",
}


class _CommandParser(argparse.ArgumentParser):
    """A subcommand: options declared without help take theirs from :data:`OPTION_HELP`."""

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.help is None:
            action.help = OPTION_HELP.get((self.prog.split()[-1], action.dest))
        return action


class _Commands(argparse._SubParsersAction):
    """Every subcommand gets a description (its help line), an example epilog and the defaults in its help."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        kwargs.setdefault("description", kwargs.get("help"))
        if name in EXAMPLES:
            kwargs.setdefault("epilog", "example:\n  " + EXAMPLES[name])
        return super().add_parser(name, **kwargs)


def _add_mapping_options(p: argparse.ArgumentParser) -> None:
    from virality.data.importers import PRESETS

    p.add_argument("--preset", choices=tuple(PRESETS),
                   help="read a known export shape (see README 'Importing real TikTok data')")
    p.add_argument("--mapping", metavar="FILE", help="column-mapping file (JSON, or YAML with PyYAML installed)")
    p.add_argument("--join", metavar="USERS",
                   help="user-info export joined to the videos by the mapping's 'join' rule (follower counts)")


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from virality_dev.synthetic import sample_csv, sample_jsonl

    fmt = args.format or ("jsonl" if args.out.endswith((".jsonl", ".ndjson")) else "csv")
    data = (sample_jsonl(args.rows, args.seed, args.profile) if fmt == "jsonl"
            else sample_csv(args.rows, args.seed, args.profile))
    Path(args.out).write_bytes(data)
    print(f"wrote {args.rows} SYNTHETIC video records ({fmt}, seed {args.seed}) to {args.out}", file=sys.stderr)
    return 0


def _refuse_overwrite(out: str, force: bool) -> None:
    if not force and Path(out).exists():
        raise ConfigurationError(f"{out} exists; pass --force to overwrite it")


def _mapping(args: argparse.Namespace):
    from virality.data.importers import resolve_mapping

    mapping = resolve_mapping(getattr(args, "preset", None), getattr(args, "mapping", None))
    if mapping is None and getattr(args, "join", None):
        raise ConfigurationError("--join needs --preset or --mapping (the mapping says how to join)")
    if mapping is not None and getattr(args, "format", None):
        raise ConfigurationError("--format names a canonical format; with --preset/--mapping the export's "
                                 "shape (CSV, JSON Lines, JSON) is detected")
    return mapping


def _join_table(args: argparse.Namespace, mapping) -> dict[str, Any] | None:
    from virality.data.importers import read_join_table

    if not getattr(args, "join", None):
        return None
    if mapping.join is None:
        raise ConfigurationError(f"--join: the mapping {mapping.name!r} has no 'join' rule")
    return read_join_table(Path(args.join).read_bytes(), args.join, mapping.join)


def _load_training_set(data: Any, path: Path, config: Any, mapping: Any, args: argparse.Namespace) -> Any:
    """The validated training set: a canonical file, or an export read through ``mapping``.

    ``data`` is a :class:`~virality.data.datasets.FileBytes`: the loader frees the file once parsed.
    """
    from virality.data.datasets import load_training_data

    if mapping is None:
        return load_training_data(data, str(path), fmt=args.format, test_fraction=config.test_fraction,
                                  seed=config.seed, tiering=config.tiering)
    from virality.data.importers import load_mapped_training_data

    return load_mapped_training_data(data.take(), str(path), mapping, test_fraction=config.test_fraction,
                                     seed=config.seed, tiering=config.tiering, join=_join_table(args, mapping))


def _warn_empty_tiers(artifact) -> None:
    counts = artifact.data.classCounts
    total = [a + b for a, b in zip(counts.train, counts.test, strict=True)]
    empty = [str(t) for t, n in enumerate(total, start=1) if n == 0]
    if empty:
        per_tier = ", ".join(f"tier {t}: {n}" for t, n in enumerate(total, start=1))
        print(f"warning: --tier-thresholds leave tier(s) {', '.join(empty)} empty on this data ({per_tier}); "
              "the model never learns to predict an empty tier", file=sys.stderr)


def _cmd_import(args: argparse.Namespace) -> int:
    from virality.data.importers import import_export, to_canonical_csv

    mapping = _mapping(args)
    if mapping is None:
        raise ConfigurationError("give --preset NAME or --mapping FILE")
    if args.print_mapping:
        print(json.dumps(mapping.spec, indent=2))
        return 0
    if not args.src or not args.out:
        raise ConfigurationError("give SRC and --out (or --print-mapping)")
    _refuse_overwrite(args.out, args.force)
    data = Path(args.src).read_bytes()
    result = import_export(data, args.src, mapping, _join_table(args, mapping))
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(to_canonical_csv(result))
    tmp.replace(out)            # all or nothing: never a half-written CSV
    known = int((result.raw.followers == result.raw.followers).sum())
    print(f"imported {len(result.records)} videos ({mapping.name}, {result.shape}; followers known for {known}) "
          f"to {args.out}", file=sys.stderr)
    return 0


class _Progress:
    """Progress of a long training on stderr: stages as they start, then optimizer iterations.

    On a terminal the iteration line is rewritten in place (``\\r``); otherwise (logs, CI)
    one line is printed at most every ``interval`` seconds.
    """

    def __init__(self, enabled: bool, stream: Any = None, interval: float = 0.5) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval
        self._started = time.monotonic()
        self._last = -interval
        self._open_line = False

    def stage(self, text: str) -> None:
        if self.enabled:
            self._end_line()
            print(f"  [{time.monotonic() - self._started:6.1f} s] {text}", file=self.stream, flush=True)

    def __call__(self, iteration: int, objective: float, grad_norm: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.interval:
            return
        self._last = now
        line = f"  iteration {iteration:>4}  objective {objective:.10f}  max|grad| {grad_norm:.2e}"
        if self.tty:
            print(f"\r{line}", end="", file=self.stream, flush=True)
            self._open_line = True
        else:
            print(line, file=self.stream, flush=True)

    def _end_line(self) -> None:
        if self._open_line:
            print(file=self.stream)
            self._open_line = False

    def done(self) -> None:
        self._end_line()


def _cmd_train(args: argparse.Namespace) -> int:
    from virality.artifact import dump_artifact
    from virality.ml.tiering import Tiering
    from virality.services.training import TrainingConfig, format_report, train_model

    _refuse_overwrite(args.out, args.force)
    mapping = _mapping(args)
    path = Path(args.data)
    if args.engine == "spark":
        return _train_spark(args)
    if args.format == "parquet":
        raise ViralityError("--format parquet needs --engine spark")
    data = path.read_bytes()
    tiering = None
    if args.tier_thresholds:
        tiering = Tiering(method="thresholds", thresholds=tuple(args.tier_thresholds))
    if args.report_dir:
        from virality_dev.report import require_plotting

        require_plotting()          # before training: a missing extra must not cost a training run
    l2 = None if args.l2 == "auto" and args.optimizer == "gd" else args.l2
    config = TrainingConfig(optimizer=args.optimizer, l2=l2, class_weight=args.class_weight, seed=args.seed,
                            test_fraction=args.test_fraction, tiering=tiering, calibration=args.calibration,
                            feature_set=args.feature_set, cv_folds=args.cv_folds, bootstrap=args.bootstrap)
    started = time.perf_counter()
    search = (f", l2 by {config.cv_folds}-fold CV over {len(config.l2_grid)} values"
              if config.resolved_l2 == "auto" else "")
    print(f"training on {path} ({len(data) / 1e6:.1f} MB) with {config.optimizer}{search}...", file=sys.stderr)
    progress = _Progress(len(data) > 5_000_000 or args.verbose)
    progress.stage("reading and validating" + (f" through the {mapping.name} mapping" if mapping else ""))
    from virality.data.datasets import FileBytes

    handed, data = FileBytes(data), b""       # no reference kept here: the loader frees the file once parsed
    ts = _load_training_set(handed, path, config, mapping, args)
    progress.stage(f"{ts.train.X.shape[0] + ts.test.X.shape[0]:,} rows; "
                   + ("choosing l2, then fitting" if config.resolved_l2 == "auto" else "fitting"))
    outcome = train_model(ts, config, model_version=args.model_version, progress=progress)
    progress.done()
    if args.tier_thresholds:
        _warn_empty_tiers(outcome.artifact)
    Path(args.out).write_bytes(dump_artifact(outcome.artifact))
    print(format_report(outcome.artifact), end="")
    if args.report_dir:
        from virality_dev.report import write_report

        written = write_report(outcome, Path(args.report_dir))
        print(f"\nwrote the report to {written}")
    print(f"\nwrote {args.out} in {time.perf_counter() - started:.2f} s")
    return 0


def _train_spark(args: argparse.Namespace) -> int:
    from virality.artifact import dump_artifact
    from virality.ml.tiering import Tiering
    from virality.services.training import TrainingConfig, format_report
    from virality_spark.train import spark_session, train_spark

    tiering = Tiering(method="thresholds", thresholds=tuple(args.tier_thresholds)) if args.tier_thresholds else None
    # the same defaults as the NumPy engine: l2 by CV, temperature calibration (on a driver sample at scale)
    config = TrainingConfig(optimizer=args.optimizer, l2=args.l2, class_weight=args.class_weight, seed=args.seed,
                            test_fraction=args.test_fraction, tiering=tiering, calibration=args.calibration,
                            feature_set=args.feature_set, cv_folds=args.cv_folds, bootstrap=args.bootstrap)
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
    from virality.ml.features import FEATURE_NAMES

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
    from virality.artifact import load_artifact
    from virality.errors import RequestValidationError
    from virality.http.api import parse_predict_request, predict
    from virality.ml.model import ViralityModel
    from virality.services.serving import load_bundled_model

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
            more = f" (and {len(exc.details) - 5} more problem(s) not shown)" if len(exc.details) > 5 else ""
            print(f"input {n}: {exc.message}: {fields}{more}", file=sys.stderr)
            status = EXIT_DATA
            continue
        print(json.dumps(predict(request, model), indent=None if many else 2))
    return status


def _registry(args: argparse.Namespace):
    from virality.store.s3 import ModelRegistry

    if args.local_s3:
        from virality_dev.localapi import MODEL_BUCKET

        args.bucket = args.bucket or MODEL_BUCKET
        return ModelRegistry(args.bucket, args.prefix, _local_s3_client_factory(args.local_s3))
    if not args.bucket:
        raise ConfigurationError("give --bucket (the stack's ModelBucket output), or --local-s3 URL")
    return ModelRegistry(args.bucket, args.prefix)


def _local_s3_client_factory(endpoint_url: str):
    """Client factory for the local S3 that ``virality serve --local-s3`` runs (fake credentials, on purpose)."""
    from virality_dev.localapi import REGION

    def factory() -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=endpoint_url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing", aws_session_token="testing")

    return factory


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
    from virality.artifact import utc_now_iso
    from virality.errors import ArtifactValidationError
    from virality.store.s3 import Pointer

    registry = _registry(args)
    key = registry.weights_key(args.version)
    artifact, sha256 = registry.load_key(key)       # validates: never point at a broken artifact
    if artifact.source_kind != "legacy" and artifact.modelVersion != args.version:
        # predict refuses a pointer whose version, key and artifact disagree: do not write one
        raise ArtifactValidationError(f"{key} holds modelVersion {artifact.modelVersion!r}, not {args.version!r}")
    state = registry.read_pointer_lenient()
    pointer = Pointer(version=args.version, key=key, sha256=sha256, trainedAt=artifact.trainedAt,
                      promotedAt=utc_now_iso(), previous=state.pointer.version if state and state.pointer else None,
                      reason=f"manual rollback by the CLI to {args.version}")
    registry.write_pointer(pointer, state.etag if state else None)
    print(f"pointer s3://{args.bucket}/{registry.pointer_key} -> {args.version}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from virality_dev.localapi import serve, use_console_logs

    if args.log_format == "console":
        use_console_logs()

    return serve(host=args.host, port=args.port, local_s3=args.local_s3, bucket=args.bucket,
                 prefix=args.prefix, refresh_seconds=args.refresh_seconds)


def _cmd_audit(args: argparse.Namespace) -> int:
    from virality.services.audit import audit_files, format_audit

    files = [(name, Path(name).read_bytes()) for name in args.outcomes]
    if args.local_s3:
        from virality_dev.localaudit import local_s3_audit

        env = {"AUTO_RECALIBRATE": "true" if args.recalibrate else "false", "AUDIT_MIN_ROWS": str(args.min_rows),
               "CALIBRATION_ECE_THRESHOLD": str(args.threshold)}
        _, report = local_s3_audit(files, model=Path(args.model).read_bytes() if args.model else None, env=env)
    else:
        from virality.artifact import load_artifact
        from virality.ml.model import ViralityModel

        if not args.model or not files:
            raise ViralityError("give --model ml-weights.json and at least one outcome file (or --local-s3)")
        model = ViralityModel(load_artifact(Path(args.model).read_bytes(), source=args.model))
        report = audit_files(model, files, ece_threshold=args.threshold, min_rows=args.min_rows)
    if args.png:
        from virality_dev.auditplot import reliability_png

        print(f"wrote {reliability_png(report, Path(args.png))}", file=sys.stderr)
    print(json.dumps(report, indent=2) if args.json else format_audit(report), end="\n" if args.json else "")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="virality", description="TikTok virality model: data, training, prediction.")
    parser.add_argument("--version", action="version", version=f"virality {__version__}")
    # _Commands adds descriptions, examples (EXAMPLES) and missing option help (OPTION_HELP).
    sub = parser.add_subparsers(dest="command", required=True, action=_Commands, parser_class=_CommandParser)

    p = sub.add_parser("sample-data", help="write a SYNTHETIC TikTok-like data set of raw video records")
    p.add_argument("--rows", type=int, default=7358)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=("csv", "jsonl"))
    p.add_argument("--profile", choices=("default", "realistic"), default="default",
                   help="realistic: tighter signal, heavier tails, abbreviated counts (miscalibrated at l2 0.001)")
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser("import", help="convert a TikTok export (Research API, scraper, any mapped CSV/JSON) "
                                      "to the raw-record CSV")
    p.add_argument("src", nargs="?", help="the export: CSV, JSON Lines, a JSON array or a JSON document")
    p.add_argument("--out", help="canonical raw-record CSV to write")
    _add_mapping_options(p)
    p.add_argument("--print-mapping", action="store_true",
                   help="print the preset / mapping as JSON (a starting point for your own) and exit")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("train", help="train from seed JSON, CSV or JSON Lines and write ml-weights.json")
    p.add_argument("data")
    p.add_argument("--out", default="ml-weights.json")
    p.add_argument("--optimizer", choices=("newton", "gd"), default="newton",
                   help="newton (default) reaches the optimum; gd reproduces the original 200 epochs")
    p.add_argument("--l2", type=l2_value, default="auto", metavar="{auto,NUMBER}",
                   help="L2 strength lambda; auto (default) picks it by stratified k-fold cross-validation "
                        "on the training split (newton; gd uses the original's 0.001)")
    p.add_argument("--calibration", choices=("temperature", "none"),
                   help="temperature (default for newton): fit T on out-of-fold logits and fold it into the "
                        "weights; none (default for gd): publish the raw optimum")
    p.add_argument("--feature-set", choices=("full", "prepublication"), default="full",
                   help="full (default): all 15 features; prepublication: only what is known before posting")
    p.add_argument("--cv-folds", type=int, default=5, help="folds of the lambda search and calibration")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the test intervals")
    p.add_argument("--report-dir", metavar="DIR",
                   help="also write a Markdown report with PNG plots to DIR (needs the plots extra)")
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
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    _add_mapping_options(p)
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
    p.add_argument("--log-format", choices=("console", "json"), default="console",
                   help="handler logs as readable lines without EMF metrics (console, default) "
                        "or as the JSON lines and EMF metrics Lambda writes (json)")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("audit", help="calibration audit of a model on labelled outcome files")
    p.add_argument("outcomes", nargs="*", metavar="OUTCOMES",
                   help="outcome files (CSV / JSON Lines with final views or labelViews, or seed JSON)")
    p.add_argument("--model", help="ml-weights.json to audit (with --local-s3: publish it instead of training one)")
    p.add_argument("--json", action="store_true", help="print the report document instead of the text audit")
    p.add_argument("--png", metavar="FILE", help="draw the reliability diagram (needs the plots extra)")
    p.add_argument("--threshold", type=float, default=0.15, help="ECE alarm threshold (default 0.15)")
    p.add_argument("--min-rows", type=int, default=200, help="fewer rows: insufficient data (default 200)")
    p.add_argument("--local-s3", action="store_true",
                   help="run the audit Lambda handler against a local S3 (sample model and outcomes by default)")
    p.add_argument("--recalibrate", action="store_true", help="with --local-s3: AUTO_RECALIBRATE=true")
    p.set_defaults(func=_cmd_audit)

    for name, func, text in (("versions", _cmd_versions, "list published versions (* = promoted)"),
                             ("rollback", _cmd_rollback, "point latest.json at an earlier version")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bucket", help="model bucket (the stack's ModelBucket output; "
                                        "default with --local-s3: virality-models-local)")
        p.add_argument("--local-s3", metavar="URL",
                       help="use the local S3 that 'virality serve --local-s3' started (it prints the URL)")
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
