"""Domain errors of the virality library.

Every error a user can cause derives from :class:`ViralityError`, so the
outermost edge (CLI, Lambda handlers) can turn it into a clear message
without a traceback, while genuine bugs still surface as such.
"""

from __future__ import annotations

from typing import Literal


class ViralityError(Exception):
    """Base class of every error the library raises on purpose."""


class DataValidationError(ViralityError, ValueError):
    """Training or input data is malformed.

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    row : int or None
        1-based line (CSV, JSON Lines) or 0-based array index (seed JSON)
        of the offending record, when there is one.
    column : str or None
        Name of the offending column / field, when there is one.
    """

    def __init__(self, message: str, *, row: int | None = None, column: str | None = None,
                 location: str | None = None) -> None:
        self.message = message
        self.row = row
        self.column = column
        self.location = location
        where = []
        if location:
            where.append(location)
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigurationError(ViralityError, ValueError):
    """A setting (environment variable, CLI option, training option) is invalid."""


class ArtifactValidationError(ViralityError, ValueError):
    """A model artifact (``ml-weights.json``) is malformed, inconsistent or tampered with."""


class ModelNotFoundError(ViralityError, LookupError):
    """No model is published (no pointer), or the named version does not exist."""


class PointerConflictError(ViralityError):
    """The model pointer changed between read and conditional write (optimistic concurrency)."""


class VersionExistsError(ViralityError):
    """A model object already exists at the key being published; it is never overwritten."""


class RetrainInProgressError(ViralityError):
    """Another delivery of the same event holds its lease and did not finish in time; retry later."""


class TrainingDataTooLargeError(ViralityError):
    """The training object is larger than the configured ``MAX_TRAINING_BYTES``."""


class TrainingSourceNotFoundError(ViralityError, LookupError):
    """The training object named by the event does not exist (deleted or wrong version)."""


class ConvergenceWarning(UserWarning):
    """The optimizer stopped at ``max_iter`` before reaching the gradient tolerance."""


class RequestValidationError(ViralityError, ValueError):
    """An API request is malformed; ``details`` name each offending field.

    Parameters
    ----------
    message : str
    details : list of {"field": str, "message": str}
    status : int
        HTTP status to answer with (400 syntax, 413 too large, 422 semantics).
    """

    def __init__(self, message: str, details: list[dict[str, str]] | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.status = status


class PointerIntegrityError(ArtifactValidationError):
    """``latest.json`` is unreadable, or its ``version``, its ``key`` and the artifact's ``modelVersion`` disagree."""


#: Errors that retrying the same training object cannot fix: reported, never retried.
TRAINING_DATA_ERRORS: tuple[type[ViralityError], ...] = (DataValidationError, TrainingDataTooLargeError,
                                                         TrainingSourceNotFoundError)

RetrainFailureKind = Literal["data", "in_progress", "retryable"]


def retrain_failure_kind(exc: BaseException) -> RetrainFailureKind:
    """How a failed retrain of one training object is handled.

    Returns
    -------
    ``"data"``
        The object can never train (invalid, too large, gone): reported, not
        retried; nothing was written.
    ``"in_progress"``
        Another delivery of the event holds its lease: nothing was written;
        retry later.
    ``"retryable"``
        Anything else (an S3 outage, a bug): reported, and delivered again.
    """
    if isinstance(exc, TRAINING_DATA_ERRORS):
        return "data"
    if isinstance(exc, RetrainInProgressError):
        return "in_progress"
    return "retryable"
