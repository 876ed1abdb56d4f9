"""The audit Lambda against the local S3 (``virality audit --local-s3``, ``make demo``).

Like :mod:`virality_dev.localapi` for predict and retrain: moto's S3 server on
loopback, outcome files uploaded under ``outcomes/`` of the data bucket, and
the real ``functions/audit/app.py`` handler invoked with an empty event
(a manual run: the window ends now).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from virality.config import OUTCOMES_PREFIX
from virality.errors import ViralityError
from virality_dev import localapi
from virality_dev.fakeaws import patched_environ
from virality_dev.handlers import LocalLambdaContext, load_handler

#: The synthetic outcomes used when none are given: a later draw of the sample generator.
SAMPLE_OUTCOME_ROWS, SAMPLE_OUTCOME_SEED = 2000, 20261201


def upload_outcomes(client: Any, bucket: str, files: Sequence[tuple[str, bytes]]) -> list[str]:
    """PUT each ``(name, body)`` under ``outcomes/`` (the name's last path part); returns the keys."""
    keys = []
    for name, body in files:
        key = OUTCOMES_PREFIX + name.replace("\\", "/").rsplit("/", 1)[-1]
        client.put_object(Bucket=bucket, Key=key, Body=body,
                          ContentType="application/x-ndjson" if key.endswith((".jsonl", ".ndjson")) else "text/csv")
        keys.append(key)
    return keys


def invoke_audit(event: dict[str, Any] | None = None, *, model_bucket: str, data_bucket: str,
                 prefix: str = "models/", env: Mapping[str, str] | None = None, module: ModuleType | None = None,
                 quiet: bool = True) -> dict[str, Any]:
    """Run the audit Lambda's ``lambda_handler`` once; returns its summary."""
    module = module or load_handler("audit")
    variables = {"MODEL_BUCKET": model_bucket, "DATA_BUCKET": data_bucket, "MODEL_PREFIX": prefix,
                 **dict(env or {})}
    context = LocalLambdaContext(function_name="virality-audit-local", memory_limit_in_mb=1024,
                                          timeout_seconds=300)
    with patched_environ(variables), \
            (contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()):
        return module.lambda_handler(dict(event or {}), context)


@contextlib.contextmanager
def _restore_level(logger: Any, level: Any) -> Any:
    try:
        yield
    finally:
        logger.setLevel(level)


def read_report(client: Any, bucket: str, key: str) -> dict[str, Any]:
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())


def local_s3_audit(files: Sequence[tuple[str, bytes]], *, model: bytes | None = None,
                   env: Mapping[str, str] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start a local S3, publish a model, upload the outcomes, run the audit handler; (summary, report).

    Parameters
    ----------
    files : the outcome files; synthetic outcomes of the sample generator when empty.
    model : bytes of an ``ml-weights.json`` to publish; default: train on the sample through retrain.
    env : extra handler settings (``AUTO_RECALIBRATE``, ``AUDIT_MIN_ROWS``, ...).
    """
    from virality.artifact import load_artifact
    from virality.observability import logger
    from virality.store.s3 import ModelRegistry, Pointer
    from virality_dev.synthetic import sample_csv

    level = logger.log_level
    logger.setLevel("WARNING")          # the handlers' INFO lines would mix with the printed audit
    with localapi.LocalS3([localapi.DATA_BUCKET, localapi.MODEL_BUCKET]) as s3, _restore_level(logger, level):
        client = s3.client()
        if model is None:
            localapi.publish_sample_model(s3)
        else:
            artifact = load_artifact(model, source="--model")
            registry = ModelRegistry(localapi.MODEL_BUCKET, "models/", s3.client)
            key, sha = registry.publish(artifact, "published by virality audit --local-s3\n")
            registry.write_pointer(Pointer(version=artifact.modelVersion, key=key, sha256=sha,
                                           trainedAt=artifact.trainedAt), None)
        files = list(files) or [(f"synthetic-outcomes-{SAMPLE_OUTCOME_SEED}.csv",
                                 sample_csv(SAMPLE_OUTCOME_ROWS, SAMPLE_OUTCOME_SEED))]
        upload_outcomes(client, localapi.DATA_BUCKET, files)
        summary = invoke_audit(model_bucket=localapi.MODEL_BUCKET, data_bucket=localapi.DATA_BUCKET, env=env)
        if not summary.get("reportKey"):
            raise ViralityError(f"the audit wrote no report: {summary}")
        return summary, read_report(client, localapi.MODEL_BUCKET, summary["reportKey"])
