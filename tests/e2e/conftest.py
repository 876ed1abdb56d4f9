"""End-to-end fixtures: a real local stack (moto's S3 server + the local HTTP API) per test module.

Everything listens on 127.0.0.1 only; every server started here is stopped
(and its port closed) when the module finishes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from virality_dev import localapi
from virality_dev.fakeaws import FAKE_AWS_ENV

ROOT = Path(__file__).resolve().parents[2]
REFRESH_SECONDS = 0.5


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides the root ``aws_env``: fake credentials, but keep the variables a running stack set.

    The root fixture deletes ``AWS_ENDPOINT_URL_S3``/``MODEL_BUCKET``... before every test; the
    module-scoped stack below sets them for its whole lifetime (and restores them when it stops).
    """
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@dataclass
class Stack:
    s3: localapi.LocalS3
    api: localapi.LocalApi
    first: dict[str, Any]
    versions: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.api.url


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """LocalS3 with the data and model buckets, a model trained through the retrain handler,
    and the predict handler behind LocalApi (MODEL_REFRESH_SECONDS=0.5)."""
    with localapi.LocalS3([localapi.DATA_BUCKET, localapi.MODEL_BUCKET]) as s3:
        first = localapi.publish_sample_model(s3)
        env = {"MODEL_BUCKET": localapi.MODEL_BUCKET, "MODEL_PREFIX": "models/",
               "MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS), "MODEL_VERSION": None,
               "MAX_BATCH": None, "MAX_BODY_BYTES": None}
        with localapi.LocalApi(env=env, quiet=True) as api:
            api_port = api.port
            yield Stack(s3, api, first, [first["version"]])
    for port in (s3.port, api_port):
        assert not localapi.port_is_open("127.0.0.1", port), f"port {port} still open after the stack stopped"


@pytest.fixture
def http() -> Any:
    """``http(method, url, body=None, headers=None)`` -> (status, headers, body bytes)."""
    return http_request


def http_request(method: str, url: str, body: bytes | str | dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Message, bytes]:
    """One request with urllib: status, headers (``h["Name"]``, ``h.get_all("Name")``), body.

    HTTP errors are returned, not raised.
    """
    if isinstance(body, dict):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()
