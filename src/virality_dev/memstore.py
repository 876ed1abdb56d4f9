"""An in-memory model store with S3's semantics, for fast unit tests of the services.

:class:`MemoryStore` implements the five primitives of
:class:`virality.store.base.ModelStore` over a dict, as a *versioned* bucket
(template.yaml's buckets are): every write keeps its object version, ETags
are the quoted MD5 of the bytes (S3's for single-part uploads), conditional
writes check and store in one step under a lock (real S3 is atomic), and a
missing key is "not found". The protocol on top is the production code, so
a unit test exercises exactly what runs against S3; the contract test
(``tests/integration/test_store_contract.py``) runs the same assertions against
moto to keep the primitives honest.

Faults are injected per primitive (:meth:`MemoryStore.fail`) and raise a
botocore ``ClientError`` 500, the error S3 answers an outage with, so the
services classify them as they do in production. It lives in the dev
package: the Lambda layer ships only what the handlers import.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from virality.store.base import AuditModelStore, ObjectVersion, StoredObject

#: The primitives, as :meth:`MemoryStore.fail` and :attr:`MemoryStore.calls` name them.
OPERATIONS = ("read", "head", "write", "list", "versions")

Predicate = Callable[[str], bool]
Hook = Callable[[str, str], None]


def client_error(code: str = "InternalError", status: int = 500, operation: str = "PutObject") -> Exception:
    """The exception S3 raises for a failed call (botocore ``ClientError``)."""
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@dataclass(frozen=True, slots=True)
class _Version:
    version_id: str
    body: bytes
    etag: str
    content_type: str
    last_modified: datetime


class MemoryStore(AuditModelStore):
    """A versioned in-memory bucket behind the model-store protocol (module docstring).

    Parameters
    ----------
    bucket, prefix : str
        As for :class:`virality.store.s3.ModelRegistry`.
    clock : callable
        Returns the aware UTC datetime stamped as ``LastModified`` (default: now).
    """

    def __init__(self, bucket: str = "memory-models", prefix: str = "models/",
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(bucket, prefix)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._objects: dict[str, list[_Version]] = {}       # key -> versions, oldest first
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._faults: list[tuple[str, Predicate, Exception]] = []
        self._hooks: list[Hook] = []
        #: Every primitive call, ``(operation, key or prefix)``, in order.
        self.calls: list[tuple[str, str]] = []

    def uri(self, key: str) -> str:
        return f"memory://{self.bucket}/{key}"

    # ------------------------------------------------------------------ faults and hooks

    def fail(self, operation: str, predicate: Predicate = lambda key: True, error: Exception | None = None) -> None:
        """Make ``operation`` (one of :data:`OPERATIONS`) raise when ``predicate(key)`` holds (a 500 by default)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {OPERATIONS}")
        self._faults.append((operation, predicate, error or client_error()))

    def clear_faults(self) -> None:
        self._faults.clear()

    def before(self, hook: Hook) -> None:
        """Call ``hook(operation, key)`` before every primitive (e.g. to interleave another writer)."""
        self._hooks.append(hook)

    def _enter(self, operation: str, key: str) -> None:
        self.calls.append((operation, key))
        for hook in list(self._hooks):
            hook(operation, key)
        for op, predicate, error in self._faults:
            if op == operation and predicate(key):
                raise error

    # ------------------------------------------------------------------ primitives

    def _current(self, key: str) -> _Version | None:
        versions = self._objects.get(key)
        return versions[-1] if versions else None

    def _read(self, key: str, version_id: str | None = None) -> StoredObject | None:
        self._enter("read", key)
        with self._lock:
            if version_id is None:
                found = self._current(key)
            else:
                found = next((v for v in self._objects.get(key, []) if v.version_id == version_id), None)
        return None if found is None else StoredObject(found.body, found.etag)

    def _etag(self, key: str) -> str | None:
        self._enter("head", key)
        with self._lock:
            found = self._current(key)
        return None if found is None else found.etag

    def _write(self, key: str, body: bytes, content_type: str, *, if_match: str | None = None) -> str | None:
        self._enter("write", key)
        with self._lock:
            current = self._current(key)
            if (current is not None) if if_match is None else (current is None or current.etag != if_match):
                return None
            return self._store(key, body, content_type)

    def _keys(self, prefix: str) -> Iterator[str]:
        self._enter("list", prefix)
        yield from sorted(self.keys(prefix))

    def _versions(self, key: str) -> Iterator[ObjectVersion]:
        self._enter("versions", key)
        with self._lock:
            found = [ObjectVersion(v.version_id, v.last_modified) for v in self._objects.get(key, [])]
        yield from found

    def _store(self, key: str, body: bytes, content_type: str) -> str:
        etag = f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
        # Zero-padded counter: version ids sort in write order, as the history's tie-break needs.
        version = _Version(f"{next(self._ids):012d}", bytes(body), etag, content_type, self._clock())
        self._objects.setdefault(key, []).append(version)
        return etag

    # ------------------------------------------------------------------ for tests: what a plain put_object does

    def put_raw(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
        """Unconditional write (an operator's or attacker's ``put_object``), bypassing faults; returns the ETag."""
        with self._lock:
            return self._store(key, body, content_type)

    def body(self, key: str) -> bytes | None:
        """The current bytes at ``key`` (no fault, not recorded)."""
        with self._lock:
            found = self._current(key)
        return None if found is None else found.body

    def keys(self, prefix: str = "") -> set[str]:
        """Current keys under ``prefix`` (no fault, not recorded)."""
        with self._lock:
            return {k for k, v in self._objects.items() if k.startswith(prefix) and v}

    def write_counts(self, prefix: str = "") -> dict[str, int]:
        """Key -> how many times it was written (object versions kept)."""
        with self._lock:
            return {k: len(v) for k, v in self._objects.items() if k.startswith(prefix)}

    def writes(self) -> list[str]:
        """Keys of the recorded write calls, in order (refused ones included)."""
        return [key for op, key in self.calls if op == "write"]

    def snapshot(self) -> dict[str, Any]:
        """Everything stored, comparable before/after (key -> (version id, etag) per version)."""
        with self._lock:
            return {k: [(v.version_id, v.etag) for v in vs] for k, vs in self._objects.items()}
