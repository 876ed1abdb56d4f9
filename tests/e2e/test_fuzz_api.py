"""API fuzzing: schemathesis generates requests from the OpenAPI document the local HTTP API serves
(``GET /openapi.json``) and sends them over real HTTP to the predict handler.

Every response must be a non-5xx whose status code, content type and body the document
declares. Positive (schema-valid) and negative (schema-violating) bodies are both generated.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: (path, method, generation mode, max examples): thousands of requests in total
PLAN = [
    ("/predict", "POST", GenerationMode.POSITIVE, 1200),
    ("/predict", "POST", GenerationMode.NEGATIVE, 1200),
    ("/model", "GET", GenerationMode.POSITIVE, 50),
    ("/health", "GET", GenerationMode.POSITIVE, 50),
]
#: Examples are generated in seeded chunks of this size (reproducible), and no new chunk of a
#: plan entry starts once its wall-clock budget is spent (a bound, never a failure).
CHUNK = 300
BUDGET_SECONDS = 150.0


def _fuzzer(operation: Any, mode: GenerationMode, examples: int, chunk_seed: int, base_url: str,
            session: requests.Session, statuses: Counter[tuple[str, int]], label: str) -> Any:
    @seed(chunk_seed)
    @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate,
                                                                           Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        statuses[(label, response.status_code)] += 1
        case.validate_response(response, checks=CHECKS)

    return fuzz


def test_fuzz_the_local_api_against_its_openapi_document(stack, capsys) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    statuses: Counter[tuple[str, int]] = Counter()
    with requests.Session() as session:
        for path, method, mode, examples in PLAN:
            label = f"{method} {path} ({mode.value})"
            started = time.monotonic()
            chunks = range(0, examples, CHUNK)
            for k, offset in enumerate(chunks):
                if time.monotonic() - started > BUDGET_SECONDS:
                    break
                _fuzzer(schema[path][method], mode, min(CHUNK, examples - offset), 1000 + k, stack.url, session,
                        statuses, label)()
                with capsys.disabled():     # ~2 minutes in all: show that it is moving
                    print(f"\n  fuzz {label}: chunk {k + 1}/{len(chunks)}, {sum(statuses.values())} requests so far",
                          end="", flush=True)

    sent = sum(statuses.values())
    with capsys.disabled():
        print(f"\nschemathesis sent {sent} requests to {stack.url} (handler invocations: {stack.api.invocations}):")
        for (label, status), n in sorted(statuses.items()):
            print(f"  {label:<28} {status}: {n}")
    assert sent >= 1000
    assert not [key for key in statuses if key[1] >= 500]
