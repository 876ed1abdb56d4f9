"""Logger, Metrics and (only when tracing is on) Tracer, created in one place.

Constructing Powertools' ``Tracer`` imports the X-Ray SDK (the largest single
import of a cold start, docs/benchmarks.md) even with tracing disabled, so :func:`tracer` builds it only when
tracing is enabled: inside Lambda and ``POWERTOOLS_TRACE_DISABLED`` not true.
Otherwise the capture decorators are identity functions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics

F = TypeVar("F", bound=Callable[..., Any])

# Error responses publish their metric with single_metric (it carries an ErrorKind dimension),
# which leaves the shared Metrics object empty for that invocation: expected, not worth a warning.
warnings.filterwarnings("ignore", message="No application metrics to publish", category=UserWarning)

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "virality"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Virality"),
                  service=os.environ.get("POWERTOOLS_SERVICE_NAME", "virality"))


def tracing_enabled() -> bool:
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes")
    return "AWS_LAMBDA_FUNCTION_NAME" in os.environ and "AWS_SAM_LOCAL" not in os.environ and not disabled


@cache
def tracer() -> Any | None:
    """The Powertools Tracer, or None when tracing is off (nothing imported)."""
    if not tracing_enabled():
        return None
    from aws_lambda_powertools import Tracer

    return Tracer()


def capture_lambda_handler(func: F) -> F:
    t = tracer()
    return func if t is None else t.capture_lambda_handler(func)


def capture_method(func: F) -> F:
    t = tracer()
    return func if t is None else t.capture_method(func)
