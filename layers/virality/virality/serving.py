"""Which model the predict function serves, and when it looks for a new one.

The original kept the weights in a module-level cache loaded once per cold
start; :class:`ModelProvider` is that cache with three additions:

* ``MODEL_VERSION`` pins a version instead of following ``latest.json``;
* ``MODEL_REFRESH_SECONDS > 0`` lets a warm container HEAD the pointer at
  most that often and swap in a newly promoted model (one reference
  assignment, so a request sees either the old or the new model);
* when nothing is published, S3 cannot be reached, or the published artifact
  fails validation, the baseline bundled with the layer is served, named
  ``bundled-...`` in ``modelVersion``, and loading is retried later.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

from .artifact import load_artifact
from .config import PredictSettings
from .errors import ArtifactValidationError, ViralityError
from .model import ViralityModel
from .observability import logger
from .registry import ModelRegistry

ModelSource = Literal["published", "pinned", "bundled"]

#: While serving the bundled fallback (nothing published yet, S3 unreachable, invalid
#: artifact), retry this often even when MODEL_REFRESH_SECONDS is 0, so a container recovers.
FALLBACK_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model and where it came from."""

    model: ViralityModel
    source: ModelSource
    key: str | None = None
    pointer_etag: str | None = None
    load_error: str | None = None
    loaded_at: float = field(default_factory=time.time)


def load_bundled_model() -> ViralityModel:
    """The baseline model shipped inside the package (trained on synthetic data)."""
    data = resources.files("virality").joinpath("baseline/ml-weights.json").read_bytes()
    return ViralityModel(load_artifact(data, source="bundled baseline"))


def _s3_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ViralityError, BotoCoreError, ClientError)


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
        self.last_refresh_error: str | None = None

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
            fresh = self._load()
            if fresh.source == "bundled":
                return False
            self._current = fresh
            return True
        try:
            etag = self.registry.pointer_etag()
            if etag is None or etag == current.pointer_etag:
                return False        # unchanged (or deleted: keep serving what we have)
            state = self.registry.read_pointer()
            if state is None:
                return False
            artifact, _ = self.registry.load_key(state.pointer.key, state.pointer.sha256)
        except _s3_errors() as exc:
            self.last_refresh_error = f"{type(exc).__name__}: {exc}"
            # An invalid published artifact is a data incident (error); an S3 hiccup is not (warning).
            log = logger.error if isinstance(exc, ArtifactValidationError) else logger.warning
            log("model refresh failed; still serving the loaded model",
                extra={"model_version": current.model.version, "error": self.last_refresh_error})
            return False
        self.last_refresh_error = None
        if artifact.modelVersion == current.model.version:
            self._current = LoadedModel(current.model, current.source, current.key, state.etag)
            return False
        self._current = LoadedModel(ViralityModel(artifact), "published", state.pointer.key, state.etag)
        logger.info("swapped in a newly promoted model",
                    extra={"model_version": artifact.modelVersion, "previous_version": current.model.version})
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

    def _bundled(self, reason: str, error: BaseException | None = None) -> LoadedModel:
        model = load_bundled_model()
        detail = f"{type(error).__name__}: {error}" if error else None
        # A published artifact that fails validation is a data incident (error);
        # an unreachable S3 or a missing bucket setting is an availability one (warning).
        log = logger.error if isinstance(error, ArtifactValidationError) else logger.warning
        log("serving the bundled baseline model", extra={"reason": reason, "error": detail,
                                                         "model_version": model.version})
        return LoadedModel(model, "bundled", None, None, detail or reason)

    def _load(self) -> LoadedModel:
        if self.registry is None:
            return self._bundled("MODEL_BUCKET is not set")
        pinned = self.settings.model_version
        try:
            if pinned:
                key = self.registry.weights_key(pinned)
                artifact, _ = self.registry.load_key(key)
                loaded = LoadedModel(ViralityModel(artifact), "pinned", key)
            else:
                state = self.registry.read_pointer()
                if state is None:
                    model = load_bundled_model()
                    logger.warning("no model published yet; serving the bundled baseline",
                                   extra={"model_version": model.version})
                    return LoadedModel(model, "bundled")
                artifact, _ = self.registry.load_key(state.pointer.key, state.pointer.sha256)
                loaded = LoadedModel(ViralityModel(artifact), "published", state.pointer.key, state.etag)
        except _s3_errors() as exc:
            return self._bundled("could not load the published model", exc)
        logger.info("model loaded", extra={"model_version": loaded.model.version, "source": loaded.source})
        return loaded
