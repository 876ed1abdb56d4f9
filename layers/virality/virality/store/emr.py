"""EMR Serverless: the one place that starts Spark job runs (lazy client, no boto3 import)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from virality.store.s3 import LazyClient

ClientFactory = Callable[[], Any]


def default_emr_client() -> Any:
    """An EMR Serverless client (region and endpoint from the environment), without importing boto3."""
    import botocore.session

    return botocore.session.get_session().create_client("emr-serverless")


class SparkLauncher:
    """Starts Spark job runs; the one place that talks to EMR Serverless (lazy client)."""

    def __init__(self, client_factory: ClientFactory | None = None) -> None:
        self._client = LazyClient(client_factory or default_emr_client)

    @property
    def client(self) -> Any:
        return self._client()

    def submit(self, request: Mapping[str, Any]) -> str:
        """``StartJobRun`` with ``request`` (see :func:`virality.services.sparkjob.job_request`); the job-run id."""
        response = self.client.start_job_run(**request)
        return str(response["jobRunId"])
