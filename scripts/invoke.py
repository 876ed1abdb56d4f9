#!/usr/bin/env python3
"""Docker-free ``sam local invoke``: run a function's handler on an event file and print the response.

    python scripts/invoke.py predict events/predict-single.json
    python scripts/invoke.py predict events/model-info.json --local-s3 --seed-model
    python scripts/invoke.py retrain events/retrain-s3-put.json --local-s3
    python scripts/invoke.py retrain events/retrain-sqs-message.json --local-s3   # S3 -> SQS -> Lambda

The handler (``functions/<function>/app.py``) is loaded by path, exactly as
Lambda would, and called with the event and a fake ``LambdaContext``. API
Gateway responses are shown as ``HTTP <status>``, the headers and the
pretty-printed JSON body; other responses are pretty-printed as they are.
Handler logs and metrics go to stderr (``--quiet`` drops them), so stdout
carries only the response.

Without ``--local-s3`` the handler sees the AWS environment you have (with no
``MODEL_BUCKET``, the predict function serves its bundled model).
``--local-s3`` starts a moto S3 server on 127.0.0.1 (a free port), points the
handler at it with fake credentials, creates the buckets (``MODEL_BUCKET``,
default ``virality-models-local``, and those an S3 event names) and uploads
the files an S3 event refers to from ``events/data/`` (by the key's basename),
also when the S3 notification is the body of an SQS message (the deployed trigger).
``--seed-model`` (predict) first runs the retrain function on
``events/data/sample videos.csv`` so a published model answers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO
from urllib.parse import unquote_plus

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS = ROOT / "functions"
EVENTS = ROOT / "events"
DATA = EVENTS / "data"
DEFAULT_MODEL_BUCKET = "virality-models-local"
SEED_EVENT = EVENTS / "retrain-s3-put.json"
PROG = "invoke.py"


class InvokeError(Exception):
    """A usage or setup problem, reported as one line."""


# --------------------------------------------------------------------------- context


# --------------------------------------------------------------------------- loading


def ensure_library_importable() -> None:
    """Make ``import virality`` work from a checkout (the layer is not installed)."""
    try:
        import virality_dev
    except ImportError:
        sys.path[:0] = [str(ROOT / "layers" / "virality"), str(ROOT / "src")]
        import virality_dev  # noqa: F401


def available_functions() -> list[str]:
    return sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))


def load_handler(function: str) -> ModuleType:
    from virality_dev.handlers import load_handler as load

    return load(function)


def read_event(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InvokeError(f"event file not found: {path}")
    try:
        event = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvokeError(f"cannot read event file {path}: {exc}") from None
    if not isinstance(event, dict):
        raise InvokeError(f"event file {path} does not hold a JSON object")
    return event


def context_for(function: str) -> Any:
    from virality_dev.handlers import LocalLambdaContext

    return LocalLambdaContext(function_name=f"{function.capitalize()}Function", timeout_seconds=30.0)


# --------------------------------------------------------------------------- local S3


def s3_records(event: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The S3 notification records of a direct S3 event or of SQS messages carrying one (mutable)."""
    for record in event.get("Records") or []:
        if record.get("eventSource") == "aws:s3":
            yield record


