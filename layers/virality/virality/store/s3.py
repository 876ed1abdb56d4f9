"""All S3 access: model versions, the ``latest.json`` pointer, idempotency claims.

Layout under ``prefix`` (default ``models/``)::

    <prefix><version>/ml-weights.json   the artifact (written once, never overwritten)
    <prefix><version>/report.txt        human-readable training report
    <prefix>latest.json                 pointer to the promoted version
    <prefix><version>/holdout.json      its test split: the gate's reference holdout while it is champion
    <prefix><version>/decision-<n>.json gate decision n (written before the pointer moves)
    <prefix><version>/promotion.json    final outcome of the promotion (written last)
    <prefix>_sources/<sha256>.json      claim (lease 0): which version an S3 event produces
    <prefix>_sources/<sha256>.lease-<n>.json / .release-<n>.json  takeovers of the claim

Every write is conditional: new objects use ``IfNoneMatch='*'`` and the
pointer moves with ``IfMatch=<etag read before>`` (or ``IfNoneMatch='*'``
when there is none), so concurrent writers never overwrite each other.
Nothing above this module touches boto3; the client is created lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from virality.artifact import ModelArtifact, dump_artifact, load_artifact
from virality.errors import (
    ArtifactValidationError,
    ModelNotFoundError,
    PointerConflictError,
    TrainingDataTooLargeError,
    TrainingSourceNotFoundError,
    VersionExistsError,
)

POINTER_NAME = "latest.json"
WEIGHTS_NAME = "ml-weights.json"
REPORT_NAME = "report.txt"
PROMOTION_NAME = "promotion.json"
CLAIMS_DIR = "_sources/"
DECISION_STEM = "decision-"
HOLDOUT_NAME = "holdout.json"

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_PRECONDITION = {"412", "PreconditionFailed", "ConditionalRequestConflict", "409"}


def storage_errors() -> tuple[type[BaseException], ...]:
    """The exception types a failed S3 call raises (for callers that must tell them from bugs).

    Imported on first use: botocore's exceptions module is part of the client import anyway.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def _is_client_error_in(exc: Exception, codes: set[str]) -> bool:
    """Whether ``exc`` is a botocore ``ClientError`` whose error code is one of ``codes``."""
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in codes


class Pointer(BaseModel):
    """Content of ``latest.json``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    version: str
    key: str = Field(description="key of the promoted version's ml-weights.json")
    sha256: str | None = Field(None, description="sha256 of the ml-weights.json bytes")
    trainedAt: str | None = None
    promotedAt: str | None = None
    metrics: dict[str, Any] | None = None
    previous: str | None = Field(None, description="version the pointer named before")
    reason: str | None = None
    decision: int | None = Field(None, description="attempt number of the gate decision that moved it here")


@dataclass(frozen=True, slots=True)
class PointerState:
    pointer: Pointer
    etag: str


@dataclass(frozen=True, slots=True)
class _BrokenPointer:
    pointer: None
    etag: str


@dataclass(slots=True)
class SourceObject:
    """A training object read from S3."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    body: bytes
    metadata: dict[str, str]

    def take_body(self) -> bytes:
        """The body, leaving ``b""`` here: a reader given the only reference can free it once parsed."""
        body, self.body = self.body, b""
        return body


ClientFactory = Callable[[], Any]


def default_client_factory() -> Any:
    """A new S3 client (credentials, region and ``AWS_ENDPOINT_URL_S3`` from the environment).

    ``boto3.client("s3")`` is a thin wrapper over exactly this call; going to
    botocore directly skips importing boto3, a large share of every cold start
    (docs/benchmarks.md, cold start).
    """
    import botocore.session

    return botocore.session.get_session().create_client("s3")


class LazyClient:
    """One S3 client per container, created on first call (thread-safe), shared by a handler's records.

    Call it for the client; :meth:`reset` drops it (tests start a fresh moto backend).
    """

    def __init__(self, factory: ClientFactory | None = None) -> None:
        self._factory = factory or default_client_factory
        self._client: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._factory()
        return self._client

    def reset(self) -> None:
        self._client = None


