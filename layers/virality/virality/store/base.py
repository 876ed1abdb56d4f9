"""The model store seam: the layout and write-once protocol of a model store, over five primitives.

Layout under ``prefix`` (default ``models/``)::

    <prefix><version>/ml-weights.json   the artifact (written once, never overwritten)
    <prefix><version>/report.txt        human-readable training report
    <prefix>latest.json                 pointer to the promoted version
    <prefix><version>/holdout.json      its test split: the gate's reference holdout while it is champion
    <prefix><version>/decision-<n>.json gate decision n (written before the pointer moves)
    <prefix><version>/promotion.json    final outcome of the promotion (written last)
    <prefix>_sources/<sha256>.json      claim (lease 0): which version an S3 event produces
    <prefix>_sources/<sha256>.lease-<n>.json / .release-<n>.json  takeovers of the claim
    <prefix>audits/...                  calibration audit reports (:class:`AuditModelStore`)

Every write is conditional: new objects are written only if absent (S3
``IfNoneMatch='*'``) and the pointer moves only if it still has the ETag read
before (``IfMatch``; only-if-absent when there is none), so concurrent
writers never overwrite each other.

Why an ABC with template methods rather than a ``typing.Protocol``
------------------------------------------------------------------
The services (serving, retraining, promotion, audit) depend on
:class:`ModelStore`. What makes a store correct is not its method list but
the protocol behind it: which key holds what, that a version is written
report-first and weights-last, that claims and records are write-once, that
the pointer is compare-and-swap. A Protocol would leave every backend to
write that again, and an in-memory fake written twice drifts from S3 in
exactly the places the tests care about. So, as Powertools'
``BasePersistenceLayer`` does for idempotency records, the protocol is
written once here over five primitives a backend implements
(:meth:`_read`, :meth:`_etag`, :meth:`_write`, :meth:`_keys`,
:meth:`_versions`), and a contract test
(``tests/integration/test_store_contract.py``) runs the same assertions against
the S3 backend under moto and the in-memory one. The backends:
:class:`virality.store.s3.ModelRegistry` (the only code that calls boto3) and
``virality_dev.memstore.MemoryStore`` (unit tests; not in the Lambda layer).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from virality.artifact import ModelArtifact, dump_artifact, load_artifact
from virality.errors import (
    ArtifactValidationError,
    ModelNotFoundError,
    PointerConflictError,
    VersionExistsError,
)
from virality.structs import Record, described, document

POINTER_NAME = "latest.json"
WEIGHTS_NAME = "ml-weights.json"
REPORT_NAME = "report.txt"
PROMOTION_NAME = "promotion.json"
CLAIMS_DIR = "_sources/"
DECISION_STEM = "decision-"
HOLDOUT_NAME = "holdout.json"
AUDITS_DIR = "audits/"
AUDIT_WINDOWS_DIR = "audits/_windows/"


class Pointer(Record, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Content of ``latest.json``. Fields a later writer adds are ignored, not refused."""

    version: str
    key: Annotated[str, described("key of the promoted version's ml-weights.json")]
    sha256: Annotated[str | None, described("sha256 of the ml-weights.json bytes")] = None
    trainedAt: str | None = None
    promotedAt: str | None = None
    metrics: dict[str, Any] | None = None
    previous: Annotated[str | None, described("version the pointer named before")] = None
    reason: str | None = None
    decision: Annotated[int | None, described("attempt number of the gate decision that moved it here")] = None

    @classmethod
    def from_json(cls, body: bytes) -> Pointer:
        """Raises ``msgspec.DecodeError`` (invalid JSON) or its subclass ``msgspec.ValidationError``."""
        try:
            return msgspec.json.decode(body, type=cls)
        except RecursionError:      # a hostile file nested past the recursion limit
            raise msgspec.DecodeError("JSON nested too deeply") from None

    def to_json(self) -> bytes:
        """The stored form: indented JSON, absent fields left out, a non-finite metric as null
        (so the file stays JSON that :meth:`from_json` reads)."""
        return msgspec.json.format(msgspec.json.encode(document(self)), indent=2)


@dataclass(frozen=True, slots=True)
class PointerState:
    pointer: Pointer
    etag: str


