"""Spark entry point: one training object (S3 or local) -> a published version -> the gated pointer.

This is what EMR Serverless runs (``entryPoint`` of ``StartJobRun``; the
library travels in ``spark.submit.pyFiles``, its compiled dependencies in
``spark.archives``: :func:`virality.services.sparkjob.submit_parameters`), and what the retrain Lambda
hands an upload to when it is larger than ``SPARK_MIN_BYTES``
(:mod:`virality.services.sparkjob`). It publishes exactly like the retrain Lambda:

* the same source id (``bucket/key#versionId`` or ``#etag``) and the same
  write-once claim and lease (:func:`virality.services.retraining.acquire_lease`), so
  the Lambda and Spark can never both publish one upload, and a second run of
  the same object publishes nothing new (it does not even train);
* the same release protocol (:func:`virality.services.promotion.release`): write-once
  version with the weights last (a failed run leaves no visible version),
  the promotion gate, the recorded decision and the conditional pointer write.

Usage::

    spark-submit --py-files virality-spark.zip --archives virality-spark-deps.tar.gz#deps \\
        --conf spark.executorEnv.PYTHONPATH=./deps spark_entry.py \\
        --source s3://bucket/training-data/big.parquet --model-bucket models-bucket

Exit status: 0 published or duplicate, 1 the data was rejected (nothing
written), other failures raise (the job run fails; EventBridge records it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

# Absolute imports: EMR runs this file as a script, with the library zip on the path.
from virality.config import RetrainSettings, l2_value
from virality.errors import DataValidationError, ViralityError
from virality.services.promotion import FORCE_PROMOTE_METADATA, Candidate, PromotionPolicy, release
from virality.services.retraining import RetrainSummary, acquire_lease, release_lease, wall_clock
from virality.services.training import TrainingConfig
from virality.store.s3 import ModelRegistry, default_client_factory
from virality.structs import document, replace

EXIT_DATA = 1
#: The lease taken once training is done covers publishing and the gate only.
PUBLISH_LEASE_SECONDS = 900.0


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``."""
    if not uri.startswith(("s3://", "s3a://")):
        raise ValueError(f"not an S3 URI: {uri!r}")
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    if not bucket or not key:
        raise ValueError(f"S3 URI needs a bucket and a key: {uri!r}")
    return bucket, key


def identify_source(source: str, version_id: str | None, client_factory: Any = default_client_factory
                    ) -> tuple[str, dict[str, Any]]:
    """The source id the retrain Lambda would use for ``source`` and the summary's source fields.

    S3: ``bucket/key#versionId`` (or ``#etag``) from a HEAD of the object, its
    metadata under ``"metadata"``; a local path: ``file://path#size-mtime``.
    """
    if source.startswith(("s3://", "s3a://")):
        bucket, key = parse_s3_uri(source)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        head = client_factory().head_object(**kwargs)
        version = head.get("VersionId") or version_id
        source_id = f"{bucket}/{key}#{version or head['ETag']}"
        meta = {k.lower(): v for k, v in (head.get("Metadata") or {}).items()}
        return source_id, {"sourceBucket": bucket, "sourceKey": key, "sourceVersion": version, "metadata": meta}
    path = os.path.abspath(source)
    stat = os.stat(path)
    return f"file://{path}#{stat.st_size}-{stat.st_mtime_ns}", {"sourceKey": path, "metadata": {}}


def run(args: argparse.Namespace, spark: Any = None, client_factory: Any = default_client_factory) -> RetrainSummary:
    """Train ``args.source`` on Spark and publish it through the registry protocol."""
    from virality.artifact import new_version_id
    from virality_spark.train import spark_session, train_spark

    started = time.perf_counter()
    registry = ModelRegistry(args.model_bucket, args.model_prefix, client_factory)
    source_id, base = identify_source(args.source, args.source_version, client_factory)
    metadata = base.pop("metadata")
    force = args.force_promote or metadata.get(FORCE_PROMOTE_METADATA, "").strip().lower() == "true"
    config = TrainingConfig(l2=args.l2, class_weight=args.class_weight, seed=args.seed,
                            test_fraction=args.test_fraction, calibration=args.calibration,
                            feature_set=args.feature_set)
    policy = PromotionPolicy(args.f1_tolerance, args.logloss_tolerance, args.max_sharp_disagreement)
    known = (registry.get_json(registry.claim_key(source_id)) or {}).get("version")
    final = registry.read_promotion(known) if known else None
    if final is not None:               # done before: train nothing, publish nothing
        return _duplicate(registry, str(known), final, None, started, base)
    own_session = spark is None
    if spark is None:
        # Under spark-submit (EMR Serverless) the JVM started this Python: keep its master.
        launched = "PYSPARK_GATEWAY_PORT" in os.environ
        spark = spark_session(args.spark_master or (None if launched else "local[*]"))
    try:
        # The bytes of the very object identified (its version), streamed beside the training:
        # the digest the Lambda records.
        def digest() -> str:
            return source_digest(args.source, source_id, base.get("sourceVersion"), client_factory)

        # Validation happens here: rejected data leaves nothing behind, not even a claim.
        trained = train_spark(spark, args.read_path or args.source, config, fmt=args.format,
                              source=args.source, sha256=digest, model_version=known or new_version_id())
    finally:
        if own_session:
            spark.stop()
    artifact = trained.outcome.artifact
    assert artifact.data is not None        # train_spark always records its data
    rows = {"train": artifact.data.rows.train, "test": artifact.data.rows.test}
    # The retrain Lambda's lease on the same source id: one version per object, whoever runs it.
    lease = acquire_lease(registry, source_id, wall_clock() + PUBLISH_LEASE_SECONDS)
    if lease.final is not None:
        return _duplicate(registry, lease.version, lease.final, rows, started, base)
    try:
        if registry.version_exists(lease.version):
            artifact, _ = registry.load_key(registry.weights_key(lease.version))   # an earlier run's weights
        elif artifact.modelVersion != lease.version:
            artifact = replace(artifact, modelVersion=lease.version)
        outcome = release(registry, Candidate(artifact, trained.test), policy, force=force)
    except BaseException as exc:
        release_lease(registry, source_id, lease, exc)
        raise
    if outcome.finished_before:
        return _duplicate(registry, outcome.version, {"promoted": outcome.promoted, "reason": outcome.reason},
                          rows, started, base)
    return RetrainSummary(status="published", version=outcome.version, modelKey=outcome.key,
                          promoted=outcome.promoted, reason=outcome.reason, rows=rows,
                          metrics=outcome.metrics or None, durationSeconds=round(time.perf_counter() - started, 6),
                          **base)


