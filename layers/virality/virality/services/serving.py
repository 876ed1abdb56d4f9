"""Which model the predict function serves, and when it looks for a new one.

The original kept the weights in a module-level cache loaded once per cold
start; :class:`ModelProvider` is that cache with three additions:

* ``MODEL_VERSION`` pins a version instead of following ``latest.json``;
* ``MODEL_REFRESH_SECONDS > 0`` lets a warm container HEAD the pointer at
  most that often and swap in a newly promoted model (one reference
  assignment, so a request sees either the old or the new model);
* when nothing is published, S3 cannot be reached, or the published artifact
  fails to load for any reason (validation, integrity, an unexpected error),
  the baseline bundled with the layer is served, named ``bundled-...`` in
  ``modelVersion``, and loading is retried later: at most every
  :data:`FALLBACK_RETRY_SECONDS`, and a pointer already refused is not read
  again until it changes (one HEAD per retry).

The pointer is trusted only when it is consistent: its ``version`` is a plain
version id, its ``key`` is exactly ``<MODEL_PREFIX><version>/ml-weights.json``
and the artifact's ``modelVersion`` is that version; anything else is a data
incident (logged as an error) and handled like a corrupt artifact.

What callers see of a failure is its *kind* (:func:`error_kind`); the details
(bucket, keys, messages) go to the logs only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from virality.artifact import load_artifact
from virality.config import PredictSettings
from virality.errors import ArtifactValidationError, ModelNotFoundError, PointerIntegrityError, ViralityError
from virality.ml.features import N_FEATURES
from virality.ml.model import ViralityModel
from virality.observability import logger
from virality.store.s3 import ModelRegistry, storage_errors

ModelSource = Literal["published", "pinned", "bundled"]

#: While serving the bundled fallback (nothing published yet, S3 unreachable, invalid
#: artifact), retry this often even when MODEL_REFRESH_SECONDS is 0, so a container recovers.
FALLBACK_RETRY_SECONDS = 60.0

#: A version id as the pointer may name it: one path segment, no traversal (``v2026...Z-1a2b3c4d``).
_VERSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

#: The kinds of load failure ``GET /model`` reports (``loadError`` / ``lastRefreshError``).
ERROR_KINDS = ("NotConfigured", "ModelNotFound", "StorageUnavailable", "InvalidPointer", "InvalidArtifact",
               "InternalError")


def error_kind(exc: BaseException) -> str:
    """The public name of a load failure; its details stay in the logs."""
    if isinstance(exc, PointerIntegrityError):
        return "InvalidPointer"
    if isinstance(exc, ArtifactValidationError):
        return "InvalidArtifact"
    if isinstance(exc, ModelNotFoundError):
        return "ModelNotFound"
    if isinstance(exc, storage_errors()):
        return "StorageUnavailable"
    return "InternalError"


def _is_data_incident(exc: BaseException) -> bool:
    """A published object that can never load (corrupt, inconsistent, crashing the loader), as opposed
    to an outage that may pass."""
    return isinstance(exc, ArtifactValidationError) or not isinstance(exc, (*storage_errors(), ViralityError))


def _log_failure(message: str, exc: BaseException, **extra: Any) -> None:
    detail = f"{type(exc).__name__}: {exc}"
    fields = {**extra, "error_kind": error_kind(exc), "error": detail}
    if not isinstance(exc, (*storage_errors(), ViralityError)):
        logger.exception(message, extra=fields)      # a bug or a hostile file: keep the traceback
    elif isinstance(exc, ArtifactValidationError):
        logger.error(message, extra=fields)          # a data incident
    else:
        logger.warning(message, extra=fields)        # an outage, or nothing published under that name


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model and where it came from."""

    model: ViralityModel
    source: ModelSource
    key: str | None = None
    pointer_etag: str | None = None
    load_error: str | None = None       # why the bundled model is served: an error kind (see error_kind)
    loaded_at: float = field(default_factory=time.time)


def load_bundled_model() -> ViralityModel:
    """The baseline model shipped inside the package (trained on synthetic data)."""
    data = resources.files("virality").joinpath("baseline/ml-weights.json").read_bytes()
    return ViralityModel(load_artifact(data, source="bundled baseline"))