class ModelRegistry:
    """Versions and pointer of one model store.

    Parameters
    ----------
    bucket : str
    prefix : str
        Ends with ``/`` (``""`` for the bucket root).
    client_factory : callable
        Returns a boto3 S3 client; called on first use only.
    """

    def __init__(self, bucket: str, prefix: str = "models/", client_factory: ClientFactory | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client_factory = client_factory or default_client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # ------------------------------------------------------------------ keys

    @property
    def pointer_key(self) -> str:
        return f"{self.prefix}{POINTER_NAME}"

    def weights_key(self, version: str) -> str:
        return f"{self.prefix}{version}/{WEIGHTS_NAME}"

    def report_key(self, version: str) -> str:
        return f"{self.prefix}{version}/{REPORT_NAME}"

    def claim_key(self, source_id: str) -> str:
        return f"{self.prefix}{CLAIMS_DIR}{hashlib.sha256(source_id.encode()).hexdigest()}.json"

    # ------------------------------------------------------------------ reads

    def _get(self, key: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)
        except Exception as exc:
            if _is_client_error_in(exc, _NOT_FOUND):
                raise ModelNotFoundError(f"s3://{self.bucket}/{key} does not exist") from None
            raise

    def read_pointer(self) -> PointerState | None:
        """The current pointer and its ETag, or None when nothing is published."""
        try:
            obj = self._get(self.pointer_key)
        except ModelNotFoundError:
            return None
        body = obj["Body"].read()
        try:
            pointer = Pointer.model_validate_json(body)
        except ValidationError as exc:
            raise ArtifactValidationError(f"s3://{self.bucket}/{self.pointer_key}: invalid pointer ({exc.errors()[0]['msg']})") from None
        return PointerState(pointer, obj["ETag"])

    def read_pointer_lenient(self) -> PointerState | _BrokenPointer | None:
        """Like :meth:`read_pointer`, but a corrupt pointer yields its ETag with ``pointer=None``
        (so a writer can still replace it conditionally)."""
        try:
            return self.read_pointer()
        except ArtifactValidationError:
            etag = self.pointer_etag()
            return None if etag is None else _BrokenPointer(None, etag)

    def pointer_etag(self) -> str | None:
        """ETag of the pointer (HEAD: no body transferred), None when absent."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.pointer_key)["ETag"]
        except Exception as exc:
            if _is_client_error_in(exc, _NOT_FOUND):
                return None
            raise

    def load_key(self, key: str, expected_sha256: str | None = None) -> tuple[ModelArtifact, str]:
        """Load and validate the artifact at ``key``; returns it and the sha256 of its bytes."""
        body = self._get(key)["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise ArtifactValidationError(f"s3://{self.bucket}/{key}: sha256 {digest[:12]}... does not match "
                                          f"the pointer's {expected_sha256[:12]}...")
        return load_artifact(body, source=f"s3://{self.bucket}/{key}"), digest

    def list_versions(self) -> list[str]:
        """Published versions, oldest first (version ids sort in creation order)."""
        versions: set[str] = set()
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                rest = item["Key"][len(self.prefix):]
                if rest.endswith("/" + WEIGHTS_NAME) and rest.count("/") == 1:
                    versions.add(rest.split("/", 1)[0])
        return sorted(versions)

    # ------------------------------------------------------------------ writes

    def _put_new(self, key: str, body: bytes, content_type: str) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                                   IfNoneMatch="*")
        except Exception as exc:
            if _is_client_error_in(exc, _PRECONDITION):
                raise VersionExistsError(f"s3://{self.bucket}/{key} already exists; not overwritten") from None
            raise

    def publish(self, artifact: ModelArtifact, report: str) -> tuple[str, str]:
        """Write a new version (report first, weights last, both write-once).

        The weights object is written last: a version is visible (listed,
        loadable) only once it is complete.

        Returns
        -------
        key, sha256 : the weights key and the sha256 of its bytes.
        """
        body = dump_artifact(artifact)
        # An existing report was left by an earlier attempt at this version that failed before the weights.
        with contextlib.suppress(VersionExistsError):
            self._put_new(self.report_key(artifact.modelVersion), report.encode(), "text/plain; charset=utf-8")
        key = self.weights_key(artifact.modelVersion)
        self._put_new(key, body, "application/json")
        return key, hashlib.sha256(body).hexdigest()

    def write_pointer(self, pointer: Pointer, expected_etag: str | None) -> str:
        """Move the pointer if it still has ``expected_etag`` (None: if it does not exist).

        Raises
        ------
        PointerConflictError
            Somebody else moved it first: re-read and decide again.
        """
        kwargs = {"IfMatch": expected_etag} if expected_etag else {"IfNoneMatch": "*"}
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self.pointer_key, ContentType="application/json",
                Body=pointer.model_dump_json(exclude_none=True, indent=2).encode(), **kwargs)
        except Exception as exc:
            if _is_client_error_in(exc, _PRECONDITION | {"NoSuchKey", "404"}):
                raise PointerConflictError("the model pointer changed concurrently") from None
            raise
        return response["ETag"]

    # ------------------------------------------------------------------ write-once JSON records

    def put_json_once(self, key: str, doc: dict[str, Any]) -> bool:
        """Write ``doc`` at ``key`` unless something is there already; True when this call wrote it."""
        try:
            self._put_new(key, json.dumps(doc, sort_keys=True).encode(), "application/json")
            return True
        except VersionExistsError:
            return False

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key``, or None when absent.

        Raises
        ------
        ArtifactValidationError
            The object is not a JSON object (a damaged record is never guessed at).
        """
        try:
            body = self._get(key)["Body"].read()
        except ModelNotFoundError:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ArtifactValidationError(f"s3://{self.bucket}/{key}: not a JSON object")
        return doc

    # ------------------------------------------------------------------ idempotency claims (leases)

    def lease_key(self, source_id: str, n: int) -> str:
        """Lease ``n`` on an event: 0 is the claim itself, ``n >= 1`` a takeover after lease ``n - 1`` ended."""
        return self.claim_key(source_id) if n == 0 else self.claim_key(source_id)[:-5] + f".lease-{n}.json"

    def release_key(self, source_id: str, n: int) -> str:
        """Marker that the holder of lease ``n`` gave up (failed): the next delivery may take over at once."""
        return self.claim_key(source_id)[:-5] + f".release-{n}.json"

    def claim_source(self, source_id: str, version: str) -> str | None:
        """Record that ``source_id`` (bucket/key/version-or-etag) produces ``version``.

        Returns None when the claim is new, else the version an earlier
        delivery of the same event already claimed.
        """
        if self.put_json_once(self.claim_key(source_id), {"source": source_id, "version": version}):
            return None
        existing = self.get_json(self.claim_key(source_id)) or {}
        return str(existing["version"])

    # ------------------------------------------------------------------ per-version records

    def promotion_key(self, version: str) -> str:
        """Final outcome of ``version``'s promotion (written once, after the pointer moved or was left)."""
        return f"{self.prefix}{version}/{PROMOTION_NAME}"

    def decision_key(self, version: str, attempt: int) -> str:
        """Gate decision ``attempt`` of ``version`` (written once, before the pointer moves)."""
        return f"{self.prefix}{version}/{DECISION_STEM}{attempt}.json"

    def holdout_key(self, version: str) -> str:
        """The version's test split, kept as the reference holdout while it is the champion."""
        return f"{self.prefix}{version}/{HOLDOUT_NAME}"

    def record_promotion(self, version: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Write-once final outcome of ``version``; returns the stored one (an earlier writer's wins)."""
        if self.put_json_once(self.promotion_key(version), decision):
            return decision
        return self.get_json(self.promotion_key(version)) or decision

    def read_promotion(self, version: str) -> dict[str, Any] | None:
        return self.get_json(self.promotion_key(version))

    def version_exists(self, version: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.weights_key(version))
            return True
        except Exception as exc:
            if _is_client_error_in(exc, _NOT_FOUND):
                return False
            raise

    def pointer_history(self, since: str | None = None, limit: int = 200) -> list[Pointer]:
        """Pointer documents of every stored object version of ``latest.json`` (versioned bucket), newest first.

        ``since`` (ISO-8601 UTC) skips versions last modified more than five
        minutes (clock skew) before it. Unreadable versions are skipped. On an
        unversioned bucket this is only the current pointer.
        """
        from datetime import datetime, timedelta

        cutoff = None if since is None else datetime.fromisoformat(since.replace("Z", "+00:00")) - timedelta(minutes=5)
        found: list[tuple[Any, str]] = []
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.pointer_key):
            for item in page.get("Versions", []):
                if item["Key"] == self.pointer_key and (cutoff is None or item["LastModified"] >= cutoff):
                    found.append((item["LastModified"], item["VersionId"]))
        found.sort(reverse=True)
        out = []
        for _, vid in found[:limit]:
            kwargs = {} if vid in (None, "null") else {"VersionId": vid}
            try:
                out.append(Pointer.model_validate_json(self._get(self.pointer_key, **kwargs)["Body"].read()))
            except (ValidationError, ModelNotFoundError):
                continue
        return out


@dataclass(frozen=True, slots=True)
class SourceHead:
    """Size and identity of a training object, without its body."""

    size: int
    version_id: str | None
    etag: str
    metadata: dict[str, str]


def head_source(client: Any, bucket: str, key: str, version_id: str | None) -> SourceHead | None:
    """``HEAD`` a training object (exact version when given); None when it is missing or unreadable."""
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        head = client.head_object(**kwargs)
    except Exception as exc:
        if _is_client_error_in(exc, _NOT_FOUND | {"400", "403"}):
            return None
        raise
    return SourceHead(int(head.get("ContentLength", 0)), head.get("VersionId"), head["ETag"],
                      {k.lower(): v for k, v in (head.get("Metadata") or {}).items()})


def read_source(client: Any, bucket: str, key: str, version_id: str | None, max_bytes: int) -> SourceObject:
    """Read a training object (exact version when given), refusing oversize ones before download."""
    head = head_source(client, bucket, key, version_id)
    if head is None:
        raise TrainingSourceNotFoundError(f"s3://{bucket}/{key} does not exist"
                                          + (f" (version {version_id})" if version_id else ""))
    if head.size > max_bytes:
        raise TrainingDataTooLargeError(f"s3://{bucket}/{key} is {head.size} bytes; the limit is {max_bytes}")
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        obj = client.get_object(IfMatch=head.etag, **kwargs)
    except Exception as exc:
        if _is_client_error_in(exc, _NOT_FOUND):
            raise TrainingSourceNotFoundError(f"s3://{bucket}/{key} does not exist") from None
        raise
    body = obj["Body"].read(max_bytes + 1)
    if len(body) > max_bytes:
        raise TrainingDataTooLargeError(f"s3://{bucket}/{key} is larger than the limit of {max_bytes} bytes")
    return SourceObject(bucket, key, head.version_id or version_id, head.etag, body, head.metadata)


#: Bytes per read when hashing a training object: a big upload is streamed, never held.
HASH_CHUNK_BYTES = 8 * 1024 * 1024


def object_sha256(client: Any, bucket: str, key: str, version_id: str | None = None,
                  etag: str | None = None, chunk_bytes: int = HASH_CHUNK_BYTES) -> str:
    """SHA-256 of one S3 object's bytes, streamed in chunks (memory: one chunk).

    The same digest :func:`virality.data.datasets.load_training_data` records for
    the bytes it was given. ``version_id`` (or ``etag``, as ``IfMatch``) pins
    the exact object that was identified, so a concurrent overwrite fails
    the read instead of hashing other bytes.
    """
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    elif etag:
        kwargs["IfMatch"] = etag
    try:
        body = client.get_object(**kwargs)["Body"]
    except Exception as exc:
        if _is_client_error_in(exc, _NOT_FOUND):
            raise TrainingSourceNotFoundError(f"s3://{bucket}/{key} does not exist") from None
        raise
    digest = hashlib.sha256()
    for chunk in iter(lambda: body.read(chunk_bytes), b""):
        digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- calibration audit

AUDITS_DIR = "audits/"
AUDIT_WINDOWS_DIR = "audits/_windows/"


@dataclass(frozen=True, slots=True)
class ListedObject:
    """One current object of a listing."""

    key: str
    etag: str
    size: int
    last_modified: str       # ISO 8601 UTC


def list_objects_between(client: Any, bucket: str, prefix: str, since: Any, until: Any) -> list[ListedObject]:
    """Current objects under ``prefix`` whose LastModified lies in ``(since, until]`` (aware datetimes), by key."""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            modified = item["LastModified"]
            if since < modified <= until and not item["Key"].endswith("/"):
                out.append(ListedObject(item["Key"], item["ETag"], int(item["Size"]),
                                        modified.isoformat().replace("+00:00", "Z")))
    return sorted(out, key=lambda o: o.key)


class AuditStore(ModelRegistry):
    """The model registry plus the audit's write-once reports under ``<prefix>audits/``.

    ``<prefix>audits/<UTC timestamp>-<version>.json``   one audit report (never overwritten)
    ``<prefix>audits/_windows/<sha256>.json``          claim: which report a window of outcomes produced
    """

    def audit_report_key(self, timestamp: str, version: str) -> str:
        return f"{self.prefix}{AUDITS_DIR}{timestamp}-{version}.json"

    def audit_window_key(self, window_id: str) -> str:
        return f"{self.prefix}{AUDIT_WINDOWS_DIR}{hashlib.sha256(window_id.encode()).hexdigest()}.json"

    def claim_audit_window(self, window_id: str, report_key: str) -> str | None:
        """Record that ``window_id`` is reported at ``report_key``; None when new, else the earlier claim's key."""
        key = self.audit_window_key(window_id)
        body = json.dumps({"window": window_id, "report": report_key}).encode()
        try:
            self._put_new(key, body, "application/json")
            return None
        except VersionExistsError:
            return str(json.loads(self._get(key)["Body"].read())["report"])

    def write_audit_report(self, key: str, document: dict[str, Any]) -> None:
        """Write a report once.

        Raises
        ------
        VersionExistsError
            A report already exists at ``key``; it is not overwritten.
        """
        self._put_new(key, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode(), "application/json")

    def read_audit_report(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self._get(key)["Body"].read())
        except ModelNotFoundError:
            return None

    def list_audit_reports(self) -> list[str]:
        """Report keys, oldest first (timestamps sort in time order)."""
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                           Prefix=self.prefix + AUDITS_DIR):
            keys += [i["Key"] for i in page.get("Contents", []) if not i["Key"].startswith(
                self.prefix + AUDIT_WINDOWS_DIR)]
        return sorted(keys)
