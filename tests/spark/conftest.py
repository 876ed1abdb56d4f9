"""One local Spark session (``local[2]``) for every Spark test.

pyspark and a Java runtime are part of the dev environment (``make venv``,
``.ci/run`` installs a JRE when the machine lacks one). Where they are
missing, the tests skip locally but *fail* under CI, so a Spark regression
can never hide behind a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest


def _unavailable() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java not on PATH, JAVA_HOME unset)"
    return None


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    reason = _unavailable()
    if reason:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"Spark tests cannot run under CI: {reason}")
        pytest.skip(reason)
    from virality_spark.train import spark_session

    session = spark_session("local[2]", "virality-tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
