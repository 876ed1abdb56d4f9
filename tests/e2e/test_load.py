"""Load: N concurrent HTTP clients hold the local API for a bounded time with zero errors.

Throughput and latency are printed and written to ``build/load-report.json``; nothing
here asserts a timing (the machine is shared), only zero errors and some throughput.
"""

from __future__ import annotations

import base64
import http.client
import json
import platform
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 16
DURATION_SECONDS = 5.0
MAX_REQUESTS_PER_CLIENT = 5_000          # a second bound besides the duration


def _event_body(name: str) -> bytes:
    event = json.loads((ROOT / "events" / name).read_text())
    return base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()


def _mix() -> list[tuple[str, bytes, int]]:
    """(kind, body, expected number of predictions), cycled by every client."""
    single = _event_body("predict-single.json")
    video = _event_body("predict-video.json")
    features = json.loads(single)["features"]
    vid = json.loads(video)["video"]
    batch = json.dumps({"instances": [{"features": features} if i % 2 else {"video": {**vid, "videoId": f"b{i}"}}
                                      for i in range(100)]}).encode()
    return [("single", single, 1), ("video", video, 1), ("single", single, 1), ("video", video, 1),
            ("batch100", batch, 100)]


def _client(port: int, offset: int, stop_at: float, mix: list[tuple[str, bytes, int]],
            latencies: dict[str, list[float]], errors: list[str], lock: threading.Lock) -> None:
    local: dict[str, list[float]] = {kind: [] for kind, _, _ in mix}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                break
            kind, body, n = mix[(i + offset) % len(mix)]
            started = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            elapsed = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"{kind}: HTTP {response.status}: {data[:200]!r}")
                continue
            doc = json.loads(data)
            got = len(doc["predictions"]) if "predictions" in doc else 1
            if got != n:
                errors.append(f"{kind}: {got} predictions, expected {n}")
                continue
            local[kind].append(elapsed)
    finally:
        conn.close()
        with lock:
            for kind, values in local.items():
                latencies.setdefault(kind, []).extend(values)


def test_concurrent_clients_hold_the_local_api_with_zero_errors(stack, capsys) -> None:
    mix = _mix()
    latencies: dict[str, list[float]] = {}
    errors: list[str] = []
    lock = threading.Lock()
    invocations_before = stack.api.invocations
    started = time.monotonic()
    stop_at = started + DURATION_SECONDS
    threads = [threading.Thread(target=_client, args=(stack.api.port, k, stop_at, mix, latencies, errors, lock),
                                daemon=True, name=f"load-client-{k}") for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DURATION_SECONDS + 120)
    wall = time.monotonic() - started
    assert not [t.name for t in threads if t.is_alive()], "a client thread did not finish"

    all_latencies = np.array([x for values in latencies.values() for x in values])
    requests_ok = int(all_latencies.size)
    predictions = sum(len(latencies.get(kind, [])) * n for kind, n in {k: n for k, _, n in mix}.items())

    def pct(values: list[float] | np.ndarray, q: float) -> float:
        return round(float(np.percentile(values, q)) * 1000, 2) if len(values) else float("nan")

    report: dict[str, Any] = {
        "clients": CLIENTS, "durationSeconds": round(wall, 3), "requests": requests_ok + len(errors),
        "errors": len(errors), "errorSamples": errors[:10],
        "requestsPerSecond": round(requests_ok / wall, 1), "predictionsPerSecond": round(predictions / wall, 1),
        "latencyMs": {"p50": pct(all_latencies, 50), "p99": pct(all_latencies, 99),
                      "max": round(float(all_latencies.max()) * 1000, 2) if requests_ok else None},
        "byKind": {kind: {"requests": len(v), "p50Ms": pct(v, 50), "p99Ms": pct(v, 99)}
                   for kind, v in sorted(latencies.items())},
        "handlerInvocations": stack.api.invocations - invocations_before,
        "mix": dict(Counter(kind for kind, _, _ in mix)),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count(),
                    "platform": platform.platform()},
        "note": "local HTTP API (ThreadingHTTPServer) -> API Gateway proxy event -> predict handler, one "
                "invocation at a time as in one Lambda container; shared machine, figures are indicative",
    }
    out = ROOT / "build" / "load-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(f"\nload: {CLIENTS} clients x {wall:.1f} s: {report['requests']} requests, {len(errors)} errors, "
              f"{report['requestsPerSecond']} req/s ({report['predictionsPerSecond']} predictions/s), "
              f"p50 {report['latencyMs']['p50']} ms, p99 {report['latencyMs']['p99']} ms -> {out}")
        for kind, row in report["byKind"].items():
            print(f"  {kind:<9} {row['requests']:>6} requests  p50 {row['p50Ms']} ms  p99 {row['p99Ms']} ms")

    assert errors == []
    assert requests_ok > 0
    assert report["handlerInvocations"] == requests_ok
