"""Fixtures for the integration tests, on top of the shared ones in ``tests/conftest.py``.

A trained artifact, a store that publishes versions and moves the pointer, an instrumented S3
client, a controllable clock and a one-line way to call the handler. The plain helpers they
build on are in :mod:`tests.integration.helpers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.integration.helpers import ApiResult, FakeClock, S3Recorder, Store, call
from virality_dev.fakeaws import MODEL_BUCKET


@pytest.fixture
def invoke(predict_app: ModuleType, lambda_context: Any) -> Callable[[dict[str, Any]], ApiResult]:
    """``invoke(event)`` -> :class:`ApiResult` through the freshly loaded predict handler."""
    return lambda event: call(predict_app, event, lambda_context)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def s3_recorder(s3: Any, monkeypatch: pytest.MonkeyPatch) -> S3Recorder:
    """Make the handler's lazily created S3 client an instrumented moto client."""
    import boto3

    import virality.store.s3

    recorder = S3Recorder()

    def factory() -> Any:
        recorder.clients_created += 1
        client = boto3.client("s3", region_name="us-east-1")
        client.meta.events.register("before-call.s3", recorder.hook)
        return client

    monkeypatch.setattr(virality.store.s3, "default_client_factory", factory)
    return recorder


@pytest.fixture(scope="session")
def base_artifact() -> Any:
    """One trained schema-2 artifact; versions are copies of it under other names."""
    from virality.services.training import train_file
    from virality_dev.synthetic import sample_csv

    return train_file(sample_csv(400, 11), "integration.csv").artifact


@pytest.fixture
def store(s3: Any, base_artifact: Any) -> Iterator[Store]:
    yield Store(s3, base_artifact)


@pytest.fixture
def model_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``model_env(MODEL_REFRESH_SECONDS="30", ...)``: point the handler at the test bucket."""

    def apply(**env: str) -> None:
        monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return apply