@dataclass(frozen=True, slots=True)
class _BrokenPointer:
    pointer: None
    etag: str


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a primitive read returns: the bytes and the ETag they had."""

    body: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class ObjectVersion:
    """One stored version of a key (a versioned bucket keeps every write)."""

    version_id: str | None
    last_modified: datetime      # aware, UTC


class ModelStore(ABC):
    """Versions, pointer, claims and records of one model store (module docstring).

    Parameters
    ----------
    bucket : str
    prefix : str
        Ends with ``/`` (``""`` for the bucket root).
    """

    def __init__(self, bucket: str, prefix: str = "models/") -> None:
        self.bucket = bucket
        self.prefix = prefix

    # ------------------------------------------------------------------ primitives (one backend each)

    @abstractmethod
    def _read(self, key: str, version_id: str | None = None) -> StoredObject | None:
        """The object at ``key`` (that stored version when given), None when it does not exist.

        Anything else that fails (an outage, a denied call) raises the backend's error unchanged.
        """

    @abstractmethod
    def _etag(self, key: str) -> str | None:
        """ETag of the object at ``key`` without its body (``HEAD``), None when it does not exist."""

    @abstractmethod
    def _write(self, key: str, body: bytes, content_type: str, *, if_match: str | None = None) -> str | None:
        """Conditional write; returns the new ETag, or None when the condition did not hold.

        ``if_match`` None: write only if nothing is at ``key``. Otherwise: only
        if the object at ``key`` exists and has that ETag. The check and the
        write are one atomic step.
        """

    @abstractmethod
    def _keys(self, prefix: str) -> Iterable[str]:
        """Keys of the current objects under ``prefix`` (any order)."""

    @abstractmethod
    def _versions(self, key: str) -> Iterable[ObjectVersion]:
        """Every stored version of exactly ``key`` (any order; only the current one when unversioned)."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """``key`` as a location for messages (``s3://bucket/key``)."""

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

    def lease_key(self, source_id: str, n: int) -> str:
        """Lease ``n`` on an event: 0 is the claim itself, ``n >= 1`` a takeover after lease ``n - 1`` ended."""
        return self.claim_key(source_id) if n == 0 else self.claim_key(source_id)[:-5] + f".lease-{n}.json"

    def release_key(self, source_id: str, n: int) -> str:
        """Marker that the holder of lease ``n`` gave up (failed): the next delivery may take over at once."""
        return self.claim_key(source_id)[:-5] + f".release-{n}.json"

    def promotion_key(self, version: str) -> str:
        """Final outcome of ``version``'s promotion (written once, after the pointer moved or was left)."""
        return f"{self.prefix}{version}/{PROMOTION_NAME}"

    def decision_key(self, version: str, attempt: int) -> str:
        """Gate decision ``attempt`` of ``version`` (written once, before the pointer moves)."""
        return f"{self.prefix}{version}/{DECISION_STEM}{attempt}.json"

    def holdout_key(self, version: str) -> str:
        """The version's test split, kept as the reference holdout while it is the champion."""
        return f"{self.prefix}{version}/{HOLDOUT_NAME}"

    # ------------------------------------------------------------------ reads

    def _get(self, key: str, version_id: str | None = None) -> StoredObject:
        obj = self._read(key, version_id)
        if obj is None:
            raise ModelNotFoundError(f"{self.uri(key)} does not exist")
        return obj

    def read_pointer(self) -> PointerState | None:
        """The current pointer and its ETag, or None when nothing is published."""
        obj = self._read(self.pointer_key)
        if obj is None:
            return None
        try:
            pointer = Pointer.from_json(obj.body)
        except msgspec.DecodeError as exc:
            raise ArtifactValidationError(f"{self.uri(self.pointer_key)}: invalid pointer ({exc})") from None
        return PointerState(pointer, obj.etag)

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
        return self._etag(self.pointer_key)

    def load_key(self, key: str, expected_sha256: str | None = None) -> tuple[ModelArtifact, str]:
        """Load and validate the artifact at ``key``; returns it and the sha256 of its bytes."""
        body = self._get(key).body
        digest = hashlib.sha256(body).hexdigest()
        if expected_sha256 and digest != expected_sha256:
            raise ArtifactValidationError(f"{self.uri(key)}: sha256 {digest[:12]}... does not match "
                                          f"the pointer's {expected_sha256[:12]}...")
        return load_artifact(body, source=self.uri(key)), digest

    def list_versions(self) -> list[str]:
        """Published versions, oldest first (version ids sort in creation order)."""
        versions: set[str] = set()
        for key in self._keys(self.prefix):
            rest = key[len(self.prefix):]
            if rest.endswith("/" + WEIGHTS_NAME) and rest.count("/") == 1:
                versions.add(rest.split("/", 1)[0])
        return sorted(versions)

    def version_exists(self, version: str) -> bool:
        return self._etag(self.weights_key(version)) is not None

    def pointer_history(self, since: str | None = None, limit: int = 200) -> list[Pointer]:
        """Pointer documents of every stored object version of ``latest.json`` (versioned bucket), newest first.

        ``since`` (ISO-8601 UTC) skips versions last modified more than five
        minutes (clock skew) before it. Unreadable versions are skipped. On an
        unversioned bucket this is only the current pointer.
        """
        cutoff = None if since is None else datetime.fromisoformat(since.replace("Z", "+00:00")) - timedelta(minutes=5)
        found = [(v.last_modified, v.version_id) for v in self._versions(self.pointer_key)
                 if cutoff is None or v.last_modified >= cutoff]
        found.sort(key=lambda item: (item[0], item[1] or ""), reverse=True)
        out = []
        for _, vid in found[:limit]:
            try:
                out.append(Pointer.from_json(
                    self._get(self.pointer_key, None if vid in (None, "null") else vid).body))
            except (msgspec.DecodeError, ModelNotFoundError):
                continue
        return out

    # ------------------------------------------------------------------ writes

    def _put_new(self, key: str, body: bytes, content_type: str) -> None:
        if self._write(key, body, content_type) is None:
            raise VersionExistsError(f"{self.uri(key)} already exists; not overwritten")

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
        etag = self._write(self.pointer_key, pointer.to_json(),
                           "application/json", if_match=expected_etag or None)
        if etag is None:
            raise PointerConflictError("the model pointer changed concurrently")
        return etag

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
        obj = self._read(key)
        if obj is None:
            return None
        try:
            doc = json.loads(obj.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise ArtifactValidationError(f"{self.uri(key)}: not a JSON object")
        return doc

    # ------------------------------------------------------------------ idempotency claims and records

    def claim_source(self, source_id: str, version: str) -> str | None:
        """Record that ``source_id`` (bucket/key/version-or-etag) produces ``version``.

        Returns None when the claim is new, else the version an earlier
        delivery of the same event already claimed.
        """
        if self.put_json_once(self.claim_key(source_id), {"source": source_id, "version": version}):
            return None
        existing = self.get_json(self.claim_key(source_id)) or {}
        return str(existing["version"])

    def record_promotion(self, version: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Write-once final outcome of ``version``; returns the stored one (an earlier writer's wins)."""
        if self.put_json_once(self.promotion_key(version), decision):
            return decision
        return self.get_json(self.promotion_key(version)) or decision

    def read_promotion(self, version: str) -> dict[str, Any] | None:
        return self.get_json(self.promotion_key(version))


class AuditModelStore(ModelStore):
    """The model store plus the audit's write-once reports under ``<prefix>audits/``.

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
            return str(json.loads(self._get(key).body)["report"])

    def write_audit_report(self, key: str, document: dict[str, Any]) -> None:
        """Write a report once.

        Raises
        ------
        VersionExistsError
            A report already exists at ``key``; it is not overwritten.
        """
        self._put_new(key, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode(), "application/json")

    def read_audit_report(self, key: str) -> dict[str, Any] | None:
        obj = self._read(key)
        return None if obj is None else json.loads(obj.body)

    def list_audit_reports(self) -> list[str]:
        """Report keys, oldest first (timestamps sort in time order)."""
        windows = self.prefix + AUDIT_WINDOWS_DIR
        return sorted(k for k in self._keys(self.prefix + AUDITS_DIR) if not k.startswith(windows))
