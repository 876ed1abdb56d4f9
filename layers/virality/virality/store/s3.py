"""All S3 access: the S3 backend of the model store, training sources, listings.

:class:`ModelRegistry` is the S3 backend of :class:`virality.store.base.ModelStore`:
the layout and the write-once protocol live there, over five primitives this
module implements with ``get_object`` / ``head_object`` / ``put_object``
(``IfNoneMatch='*'`` or ``IfMatch=<etag>``) / ``list_objects_v2`` /
``list_object_versions``. botocore's not-found and precondition answers are
translated here; any other S3 failure propagates as botocore raised it.
Nothing above this module touches boto3; the client is created lazily.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from virality.errors import (
    TrainingDataTooLargeError,
    TrainingSourceNotFoundError,
)
from virality.store.base import (
    AUDIT_WINDOWS_DIR,
    AUDITS_DIR,
    CLAIMS_DIR,
    DECISION_STEM,
    HOLDOUT_NAME,
    POINTER_NAME,
    PROMOTION_NAME,
    REPORT_NAME,
    WEIGHTS_NAME,
    AuditModelStore,
    ModelStore,
    ObjectVersion,
    Pointer,
    PointerState,
    StoredObject,
    _BrokenPointer,
)

__all__ = ["AUDITS_DIR", "AUDIT_WINDOWS_DIR", "CLAIMS_DIR", "DECISION_STEM", "HOLDOUT_NAME", "POINTER_NAME",
           "PROMOTION_NAME", "REPORT_NAME", "WEIGHTS_NAME", "AuditStore", "LazyClient", "ListedObject",
           "ModelRegistry", "Pointer", "PointerState", "SourceHead", "SourceObject", "_BrokenPointer",
           "default_client_factory", "head_source", "list_objects_between", "read_source", "storage_errors"]

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
    """One AWS client per container (S3, EMR Serverless), created on first call (thread-safe), shared by a handler's records.

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


class ModelRegistry(ModelStore):
    """The model store on S3 (:class:`virality.store.base.ModelStore` over one bucket and prefix).

    Parameters
    ----------
    bucket : str
    prefix : str
        Ends with ``/`` (``""`` for the bucket root).
    client_factory : callable
        Returns a boto3 S3 client; called on first use only.
    """

    def __init__(self, bucket: str, prefix: str = "models/", client_factory: ClientFactory | None = None) -> None:
        super().__init__(bucket, prefix)
        self._client = LazyClient(client_factory)

    @property
    def client(self) -> Any:
        return self._client()

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ------------------------------------------------------------------ primitives

    def _read(self, key: str, version_id: str | None = None) -> StoredObject | None:
        kwargs = {} if version_id is None else {"VersionId": version_id}
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=key, **kwargs)
        except Exception as exc:
            if _is_client_error_in(exc, _NOT_FOUND):
                return None
            raise
        return StoredObject(obj["Body"].read(), obj["ETag"])

    def _etag(self, key: str) -> str | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        except Exception as exc:
            if _is_client_error_in(exc, _NOT_FOUND):
                return None
            raise

    def _write(self, key: str, body: bytes, content_type: str, *, if_match: str | None = None) -> str | None:
        condition = {"IfMatch": if_match} if if_match else {"IfNoneMatch": "*"}
        # IfMatch on a key that is gone answers 404: the state it was read in no longer holds either.
        refused = _PRECONDITION | {"NoSuchKey", "404"} if if_match else _PRECONDITION
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                                              **condition)
        except Exception as exc:
            if _is_client_error_in(exc, refused):
                return None
            raise
        return response["ETag"]

    def _keys(self, prefix: str) -> Iterator[str]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _versions(self, key: str) -> Iterator[ObjectVersion]:
        for page in self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key):
            for item in page.get("Versions", []):
                if item["Key"] == key:
                    yield ObjectVersion(item["VersionId"], item["LastModified"])


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


class AuditStore(AuditModelStore, ModelRegistry):
    """The S3 model store plus the audit's write-once reports (:class:`virality.store.base.AuditModelStore`)."""
