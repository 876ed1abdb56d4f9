"""One training upload -> a published version and, if it passes the gate, the pointer.

Delivery semantics (at-least-once S3 / SQS / Lambda-retry delivery)
------------------------------------------------------------------
Each event names its source exactly: ``bucket/key#versionId`` (or ``#etag``
on an unversioned bucket). After the file validated (bad data writes
nothing), a delivery **claims** that source id with a write-once object
(``<prefix>_sources/<sha256>.json``, ``IfNoneMatch='*'``) naming the version
id it will publish and a lease: the time by which its Lambda invocation is
certainly over (deadline + ``LEASE_MARGIN_SECONDS``). The lease holder alone
trains, publishes and gates, through :func:`virality.services.promotion.release`.

Another delivery of the same event finds the claim and never writes a model
object itself. It waits (polling, within its own time budget) until either:

* the version's final outcome exists: it reports ``duplicate`` with that
  outcome and writes nothing;
* the holder gave up (it failed and wrote ``.release-<n>``) or its lease ran
  out (it crashed or timed out): it **takes over** with the write-once lease
  ``n + 1`` (one winner) and finishes the same version: training again only
  if the weights were never published, and finishing a recorded decision
  rather than taking a new one (:mod:`virality.services.promotion`);
* its own time runs out first: it raises :class:`RetrainInProgressError`, so
  Lambda / SQS delivers it again later.

So one event yields at most one version, and that version exactly one
promotion decision, whatever the interleaving of duplicates, retries and
failed writes.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Annotated, Any

from virality.artifact import ModelArtifact, new_version_id, utc_now_iso
from virality.data.datasets import FileBytes, TrainingSet, load_training_data
from virality.errors import RetrainInProgressError
from virality.services.promotion import (
    FORCE_PROMOTE_METADATA,
    MAX_POINTER_ATTEMPTS,
    Candidate,
    PromotionPolicy,
    ReleaseOutcome,
    gate,
    headline,
    release,
)
from virality.services.training import TrainingConfig, train_model
from virality.store.base import ModelStore
from virality.store.s3 import SourceObject
from virality.structs import Record, described

__all__ = ["FORCE_PROMOTE_METADATA", "MAX_POINTER_ATTEMPTS", "PromotionPolicy", "RetrainSummary", "gate",
           "headline", "retrain", "wall_clock"]

#: Beyond the holder's deadline before its lease counts as ended (clock skew between containers).
LEASE_MARGIN_SECONDS = 30.0
#: Lease when the caller gives no deadline (longest Lambda timeout).
DEFAULT_LEASE_SECONDS = 900.0
#: A waiting duplicate stops this long before its own deadline (to report, and be retried).
WAIT_SAFETY_SECONDS = 5.0
POLL_FIRST_SECONDS = 0.05
POLL_MAX_SECONDS = 2.0

# Wall clock (leases are compared across containers) and sleep; tests substitute both.
_clock = time.time
_sleep = time.sleep


def wall_clock() -> float:
    """Seconds since the epoch, as leases are compared (``time.time`` unless a test substitutes it)."""
    return _clock()


class RetrainSummary(Record, frozen=True, kw_only=True):
    """What one record of a retrain event did (returned and logged: :func:`virality.structs.document`)."""

    status: Annotated[str, described("published | duplicate | ignored | failed | submitted (to Spark)")]
    sourceBucket: str | None = None
    sourceKey: str | None = None
    sourceVersion: str | None = None
    version: str | None = None
    modelKey: str | None = None
    promoted: bool = False
    reason: str
    rows: dict[str, int] | None = None
    metrics: dict[str, float] | None = None
    durationSeconds: float = 0.0
    error: str | None = None
    errorType: str | None = None
    jobRunId: Annotated[str | None, described("EMR Serverless job run training this upload (submitted)")] = None


@dataclass(frozen=True, slots=True)
class Lease:
    """This delivery's standing on an event: ``final`` set means another delivery finished it."""

    version: str
    number: int
    final: dict[str, Any] | None = None


def acquire_lease(registry: ModelStore, source_id: str, deadline: float | None) -> Lease:
    """Claim ``source_id``, take over an ended lease, or wait for the holder (module docstring).

    Raises
    ------
    RetrainInProgressError
        The holder is still within its lease when this delivery's time is up.
    """
    now = _clock()
    own_deadline = deadline if deadline is not None else now + DEFAULT_LEASE_SECONDS
    record = {"source": source_id, "version": new_version_id(), "claimedAt": utc_now_iso(),
              "leaseUntil": own_deadline + LEASE_MARGIN_SECONDS}
    if registry.put_json_once(registry.lease_key(source_id, 0), record):
        return Lease(str(record["version"]), 0)
    version = str((registry.get_json(registry.lease_key(source_id, 0)) or {})["version"])
    delay = POLL_FIRST_SECONDS
    number, holder = 0, None
    while True:
        final = registry.read_promotion(version)
        if final is not None:
            return Lease(version, -1, final)
        while (nxt := registry.get_json(registry.lease_key(source_id, number + 1))) is not None:
            number, holder = number + 1, nxt
        holder = holder or registry.get_json(registry.lease_key(source_id, 0)) or {}
        now = _clock()
        released = registry.get_json(registry.release_key(source_id, number)) is not None
        if released or now > float(holder.get("leaseUntil", 0)):
            takeover = {**record, "version": version, "takesOver": number, "claimedAt": utc_now_iso()}
            if registry.put_json_once(registry.lease_key(source_id, number + 1), takeover):
                return Lease(version, number + 1)
            continue                      # another delivery took over first: it is now the holder
        if now + delay > own_deadline - WAIT_SAFETY_SECONDS:
            raise RetrainInProgressError(f"{source_id} is being processed by another delivery (lease {number} "
                                         f"until {holder.get('leaseUntil')}); retry later")
        _sleep(delay)
        delay = min(delay * 2, POLL_MAX_SECONDS)


