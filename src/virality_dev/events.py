"""The one place that builds Lambda events outside AWS: tests, the local API, the demo, scripts.

Every builder starts from a checked-in event under ``events/`` (made by ``sam local generate-event``),
so the shapes are the ones API Gateway, S3 and SQS send.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote, urlsplit

from virality_dev.handlers import REGION, repo_root


@cache
def _template(name: str) -> str:
    return (repo_root() / "events" / name).read_text()


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of ``events/<name>``."""
    return json.loads(_template(name))


def api_event(method: str, target: str, body: Any = None, *, raw_body: bytes | str | None = None,
              base64_body: bool = True, headers: Iterable[tuple[str, str]] | Mapping[str, str] | None = None,
              stage: str = "prod", source_ip: str | None = None, host: str | None = None,
              request_id: str | None = None) -> dict[str, Any]:
    """An API Gateway REST proxy event (resource ``/{proxy+}``) for one request.

    Parameters
    ----------
    method, target : str
        HTTP method and request target (path and query string, as on the request line).
    body : JSON-serialisable, optional
        Sent as ``json.dumps(body)``. ``raw_body`` sends bytes/text as they are instead.
    base64_body : bool
        Encode a non-empty body as API Gateway does for binary-safe proxying
        (``isBase64Encoded: true``); an empty body is ``null``.
    headers : optional
        Replace the template's headers (repeated names go to ``multiValueHeaders``; API Gateway keeps
        the last value in ``headers``). ``None`` keeps the ``sam local generate-event`` headers.
    """
    event = load_event("predict-single.json")
    parts = urlsplit(target)
    path = unquote(parts.path) or "/"
    method = method.upper()
    event["httpMethod"] = method
    event["path"] = path
    event["pathParameters"] = {"proxy": path.lstrip("/")} if path.strip("/") else None
    context = event["requestContext"]
    context["httpMethod"] = method
    context["path"] = f"/{stage}{path}"
    context["stage"] = stage
    if request_id is not None:
        context["requestId"] = context["extendedRequestId"] = request_id
    if headers is not None:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in pairs:
            single[name] = value
            multi.setdefault(name, []).append(value)
        event["headers"], event["multiValueHeaders"] = single or None, multi or None
        context["identity"]["userAgent"] = next((v for k, v in reversed(pairs) if k.lower() == "user-agent"), None)
        now = datetime.now(UTC)
        context["requestTime"] = now.strftime("%d/%b/%Y:%H:%M:%S +0000")
        context["requestTimeEpoch"] = int(now.timestamp() * 1000)
        context["requestId"] = context["extendedRequestId"] = request_id or str(uuid.uuid4())
    if source_ip is not None:
        context["identity"]["sourceIp"] = source_ip
    if host is not None:
        context["domainName"] = host
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = value
        multi_query.setdefault(name, []).append(value)
    event["queryStringParameters"] = query or None
    event["multiValueQueryStringParameters"] = multi_query or None
    if raw_body is None and body is not None:
        raw_body = json.dumps(body)
    raw = raw_body.encode() if isinstance(raw_body, str) else raw_body
    if raw is None or (not raw and headers is not None):
        event["body"], event["isBase64Encoded"] = None, False
    elif base64_body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode("ascii"), True
    else:
        event["body"], event["isBase64Encoded"] = raw.decode(), False
    return event


def s3_put_event(bucket: str, key: str, *, encoded: bool = False, size: int | None = None, etag: str = "",
                 version_id: str | None = None, region: str = REGION) -> dict[str, Any]:
    """An S3 ``ObjectCreated:Put`` notification (``events/retrain-s3-put.json``'s shape).

    ``key`` is the object key; S3 sends it URL-encoded (space -> ``+``), which this does unless
    ``encoded`` says the key is given as it appears in the event already.
    """
    event = load_event("retrain-s3-put.json")
    record = event["Records"][0]
    now = datetime.now(UTC)
    record["awsRegion"] = region
    record["eventTime"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    obj = record["s3"]["object"]
    obj.update(key=key if encoded else quote_plus(key, safe="/"), eTag=etag.strip('"'),
               sequencer=f"{time.time_ns():X}"[-18:])
    if size is not None:
        obj["size"] = size
    if version_id:
        obj["versionId"] = version_id
    else:
        obj.pop("versionId", None)
    return event


def sqs_wrap(s3_event: dict[str, Any]) -> dict[str, Any]:
    """The same notification as it arrives through S3 -> SQS -> Lambda (``events/retrain-sqs-message.json``)."""
    event = load_event("retrain-sqs-message.json")
    record = event["Records"][0]
    record["body"] = json.dumps(s3_event)
    event["Records"] = [record]
    return event
