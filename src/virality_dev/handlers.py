"""The one way to load a Lambda handler outside Lambda: tests, the local API, scripts, benchmarks.

The handlers are packages (``functions/<name>/``, with ``app.py`` as SAM's ``Handler: app.lambda_handler``),
imported as ``functions.<name>.app`` from the repository root. :func:`load_handler` imports a *fresh*
module each time: module-level state (the cached model, Powertools' resolver) is per container, and
a fresh import is how a test or the local API starts a new one.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from virality.errors import ConfigurationError

#: The functions in template.yaml, by package name under ``functions/``.
FUNCTIONS = ("predict", "retrain", "audit")
REGION = "us-east-1"


def repo_root() -> Path:
    """The repository root (holding ``functions/``): ``$VIRALITY_REPO``, else found from this package.

    Raises
    ------
    ConfigurationError
        When neither location holds the handlers (e.g. an installed, non-editable package
        without ``VIRALITY_REPO``).
    """
    tried: list[str] = []
    env = os.environ.get("VIRALITY_REPO", "").strip()
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path(__file__).resolve().parents[2], Path.cwd()]  # src/virality_dev/handlers.py -> root
    for candidate in candidates:
        if (candidate / "functions" / "predict" / "app.py").is_file():
            return candidate
        tried.append(str(candidate))
    raise ConfigurationError("cannot find the Lambda handlers (functions/predict/app.py); looked in "
                             + ", ".join(tried) + ". Set VIRALITY_REPO to the repository root.")


def load_handler(function: str) -> ModuleType:
    """Import ``functions.<function>.app`` as a fresh module (a new "container").

    Parameters
    ----------
    function : str
        One of :data:`FUNCTIONS`.

    Returns
    -------
    module
        The handler module; ``module.lambda_handler(event, context)`` is what Lambda calls.
        A previously loaded module keeps working (its functions hold their own globals).
    """
    if function not in FUNCTIONS:
        raise ConfigurationError(f"no Lambda function {function!r}; expected one of {', '.join(FUNCTIONS)}")
    root = str(repo_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    name = f"functions.{function}.app"
    sys.modules.pop(name, None)
    try:
        return importlib.import_module(name)
    except BaseException:
        sys.modules.pop(name, None)
        raise


@dataclass
class LocalLambdaContext:
    """The attributes of ``LambdaContext`` the handlers and Powertools read."""

    function_name: str = "virality-predict-local"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_seconds: float = 15.0
    log_group_name: str = ""
    log_stream_name: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]local")
    _deadline: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self.log_group_name = self.log_group_name or f"/aws/lambda/{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