def release_lease(registry: ModelStore, source_id: str, lease: Lease, error: BaseException) -> None:
    """Best effort: tell the next delivery it may take over now (else it waits for the lease to end)."""
    with contextlib.suppress(Exception):
        registry.put_json_once(registry.release_key(source_id, lease.number),
                               {"version": lease.version, "releasedAt": utc_now_iso(),
                                "errorType": type(error).__name__})


def retrain(registry: ModelStore, source: SourceObject, config: TrainingConfig, policy: PromotionPolicy,
            *, deadline: float | None = None) -> RetrainSummary:
    """Validate, then claim -> train -> publish -> gate -> record one uploaded file.

    Validation comes first (bad data writes nothing); the claim is
    :func:`acquire_lease`, training :func:`train_or_reuse`, and publish, gate
    and record are :func:`virality.services.promotion.release`.

    Parameters
    ----------
    deadline : float or None
        Wall-clock time (``time.time()``) by which this invocation ends; bounds
        the lease it takes and how long it waits for another delivery.

    Raises
    ------
    DataValidationError
        The file is not valid training data (nothing is written).
    RetrainInProgressError
        Another delivery of this event is still working on it (nothing written).
    """
    started = time.perf_counter()
    source_id = f"{source.bucket}/{source.key}#{source.version_id or source.etag}"
    base: dict[str, Any] = {"sourceBucket": source.bucket, "sourceKey": source.key,
                            "sourceVersion": source.version_id}
    from virality.data.importers import (
        preset_loader,  # an export: x-amz-meta-preset or training-data/<preset>/...
    )

    preset = preset_loader(source.key, source.metadata)
    # The body is handed over (no reference left in `source`): the CSV/JSONL reader frees it once
    # parsed, so the file's 68 B/row are not part of the training peak (docs/spark.md, "Scaling").
    where = f"s3://{source.bucket}/{source.key}"
    if preset is not None:
        ts = preset(source.take_body(), where, test_fraction=config.test_fraction, seed=config.seed,
                    tiering=config.tiering)
    else:
        ts = load_training_data(FileBytes(source.take_body()), where, test_fraction=config.test_fraction,
                                seed=config.seed, tiering=config.tiering)
    rows = {"train": int(ts.train.X.shape[0]), "test": int(ts.test.X.shape[0])}
    force = source.metadata.get(FORCE_PROMOTE_METADATA, "").strip().lower() == "true"
    lease = acquire_lease(registry, source_id, deadline)
    delivery = _Delivery(registry, lease, rows, started, base)
    if lease.final is not None:
        return delivery.duplicate(lease.version, lease.final)
    try:
        artifact = train_or_reuse(delivery, ts, config)
        outcome = release(registry, Candidate(artifact, ts.test), policy, force=force)   # publish -> gate -> record
    except BaseException as exc:
        release_lease(registry, source_id, lease, exc)
        raise
    if outcome.finished_before:
        return delivery.duplicate(outcome.version, {"promoted": outcome.promoted, "reason": outcome.reason})
    return delivery.published(outcome)


@dataclass(frozen=True, slots=True)
class _Delivery:
    """One delivery of an event once it holds the lease (or found the event finished): what the steps share."""

    store: ModelStore
    lease: Lease
    rows: dict[str, int]
    started: float
    base: dict[str, Any]          # sourceBucket / sourceKey / sourceVersion of every summary

    def _seconds(self) -> float:
        return round(time.perf_counter() - self.started, 6)

    def duplicate(self, version: str, final: dict[str, Any]) -> RetrainSummary:
        return RetrainSummary(status="duplicate", version=version, modelKey=self.store.weights_key(version),
                              promoted=bool(final.get("promoted")),
                              reason=f"this event was already processed: {final.get('reason')}",
                              rows=self.rows, durationSeconds=self._seconds(), **self.base)

    def published(self, outcome: ReleaseOutcome) -> RetrainSummary:
        return RetrainSummary(status="published", version=outcome.version, modelKey=outcome.key,
                              promoted=outcome.promoted, reason=outcome.reason, rows=self.rows,
                              metrics=outcome.metrics or None, durationSeconds=self._seconds(), **self.base)


def train_or_reuse(delivery: _Delivery, ts: TrainingSet, config: TrainingConfig) -> ModelArtifact:
    """Step 2 (train): the lease's version, trained now, or as an earlier holder published it."""
    store, version = delivery.store, delivery.lease.version
    if store.version_exists(version):
        # A released/expired holder published it: those weights are the version (no second training).
        artifact, _ = store.load_key(store.weights_key(version))
        return artifact
    return train_model(ts, config, model_version=version).artifact