class ModelProvider:
    """Loads the model on first use and refreshes it per the settings.

    Parameters
    ----------
    settings : PredictSettings
    registry : ModelRegistry or None
        None when no bucket is configured (always the bundled model).
    clock : callable
        Monotonic seconds; injectable for tests.
    """

    def __init__(self, settings: PredictSettings, registry: ModelRegistry | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.registry = registry
        self._clock = clock
        self._current: LoadedModel | None = None
        self._last_check = 0.0
        self.last_refresh_error: str | None = None     # an error kind (see error_kind)
        self._rejected_etag: str | None = None          # ETag of a pointer whose model failed to load

    @classmethod
    def from_settings(cls, settings: PredictSettings, client_factory: Callable[[], Any] | None = None
                      ) -> ModelProvider:
        registry = (ModelRegistry(settings.model_bucket, settings.model_prefix, client_factory)
                    if settings.model_bucket else None)
        return cls(settings, registry)

    # ------------------------------------------------------------------ public

    @property
    def loaded(self) -> LoadedModel | None:
        return self._current

    def get(self) -> LoadedModel:
        """The model to serve now (loads on first call; refreshes when due)."""
        current = self._current
        if current is None:
            self._current = current = self._load()
            self._last_check = self._clock()
            return current
        interval = self.settings.model_refresh_seconds
        if current.source == "bundled" and self.registry is not None:
            interval = min(interval, FALLBACK_RETRY_SECONDS) if interval > 0 else FALLBACK_RETRY_SECONDS
        if interval > 0 and self._clock() - self._last_check >= interval:
            self.refresh()
        return self._current  # type: ignore[return-value]

    def refresh(self) -> bool:
        """Check for a newer model now and swap it in. Never raises.

        Serving the bundled model: try a full load. Pinned: nothing to do.
        Published: HEAD the pointer; only when its ETag changed, read it and
        load the artifact it names. Returns True when another model was swapped in.
        """
        self._last_check = self._clock()
        current = self._current
        if current is None:
            self._current = self._load()
            return True
        if self.registry is None or current.source == "pinned":
            return False
        if current.source == "bundled":
            if self._rejected_etag is not None and not self._pointer_changed():
                return False        # the pointer we refused is still there: no need to read it again
            fresh = self._load()
            if fresh.source == "bundled":
                self._current = fresh       # same model; loadError now says why this attempt failed
                return False
            self._current = fresh
            return True
        state = None
        try:
            etag = self.registry.pointer_etag()
            if etag is None or etag == current.pointer_etag or etag == self._rejected_etag:
                return False        # unchanged, deleted (keep serving what we have) or already refused
            state = self._read_pointer()
            if state is None:
                return False
            model = self._load_pointed(state)
        except Exception as exc:        # never raises: whatever fails, the loaded model keeps serving
            if state is not None and _is_data_incident(exc):
                self._rejected_etag = state.etag
            self.last_refresh_error = error_kind(exc)
            _log_failure("model refresh failed; still serving the loaded model", exc,
                         model_version=current.model.version)
            return False
        self.last_refresh_error = None
        self._rejected_etag = None
        if model.version == current.model.version:
            self._current = LoadedModel(current.model, current.source, current.key, state.etag)
            return False
        self._current = LoadedModel(model, "published", state.pointer.key, state.etag)
        logger.info("swapped in a newly promoted model",
                    extra={"model_version": model.version, "previous_version": current.model.version})
        return True

    def _pointer_changed(self) -> bool:
        """Whether the pointer's ETag differs from the refused one (an S3 error counts as 'maybe': retry)."""
        assert self.registry is not None
        try:
            return self.registry.pointer_etag() != self._rejected_etag
        except Exception:
            return True

    def status(self) -> dict[str, Any]:
        """Where the served model came from; reads state only (call :meth:`get` first to load/refresh)."""
        current = self._current if self._current is not None else self.get()
        return {
            "source": current.source,
            "key": current.key,
            "loadError": current.load_error,
            "lastRefreshError": self.last_refresh_error,
            "refreshSeconds": self.settings.model_refresh_seconds,
            "pinnedVersion": self.settings.model_version,
        }

    # ------------------------------------------------------------------ loading

    def _bundled(self, reason: str, error: BaseException | None = None, kind: str | None = None) -> LoadedModel:
        model = load_bundled_model()
        if error is not None:
            # A published artifact that fails validation is a data incident (error); an unreachable
            # S3 is an availability one (warning); anything else is a bug or a hostile file (traceback).
            _log_failure("serving the bundled baseline model", error, reason=reason, model_version=model.version)
            kind = error_kind(error)
        else:
            logger.warning("serving the bundled baseline model", extra={"reason": reason, "error_kind": kind,
                                                                         "model_version": model.version})
        return LoadedModel(model, "bundled", None, None, kind)

    def _read_pointer(self) -> Any:
        """The pointer state (or None); an unreadable pointer is a :class:`PointerIntegrityError`."""
        assert self.registry is not None
        try:
            return self.registry.read_pointer()
        except PointerIntegrityError:
            raise
        except ArtifactValidationError as exc:
            raise PointerIntegrityError(str(exc)) from None

    def _load_pointed(self, state: Any) -> ViralityModel:
        """The model the pointer names, once the pointer, the key and the artifact agree."""
        assert self.registry is not None
        pointer = state.pointer
        expected_key = self.registry.weights_key(pointer.version)
        if not _VERSION_ID.fullmatch(pointer.version):
            raise PointerIntegrityError(f"pointer version {pointer.version!r} is not a version id")
        if pointer.key != expected_key:
            raise PointerIntegrityError(f"pointer for version {pointer.version!r} names key {pointer.key!r}, "
                                        f"not {expected_key!r}")
        artifact, _ = self.registry.load_key(pointer.key, pointer.sha256)
        # An original-format file carries no version of its own (it is named by its content).
        if artifact.source_kind != "legacy" and artifact.modelVersion != pointer.version:
            raise PointerIntegrityError(f"pointer names version {pointer.version!r} but {pointer.key} "
                                        f"holds modelVersion {artifact.modelVersion!r}")
        return _checked(ViralityModel(artifact))

    def _load(self) -> LoadedModel:
        if self.registry is None:
            return self._bundled("MODEL_BUCKET is not set", kind="NotConfigured")
        pinned = self.settings.model_version
        state = None
        try:
            if pinned:
                key = self.registry.weights_key(pinned)
                artifact, _ = self.registry.load_key(key)
                if artifact.source_kind != "legacy" and artifact.modelVersion != pinned:
                    raise ArtifactValidationError(f"{key} holds modelVersion {artifact.modelVersion!r}, "
                                                  f"not the pinned {pinned!r}")
                loaded = LoadedModel(_checked(ViralityModel(artifact)), "pinned", key)
            else:
                state = self._read_pointer()
                if state is None:
                    model = load_bundled_model()
                    logger.warning("no model published yet; serving the bundled baseline",
                                   extra={"model_version": model.version})
                    return LoadedModel(model, "bundled")
                loaded = LoadedModel(self._load_pointed(state), "published", state.pointer.key, state.etag)
        except Exception as exc:        # any failure to load a published model falls back, whatever raised it
            if state is not None and _is_data_incident(exc):
                self._rejected_etag = state.etag     # never load this pointer again until it changes
            return self._bundled("could not load the published model", exc)
        self._rejected_etag = None
        logger.info("model loaded", extra={"model_version": loaded.model.version, "source": loaded.source})
        return loaded


#: Corners of the unit cube every served model is tried on before it is swapped in.
_PROBES = [[0.0] * N_FEATURES, [1.0] * N_FEATURES, [0.5] * N_FEATURES]


def _checked(model: ViralityModel) -> ViralityModel:
    """``model``, after proving it answers finite numbers (validation bounds the parameters; this
    is the last line, so a model that would serve NaN or null is never swapped in)."""
    import numpy as np

    out = model.predict(np.array(_PROBES))
    rows = [model.predict_row(x) for x in _PROBES]
    if not (np.isfinite(out.probabilities).all() and np.isfinite(out.scores).all()
            and all(np.isfinite(probs).all() and np.isfinite(score) for probs, _, score in rows)):
        raise ArtifactValidationError(f"model {model.version!r} yields non-finite predictions")
    return model