def _sqs_inner_events(event: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for record in event.get("Records") or []:
        if record.get("eventSource") == "aws:sqs":
            try:
                inner = json.loads(record.get("body") or "")
            except ValueError:
                continue
            if isinstance(inner, dict):
                yield record, inner


@contextlib.contextmanager
def local_s3(model_bucket: str) -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1 and the environment that points boto3 at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update({
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        })
        os.environ.setdefault("MODEL_BUCKET", model_bucket)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        ensure_bucket(client, os.environ["MODEL_BUCKET"])
        print(f"{PROG}: local S3 at {endpoint}, MODEL_BUCKET={os.environ['MODEL_BUCKET']}", file=sys.stderr)
        yield client
    finally:
        server.stop()


def ensure_bucket(client: Any, bucket: str) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def stage_record(client: Any, record: dict[str, Any]) -> None:
    """Create the record's bucket, upload the local file its key names, and make the record match it."""
    s3 = record["s3"]
    bucket = s3["bucket"]["name"]
    key = unquote_plus(s3["object"]["key"])
    source = DATA / Path(key).name
    if not source.is_file():
        raise InvokeError(f"no local file for s3://{bucket}/{key}: expected {source.relative_to(ROOT)}")
    ensure_bucket(client, bucket)
    put = client.put_object(Bucket=bucket, Key=key, Body=source.read_bytes())
    s3["object"]["size"] = source.stat().st_size
    s3["object"]["eTag"] = put["ETag"].strip('"')
    if put.get("VersionId"):
        s3["object"]["versionId"] = put["VersionId"]
    print(f"{PROG}: uploaded {source.relative_to(ROOT)} to s3://{bucket}/{key}", file=sys.stderr)


def stage_event(client: Any, event: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` whose S3 objects exist in the local S3 (direct or SQS-wrapped)."""
    event = copy.deepcopy(event)
    for record in s3_records(event):
        stage_record(client, record)
    for sqs_record, inner in _sqs_inner_events(event):
        for record in s3_records(inner):
            stage_record(client, record)
        sqs_record["body"] = json.dumps(inner)
        # SQS's MD5 of the body follows the rewritten body, as for a message S3 really sent.
        sqs_record["md5OfBody"] = hashlib.md5(sqs_record["body"].encode("utf-8"), usedforsecurity=False).hexdigest()
    return event


def seed_model(client: Any) -> None:
    """Publish a model by running the retrain function on the sample upload."""
    event = stage_event(client, read_event(SEED_EVENT))
    retrain = load_handler("retrain")
    response = retrain.lambda_handler(event, context_for("retrain"))
    for result in response.get("results", []):
        if result.get("status") not in ("published", "duplicate"):
            raise InvokeError(f"seeding the model failed: {result.get('reason')} {result.get('error') or ''}".strip())
        print(f"{PROG}: seeded model {result.get('version')} (promoted: {result.get('promoted')})", file=sys.stderr)


# --------------------------------------------------------------------------- output


def render(response: Any, out: TextIO) -> None:
    if isinstance(response, dict) and "statusCode" in response:
        out.write(f"HTTP {response['statusCode']}\n")
        headers = dict(response.get("headers") or {})
        for name, values in (response.get("multiValueHeaders") or {}).items():
            headers[name] = ", ".join(str(v) for v in values)
        for name, value in headers.items():
            out.write(f"{name}: {value}\n")
        out.write("\n")
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", errors="replace")
        try:
            out.write(json.dumps(json.loads(body), indent=2) + "\n")
        except ValueError:
            out.write(body + ("\n" if body and not body.endswith("\n") else ""))
    else:
        out.write(json.dumps(response, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("function", help=f"one of: {', '.join(available_functions())}")
    parser.add_argument("event", type=Path, help="event JSON file (e.g. events/predict-single.json)")
    parser.add_argument("--local-s3", action="store_true", help="run against a moto S3 server on 127.0.0.1")
    parser.add_argument("--seed-model", action="store_true",
                        help="with --local-s3: train and publish a model first (retrain on the sample data)")
    parser.add_argument("--model-bucket", default=DEFAULT_MODEL_BUCKET,
                        help=f"with --local-s3, when MODEL_BUCKET is unset (default {DEFAULT_MODEL_BUCKET})")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable for the handler (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", help="drop the handler's logs and metrics")
    return parser.parse_args(argv)


def require_aws_credentials(function: str) -> None:
    """Fail early, in words, when the handler would reach real S3 without credentials."""
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        raise InvokeError(
            f"the {function} function reads and writes S3, and no AWS credentials were found. "
            f"Add --local-s3 to run it against a local S3 (make invoke FUNCTION={function} EVENT=... "
            "ARGS=--local-s3), or configure credentials (aws configure / AWS_PROFILE) to use real buckets.")


def run(args: argparse.Namespace, out: TextIO) -> int:
    if args.function not in available_functions():
        raise InvokeError(f"unknown function {args.function!r}; choose from {', '.join(available_functions())}")
    event = read_event(args.event)
    if args.seed_model and not args.local_s3:
        raise InvokeError("--seed-model needs --local-s3")
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvokeError(f"--env expects NAME=VALUE, got {item!r}")
        os.environ[name] = value
    os.environ.setdefault("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    os.environ.setdefault("AWS_DEFAULT_REGION", os.environ["AWS_REGION"])
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", f"virality-{args.function}")
    os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Virality")
    ensure_library_importable()

    if not args.local_s3 and (args.function == "retrain" or os.environ.get("MODEL_BUCKET")):
        require_aws_credentials(args.function)

    with contextlib.ExitStack() as stack:
        if args.local_s3:
            client = stack.enter_context(local_s3(args.model_bucket))
            event = stage_event(client, event)
            if args.seed_model:
                seed_model(client)
        handler = load_handler(args.function)
        try:
            response = handler.lambda_handler(event, context_for(args.function))
        except Exception as exc:  # what Lambda reports for a failed invocation
            out.write(json.dumps({"errorType": type(exc).__name__, "errorMessage": str(exc)}, indent=2) + "\n")
            return 1
    render(response, out)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = sys.stdout
    # Powertools binds its log stream when the library is first imported: route logs and EMF
    # metrics to stderr (or nowhere) so stdout holds only the response.
    sink: TextIO = open(os.devnull, "w") if args.quiet else sys.stderr  # noqa: SIM115
    try:
        with contextlib.redirect_stdout(sink):
            return run(args, out)
    except InvokeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if sink is not sys.stderr:
            sink.close()


if __name__ == "__main__":
    sys.exit(main())