def _duplicate(registry: ModelRegistry, version: str, final: dict[str, Any], rows: dict[str, int] | None,
               started: float, base: dict[str, Any]) -> RetrainSummary:
    return RetrainSummary(status="duplicate", version=version, modelKey=registry.weights_key(version),
                          promoted=bool(final.get("promoted")),
                          reason=f"this source was already processed: {final.get('reason')}", rows=rows,
                          durationSeconds=round(time.perf_counter() - started, 6), **base)


def source_digest(source: str, source_id: str, version_id: str | None,
                  client_factory: Any = default_client_factory) -> str:
    """SHA-256 of the source's bytes: the S3 object at ``version_id`` (else its ETag), or the local file.

    Streamed in chunks on the driver (:func:`virality_spark.train.source_sha256`),
    so the artifact records the same ``data.sha256`` as the retrain Lambda and
    the NumPy trainer for the same bytes.
    """
    from virality_spark.train import source_sha256

    # source_id ends in "#<versionId or ETag>" for S3 (identify_source): pin the ETag when unversioned.
    etag = source_id.rsplit("#", 1)[1] if not version_id and source.startswith(("s3://", "s3a://")) else None
    return source_sha256(source, client_factory, version_id=version_id, etag=etag)


def build_parser(environ: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """The entry point's options; training defaults are the retrain Lambda's (TRAIN_L2, TRAIN_CALIBRATION, ...)."""
    # Same settings model and environment names as the retrain function: one default for both engines.
    lam = RetrainSettings.from_env(environ)
    p = argparse.ArgumentParser(prog="spark_entry", description=__doc__.split("\n", 1)[0])
    p.add_argument("--source", required=True, help="s3://bucket/key of the training object, or a local path")
    p.add_argument("--source-version", help="S3 version id (the one the upload event named)")
    p.add_argument("--read-path", help="where Spark reads the data (default: --source)")
    p.add_argument("--format", choices=("csv", "jsonl", "parquet"), help="default: from the name")
    p.add_argument("--model-bucket", default=os.environ.get("MODEL_BUCKET"), required="MODEL_BUCKET" not in os.environ)
    p.add_argument("--model-prefix", default=os.environ.get("MODEL_PREFIX", "models/"))
    p.add_argument("--l2", type=l2_value, default=lam.train_l2, metavar="{auto,NUMBER}",
                   help="lambda, or auto: cross-validated on a driver sample (default: TRAIN_L2, else auto)")
    p.add_argument("--calibration", choices=("temperature", "none"), default=lam.train_calibration,
                   help="default: TRAIN_CALIBRATION, else temperature")
    p.add_argument("--feature-set", choices=("full", "prepublication"), default=lam.train_feature_set,
                   help="default: TRAIN_FEATURE_SET, else full")
    p.add_argument("--class-weight", choices=("none", "balanced"), default=lam.train_class_weight)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--f1-tolerance", type=float, default=0.03)
    p.add_argument("--logloss-tolerance", type=float, default=0.05)
    p.add_argument("--max-sharp-disagreement", type=float, default=0.25)
    p.add_argument("--force-promote", action="store_true")
    p.add_argument("--spark-master", help="default: spark-submit's master, else local[*]")
    return p


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model_prefix.endswith("/") and args.model_prefix:
        args.model_prefix += "/"
    try:
        summary = run(args, spark)
    except DataValidationError as exc:
        print(json.dumps({"status": "failed", "reason": "training data rejected", "error": str(exc),
                          "errorType": type(exc).__name__, "sourceKey": args.source}), flush=True)
        return EXIT_DATA
    except ViralityError as exc:
        print(json.dumps({"status": "failed", "reason": "training failed", "error": str(exc),
                          "errorType": type(exc).__name__, "sourceKey": args.source}), flush=True)
        raise
    print(json.dumps(document(summary)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
