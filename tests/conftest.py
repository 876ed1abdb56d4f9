"""Shared fixtures: the fake AWS environment, moto, fresh handler modules, a Lambda context.

The builders themselves (events, handler loader, fake environment) live in the dev package
(:mod:`virality_dev.events`, :mod:`virality_dev.handlers`, :mod:`virality_dev.fakeaws`), shared with
the local API, the demo and the scripts; this file only turns them into fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from virality_dev.fakeaws import FAKE_AWS_ENV, HANDLER_SETTINGS, moto_s3
from virality_dev.handlers import LocalLambdaContext, load_handler


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials so nothing can ever reach a real account; a clean handler environment."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in (*HANDLER_SETTINGS, "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def predict_app() -> Iterator[ModuleType]:
    """A freshly imported predict handler module (a new 'container')."""
    module = load_handler("predict")
    yield module
    module.reset()


@pytest.fixture
def retrain_app() -> Iterator[ModuleType]:
    module = load_handler("retrain")
    yield module
    module.reset()


@pytest.fixture
def lambda_context() -> Any:
    """The dev package's stand-in for ``LambdaContext`` (what the local API and invoke script use too)."""
    return LocalLambdaContext(function_name="test-function", timeout_seconds=300.0)


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto S3 (started before any client exists) with versioned data and model buckets."""
    with moto_s3() as client:
        yield client
