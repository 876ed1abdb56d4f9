"""The whole system on this machine, no AWS account, no Docker (``make demo``).

1. start a local S3 (moto's server on 127.0.0.1, a free port) with the template's buckets;
2. upload SYNTHETIC sample data under training-data/ and deliver the S3 notification to the
   retrain Lambda's ``lambda_handler``;
3. score example videos with API Gateway events sent to the predict Lambda's ``lambda_handler``;
4. upload a second training file, retrain, and watch the warm predict function pick up the new
   version after its refresh interval;
5. show GET /model and the published versions (``virality versions``);
6. upload labelled outcomes under outcomes/ (one of them broken), run the calibration-audit
   Lambda's ``lambda_handler`` and show its reliability table and decision;
7. stop the local S3, leaving nothing running.

Run from the repository root: ``python scripts/demo.py`` (the package is found in
layers/virality when it is not installed).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REFRESH_SECONDS = 1.0

if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3 than the project's
    sys.exit(f"demo: Python 3.11+ is required (this is {sys.version.split()[0]}); "
             "install python3.11 or newer and run `make demo` again")

# Quiet handlers: Powertools logs warnings only, and no CloudWatch EMF metric lines.
# (Set before the handlers import Powertools: Logger reads its level at construction.)
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "virality-demo")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ViralityDemo")
os.environ.setdefault("VIRALITY_REPO", str(REPO))

try:
    import virality_dev  # noqa: F401
except ImportError:
    sys.path[:0] = [str(REPO / "layers" / "virality"), str(REPO / "src")]

try:
    import boto3  # noqa: F401
    import moto.server  # noqa: F401

    from virality.services.audit import reliability_diagram_text
    from virality.store.s3 import ModelRegistry
    from virality_dev import localapi, localaudit
    from virality_dev.events import api_event
    from virality_dev.fakeaws import patched_environ
    from virality_dev.handlers import LocalLambdaContext, load_handler
    from virality_dev.synthetic import sample_csv
except ImportError as exc:
    sys.exit(f"demo: missing dependency ({exc}). Run `make demo` (it creates .venv), or in an active "
             "virtualenv: pip install -e '.[dev]'")

STEPS = 7
DATA_BUCKET = localapi.DATA_BUCKET
MODEL_BUCKET = localapi.MODEL_BUCKET
PREFIX = "models/"

EXAMPLES: list[tuple[str, dict[str, Any]]] = [
    ("viral-looking dance clip", {"video": {
        "videoId": "dance-viral", "views": 2_400_000, "likes": 410_000, "comments": 9_800, "shares": 52_000,
        "saves": 61_000, "followers": 85_000, "durationSeconds": 17, "hashtagCount": 4, "hasTrendingSound": True,
        "captionLength": 64, "postedAt": "2026-11-27T19:30:00Z"}}),
    ("flop: long, hashtag-stuffed", {"video": {
        "videoId": "long-flop", "views": 310, "likes": 6, "comments": 0, "shares": 0, "saves": 0,
        "followers": 1_200, "durationSeconds": 240, "hashtagCount": 28, "hasTrendingSound": False,
        "captionLength": 1_400, "postedAt": "2026-11-25T04:10:00Z"}}),
    ("mid: recipe, decent engagement", {"video": {
        "videoId": "recipe-mid", "views": 18_500, "likes": 1_350, "comments": 42, "shares": 60, "saves": 210,
        "followers": 9_800, "durationSeconds": 38, "hashtagCount": 5, "hasTrendingSound": False,
        "captionLength": 120, "postedAt": "2026-11-24T12:05:00Z"}}),
    ("no follower data", {"video": {
        "videoId": "anon-pet", "views": 46_000, "likes": 5_900, "comments": 130, "shares": 700, "saves": 480,
        "durationSeconds": 12, "hashtagCount": 3, "hasTrendingSound": True, "caption": "he knows #cat #fyp",
        "postedAt": 1_795_000_000}}),
    ("pipeline feature vector", {"featureVector": {
        "shareTrigger": 8, "commentProvocation": 6, "durationSeconds": 24, "hashtagCount": 4,
        "audioTrendingMatch": 0.9, "captionScore": 7}}),
    ("15 named features", {"features": {
        "shareRate": 0.42, "commentRate": 0.35, "likeRate": 0.61, "saveRate": 0.28, "shareToLikeRatio": 0.55,
        "commentToLikeRatio": 0.3, "durationSeconds": 0.17, "hashtagCount": 0.13, "hasTrendingSound": 1,
        "captionLength": 0.25, "hasFollowerData": 1, "followerTier": 0.62, "viewsPerFollower": 0.48,
        "weekdayPosted": 0.83, "hourPosted": 0.87}}),
]


class DemoError(Exception):
    """A step did not do what it should (printed as one line, exit 1)."""


def step(n: int, text: str) -> None:
    print(f"[{n}/{STEPS}] {text}", flush=True)


def info(text: str = "") -> None:
    print(f"      {text}" if text else "", flush=True)


class PredictFunction:
    """The predict Lambda in one warm container, invoked with API Gateway REST proxy events."""

    def __init__(self) -> None:
        self.module = load_handler("predict")
        self.invocations = 0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        raw = json.dumps(body).encode() if body is not None else None
        event = api_event(method, path, raw_body=raw, headers={"Content-Type": "application/json",
                                                               "User-Agent": "virality-demo"})
        context = LocalLambdaContext(aws_request_id=event["requestContext"]["requestId"])
        with contextlib.redirect_stdout(io.StringIO()):      # Powertools' ColdStart EMF line
            response = self.module.lambda_handler(event, context)
        self.invocations += 1
        status, _, data = localapi._normalise_response(response)
        payload = json.loads(data)
        if status != 200:
            raise DemoError(f"{method} {path} answered {status}: {payload}")
        return status, payload


def top_features(contributions: dict[str, float], n: int = 3) -> str:
    top = sorted(contributions.items(), key=lambda kv: kv[1], reverse=True)[:n]
    return ", ".join(f"{name} {value:+.2f}" for name, value in top)


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    right = {1, 2}                          # score and tier right-aligned

    def fmt(row: list[str]) -> str:
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    info(fmt(header))
    info("  ".join("-" * w for w in widths))
    for row in rows:
        info(fmt(row))


def score_examples(predict: PredictFunction) -> dict[str, dict[str, Any]]:
    results, rows = {}, []
    for label, body in EXAMPLES:
        _, out = predict.call("POST", "/predict", {**body, "explain": True})
        results[label] = out
        rows.append([label, f"{out['score']:.1f}", str(out["tier"]), top_features(out["contributions"]),
                     out["modelVersion"]])
    print_table(rows, ["video", "score", "tier", "top 3 contributing features (logit)", "model version"])
    return results


def retrain(s3: localapi.LocalS3, key: str, body: bytes, metadata: dict[str, str] | None = None
            ) -> dict[str, Any]:
    event = localapi.upload_training_file(s3.client(), DATA_BUCKET, key, body, metadata)
    obj = event["Records"][0]["s3"]["object"]
    info(f"PUT s3://{DATA_BUCKET}/{key} ({len(body) / 1e6:.2f} MB, versionId {obj.get('versionId')})")
    info(f"S3 notification -> retrain lambda_handler: ObjectCreated:Put, key {obj['key']!r} (URL-encoded)")
    response = localapi.invoke_retrain(event, model_bucket=MODEL_BUCKET, prefix=PREFIX)
    results = response.get("results") or []
    if len(results) != 1 or results[0].get("status") != "published":
        raise DemoError(f"the retrain handler did not publish a model: {results}")
    summary = results[0]
    m = summary.get("metrics") or {}
    info(f"published {summary['version']}  promoted: {summary['promoted']}  "
         f"accuracy {m.get('accuracy', 0):.3f}  macro-F1 {m.get('macroF1', 0):.3f}  "
         f"rows {summary['rows']['train']} train / {summary['rows']['test']} test  "
         f"({summary['durationSeconds']:.2f} s)")
    info(f"gate: {summary['reason']}")
    return summary


def audit(s3: localapi.LocalS3) -> None:
    step(6, "calibration audit: labelled outcomes -> S3 outcomes/ -> audit lambda_handler")
    good = sample_csv(2000, seed=localaudit.SAMPLE_OUTCOME_SEED)
    lines = good.decode().splitlines()[:3]
    cells = lines[2].split(",")
    cells[lines[0].split(",").index("likes")] = "1.2k?"     # a typo a spreadsheet might leave
    broken = "\n".join([*lines[:2], ",".join(cells)]).encode() + b"\n"
    keys = localaudit.upload_outcomes(s3.client(), DATA_BUCKET, [("week-48 outcomes.csv", good),
                                                                 ("week-48 typo.csv", broken)])
    info(f"PUT {', '.join(f's3://{DATA_BUCKET}/{k}' for k in keys)}")
    info("(uploads under outcomes/ never trigger retraining: not in the S3 filter, ignored by the handler)")
    summary = localaudit.invoke_audit({}, model_bucket=MODEL_BUCKET, data_bucket=DATA_BUCKET, prefix=PREFIX)
    if summary.get("status") != "audited" or not summary.get("reportKey"):
        raise DemoError(f"the audit did not report: {summary}")
    report = localaudit.read_report(s3.client(), MODEL_BUCKET, summary["reportKey"])
    m = report["model"]
    for skipped in report["outcomes"]["skipped"]:
        info(f"skipped {skipped['key']}: row {skipped['row']}, column {skipped['column']!r}")
    info(f"audited {m['modelVersion']} on {m['rows']} outcome rows: accuracy {m['accuracy']:.3f}, "
         f"log-loss {m['logLoss']:.3f}, Brier {m['brier']:.3f}, tier-mix PSI {m['tierMix']['psi']:.3f}")
    info(f"ECE {m['ece']:.3f} (95% bootstrap [{m['eceInterval']['low']:.3f}, {m['eceInterval']['high']:.3f}]), "
         f"classwise-ECE {m['classwiseEce']:.3f}, max calibration error {m['maxCalibrationError']:.3f}")
    for line in reliability_diagram_text(m["reliability"]).splitlines():
        info(line)
    d = report["decision"]
    info(f"decision: {d['status'].upper()} - {d['reason']}")
    info(f"report (write-once): s3://{MODEL_BUCKET}/{summary['reportKey']}")


def main() -> int:
    started = time.perf_counter()
    s3 = localapi.LocalS3([DATA_BUCKET, MODEL_BUCKET])
    port = 0
    try:
        s3.start()
        port = s3.port
        step(1, f"starting local S3 on 127.0.0.1:{port} (moto server, fake credentials, no AWS account)")
        info(f"buckets (versioned, as in template.yaml): {DATA_BUCKET} (DataBucket), {MODEL_BUCKET} (ModelBucket)")

        step(2, "training the first model: synthetic sample data -> S3 -> retrain handler")
        first = retrain(s3, localapi.SAMPLE_KEY, sample_csv(7358, seed=42))
        if not first["promoted"]:
            raise DemoError("the first model was not promoted")

        step(3, "scoring example videos: API Gateway events -> predict lambda_handler (explain=true)")
        predict = PredictFunction()
        env = {"MODEL_BUCKET": MODEL_BUCKET, "MODEL_PREFIX": PREFIX, "MODEL_REFRESH_SECONDS": f"{REFRESH_SECONDS:g}"}
        with patched_environ(env):
            before = score_examples(predict)
            old_version = before[EXAMPLES[0][0]]["modelVersion"]
            if old_version != first["version"]:
                raise DemoError(f"predict served {old_version}, expected {first['version']}")

            step(4, "retraining on a second upload (seed 7, 12000 rows) with metadata force-promote: true")
            info("(force-promote skips the promotion gate, so the new model is promoted whatever its metrics)")
            second = retrain(s3, "training-data/more videos 2026-11.csv", sample_csv(12_000, seed=7),
                             {"force-promote": "true"})
            if not second["promoted"]:
                raise DemoError("the forced model was not promoted")
            info(f"waiting {REFRESH_SECONDS + 0.1:.1f} s: MODEL_REFRESH_SECONDS={REFRESH_SECONDS:g} in the same warm "
                 "predict container")
            time.sleep(REFRESH_SECONDS + 0.1)
            label, body = EXAMPLES[0]
            _, after = predict.call("POST", "/predict", {**body, "explain": True})
            new_version = after["modelVersion"]
            if new_version != second["version"]:
                raise DemoError(f"predict still serves {new_version} after the refresh interval; "
                                f"expected {second['version']}")
            info(f"model version: {old_version} -> {new_version} (new version picked up, no cold start)")
            info(f"re-scored {label!r}: score {before[label]['score']:.1f} -> {after['score']:.1f}, "
                 f"tier {before[label]['tier']} -> {after['tier']}")

            step(5, "GET /model and the published versions")
            _, model = predict.call("GET", "/model")
            test = (model.get("metrics") or {}).get("test") or {}
            info(f"GET /model: source {model['source']}, version {model['modelVersion']}, key {model['key']}")
            info(f"           refresh every {model['refreshSeconds']:g} s; test accuracy "
                 f"{test.get('accuracy', float('nan')):.3f}, macro-F1 {test.get('macroF1', float('nan')):.3f}, "
                 f"log-loss {test.get('logLoss', float('nan')):.3f}")
            registry = ModelRegistry(MODEL_BUCKET, PREFIX)
            pointer = registry.read_pointer()
            current = pointer.pointer.version if pointer else None
            info(f"$ virality versions --bucket {MODEL_BUCKET}   (* = promoted, models/latest.json)")
            for version in registry.list_versions():
                info(("* " if version == current else "  ") + version)
            info(f"predict handler invocations in this warm container: {predict.invocations}")
            audit(s3)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        s3.stop()
    step(7, f"stopped the local S3 on 127.0.0.1:{port}")
    if port and localapi.port_is_open("127.0.0.1", port):
        print(f"demo failed: something still listens on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    info(f"port {port} is closed; nothing left running")
    print(f"done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
