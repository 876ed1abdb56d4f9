"""Helpers for the predict-function integration tests (plain code; the fixtures are in conftest.py).

A way to publish versions and move the pointer, an S3 client that records (and can fail) every call
the handler makes, a controllable clock, and a one-line way to call the handler.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from virality.structs import replace
from virality_dev.fakeaws import MODEL_BUCKET


@dataclass
class ApiResult:
    """A decoded API Gateway proxy response."""

    status: int
    body: Any
    headers: dict[str, str]
    raw: dict[str, Any]


def call(app: ModuleType, event: dict[str, Any], context: Any) -> ApiResult:
    """Run ``event`` through ``app.lambda_handler`` and decode the proxy response."""
    response = app.lambda_handler(event, context)
    text = response.get("body") or ""
    if response.get("isBase64Encoded"):
        text = base64.b64decode(text).decode()
    headers: dict[str, str] = {k: v for k, v in (response.get("headers") or {}).items()}
    for name, values in (response.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(values)
    body = json.loads(text) if text else None
    return ApiResult(response["statusCode"], body, headers, response)


@dataclass
class FakeClock:
    """Monotonic seconds under the test's control (``provider()._clock``)."""

    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class S3Recorder:
    """Records every S3 operation the handler's client makes; ``outage`` makes them fail."""

    calls: list[str] = field(default_factory=list)
    clients_created: int = 0
    outage: bool = False

    def hook(self, event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        self.calls.append(operation)
        if self.outage:
            from botocore.exceptions import EndpointConnectionError

            raise EndpointConnectionError(endpoint_url="https://s3.us-east-1.amazonaws.com")

    def take(self) -> list[str]:
        """The calls since the last ``take`` (and forget them)."""
        out, self.calls = self.calls, []
        return out


def version_id(n: int) -> str:
    return f"v20261129T1000{n:02d}000000Z-{n:08x}"


@dataclass
class Store:
    """Test-side writer of the model bucket (its own, uninstrumented client)."""

    client: Any
    base: Any
    bucket: str = MODEL_BUCKET
    prefix: str = "models/"

    @property
    def registry(self) -> Any:
        from virality.store.s3 import ModelRegistry

        return ModelRegistry(self.bucket, self.prefix, lambda: self.client)

    def artifact(self, version: str, **update: Any) -> Any:
        return replace(self.base, modelVersion=version, **update)

    def publish(self, version: str, **update: Any) -> tuple[str, str]:
        return self.registry.publish(self.artifact(version, **update), f"report of {version}\n")

    def put_raw(self, version: str, body: bytes) -> tuple[str, str]:
        """Store arbitrary bytes as a version's ml-weights.json (bypassing validation)."""
        key = self.registry.weights_key(version)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        return key, hashlib.sha256(body).hexdigest()

    def point(self, version: str, key: str, sha256: str | None) -> str:
        """Move ``latest.json`` to ``key`` (conditionally, as the retrain function does)."""
        from virality.store.s3 import Pointer

        state = self.registry.read_pointer_lenient()
        etag = state.etag if state is not None else None
        return self.registry.write_pointer(Pointer(version=version, key=key, sha256=sha256), etag)

    def promote(self, version: str, **update: Any) -> str:
        key, sha = self.publish(version, **update)
        self.point(version, key, sha)
        return key

    def put_pointer_bytes(self, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"{self.prefix}latest.json", Body=body)
