"""The local HTTP API end to end: real HTTP on 127.0.0.1 -> API Gateway proxy event -> predict handler
-> local S3 (moto server), and the ``virality serve`` command."""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from virality_dev import handlers, localapi
from virality_dev.events import api_event
from virality_dev.synthetic import sample_csv

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
PREDICT_EVENTS = sorted(p.name for p in EVENTS.glob("predict-*.json"))

# GET /model and /health add no metric: Powertools warns on every flush.
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")


def event_body(name: str) -> bytes:
    event = json.loads((EVENTS / name).read_text())
    body = event["body"]
    return base64.b64decode(body) if event["isBase64Encoded"] else body.encode()


def as_json(body: bytes) -> Any:
    return json.loads(body)


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize("name", PREDICT_EVENTS)
def test_post_predict_with_each_sample_event_body(stack, http, name: str) -> None:
    status, headers, body = http("POST", f"{stack.url}/predict", event_body(name))
    doc = as_json(body)
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"[0-9a-f-]{36}", headers["x-amzn-RequestId"])
    if name == "predict-invalid.json":
        assert status == 422
        fields = {d["field"] for d in doc["details"]}
        assert "features.shareRate" in fields and "features.likeRate" in fields
        return
    assert status == 200, doc
    assert doc["modelVersion"] in stack.versions
    predictions = doc.get("predictions", [doc])
    for p in predictions:
        assert 0 <= p["score"] <= 100 and 1 <= p["tier"] <= 5
        assert abs(sum(p["probabilities"]) - 1) < 1e-4
    if name == "predict-explain.json":
        assert len(doc["contributions"]) == 15
    if name == "predict-video.json":
        assert doc["videoId"] == "dance-challenge-042"


def test_get_model_and_health_serve_the_published_model(stack, http) -> None:
    status, _, body = http("GET", f"{stack.url}/model")
    model = as_json(body)
    assert status == 200
    assert model["source"] == "published" and model["modelVersion"] in stack.versions
    assert model["key"] == f"models/{model['modelVersion']}/ml-weights.json"
    assert model["refreshSeconds"] == 0.5
    status, _, body = http("GET", f"{stack.url}/health")
    assert status == 200
    assert as_json(body) == {"status": "ok", "modelVersion": model["modelVersion"], "source": "published"}


def test_openapi_document_is_served(stack, http) -> None:
    status, _, body = http("GET", f"{stack.url}/openapi.json")
    doc = as_json(body)
    assert status == 200 and doc["openapi"].startswith("3.")
    assert {"/predict", "/model", "/health"} <= set(doc["paths"])


def test_unknown_path_is_404_json(stack, http) -> None:
    status, headers, body = http("GET", f"{stack.url}/no/such/route")
    assert status == 404 and headers["Content-Type"] == "application/json"
    assert as_json(body)["error"] == "no route /no/such/route"


@pytest.mark.parametrize(("method", "path", "allow"), [("DELETE", "/predict", "POST"), ("GET", "/predict", "POST"),
                                                       ("POST", "/health", "GET"), ("PUT", "/model", "GET")])
def test_wrong_method_is_405_with_allow(stack, http, method: str, path: str, allow: str) -> None:
    status, headers, body = http(method, f"{stack.url}{path}", b"{}" if method in ("POST", "PUT") else None)
    assert status == 405 and headers["Allow"] == allow
    assert as_json(body)["details"][0]["field"] == "method"


def test_head_has_headers_and_no_body(stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.api.port, timeout=30)
    try:
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert response.status == 405 and response.read() == b""
        assert int(response.getheader("Content-Length")) > 0
    finally:
        conn.close()


@pytest.mark.parametrize(("body", "status"), [
    (b"{", 400), (b"not json", 400), (b"", 400), (b'{"features": 1, "features": 2}', 400),
    (b"[1, 2]", 422), (b'{"video": {"views": "many"}}', 422), (b'{"featureVector": {"shareTrigger": NaN}}', 400),
    (b"\xff\xfe", 400),
])
def test_malformed_bodies_are_4xx_json(stack, http, body: bytes, status: int) -> None:
    got, headers, raw = http("POST", f"{stack.url}/predict", body)
    doc = as_json(raw)
    assert got == status, doc
    assert headers["Content-Type"] == "application/json" and doc["error"] and isinstance(doc["details"], list)


def test_batch_over_max_batch_is_413(stack, http) -> None:
    instance = {"featureVector": {"shareTrigger": 5}}
    status, _, body = http("POST", f"{stack.url}/predict", {"instances": [instance] * 1001})
    assert status == 413 and as_json(body)["details"][0]["field"] == "instances"


def test_body_over_max_body_bytes_is_413(stack, http) -> None:
    status, _, body = http("POST", f"{stack.url}/predict", b" " * (1_048_576 + 1))
    assert status == 413 and as_json(body)["details"][0]["message"] == "too large"


def test_body_over_the_api_gateway_limit_is_refused_before_the_handler(stack) -> None:
    before = stack.api.invocations
    conn = http.client.HTTPConnection("127.0.0.1", stack.api.port, timeout=30)
    try:
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Length", str(localapi.API_GATEWAY_MAX_PAYLOAD + 1))
        conn.endheaders()           # announce 10 MB + 1, send nothing: refused on the header alone
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]
    finally:
        conn.close()
    assert stack.api.invocations == before


def test_keep_alive_connection_serves_many_requests(stack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", stack.api.port, timeout=30)
    try:
        for _ in range(20):
            conn.request("POST", "/predict", body=event_body("predict-feature-vector.json"),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["tier"] in range(1, 6)
    finally:
        conn.close()


# --------------------------------------------------------------------------- the event / response translation


def test_http_request_becomes_an_api_gateway_proxy_event_and_back(http) -> None:
    seen: list[dict[str, Any]] = []

    def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        assert context.get_remaining_time_in_millis() > 0 and context.aws_request_id
        return {"statusCode": 201, "headers": {"X-Single": "one", "Set-Cookie": "ignored"},
                "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"], "Content-Type": ["application/octet-stream"]},
                "body": base64.b64encode(b"\x00\x01binary").decode(), "isBase64Encoded": True}

    with localapi.LocalApi(echo) as api:
        status, headers, body = http("POST", f"{api.url}/predict/x%20y?a=1&a=2&b=", b"\x00raw\xffbody",
                                     headers={"X-Trace": "t1"})
    assert status == 201 and body == b"\x00\x01binary"
    assert headers["X-Single"] == "one" and headers["Content-Type"] == "application/octet-stream"
    assert headers.get_all("Set-Cookie") == ["a=1", "b=2"]     # multiValueHeaders win over headers
    (event,) = seen
    assert event["resource"] == "/{proxy+}" and event["path"] == "/predict/x y"
    assert event["httpMethod"] == "POST" and event["pathParameters"] == {"proxy": "predict/x y"}
    assert event["queryStringParameters"] == {"a": "2", "b": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}
    assert event["headers"]["X-Trace"] == "t1" and event["multiValueHeaders"]["X-Trace"] == ["t1"]
    assert event["isBase64Encoded"] is True and base64.b64decode(event["body"]) == b"\x00raw\xffbody"
    ctx = event["requestContext"]
    assert ctx["stage"] == "local" and ctx["resourcePath"] == "/{proxy+}" and ctx["path"] == "/local/predict/x y"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1" and re.fullmatch(r"[0-9a-f-]{36}", ctx["requestId"])


def test_no_body_is_null_and_not_base64() -> None:
    event = api_event("GET", "/health", headers=[("Accept", "a"), ("Accept", "b")])
    assert event["body"] is None and event["isBase64Encoded"] is False
    assert event["headers"] == {"Accept": "b"} and event["multiValueHeaders"] == {"Accept": ["a", "b"]}
    assert event["queryStringParameters"] is None


@pytest.mark.parametrize("result", [RuntimeError("boom"), {"body": "no status"}, "not a dict"])
def test_failed_invocation_or_malformed_response_is_502(http, result: Any, capfd) -> None:
    def handler(event: dict[str, Any], context: Any) -> Any:
        if isinstance(result, Exception):
            raise result
        return result

    with localapi.LocalApi(handler) as api:
        status, _, body = http("GET", f"{api.url}/health")
    assert status == 502 and as_json(body)["error"] == "Internal server error"
    assert "localapi: request" in capfd.readouterr().err


def test_stop_closes_the_port() -> None:
    api = localapi.LocalApi(lambda e, c: {"statusCode": 204}).start()
    port = api.port
    assert localapi.port_is_open("127.0.0.1", port)
    api.stop()
    assert not localapi.port_is_open("127.0.0.1", port)


def test_missing_handler_file_is_a_clear_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("VIRALITY_REPO", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(handlers, "__file__", str(tmp_path / "a" / "b" / "c" / "handlers.py"))
    with pytest.raises(localapi.ConfigurationError, match="VIRALITY_REPO"):
        localapi.LocalApi().start()


def test_local_s3_restores_the_environment() -> None:
    before = os.environ.get("AWS_ENDPOINT_URL_S3")
    with localapi.LocalS3(["virality-env-test"]) as s3:
        assert os.environ["AWS_ENDPOINT_URL_S3"] == s3.endpoint_url
        assert s3.client().get_bucket_versioning(Bucket="virality-env-test")["Status"] == "Enabled"
        port = s3.port
    assert os.environ.get("AWS_ENDPOINT_URL_S3") == before
    assert not localapi.port_is_open("127.0.0.1", port)


# --------------------------------------------------------------------------- a new model, same warm container


def test_retrain_is_picked_up_after_the_refresh_interval(stack, http) -> None:
    _, _, body = http("GET", f"{stack.url}/health")
    old = as_json(body)["modelVersion"]
    event = localapi.upload_training_file(stack.s3.client(), localapi.DATA_BUCKET, "training-data/second batch.csv",
                                          sample_csv(3000, seed=11), {"force-promote": "true"})
    assert event["Records"][0]["s3"]["object"]["key"] == "training-data/second+batch.csv"
    (summary,) = localapi.invoke_retrain(event, model_bucket=localapi.MODEL_BUCKET)["results"]
    assert summary["status"] == "published" and summary["promoted"] is True
    stack.versions.append(summary["version"])
    seen = old
    deadline = time.monotonic() + 30
    for _ in range(120):                      # bounded: the interval is 0.5 s
        time.sleep(0.25)
        _, _, body = http("GET", f"{stack.url}/health")
        seen = as_json(body)["modelVersion"]
        if seen != old or time.monotonic() > deadline:
            break
    assert seen == summary["version"]
    status, _, body = http("POST", f"{stack.url}/predict", event_body("predict-video.json"))
    assert status == 200 and as_json(body)["modelVersion"] == summary["version"]


# --------------------------------------------------------------------------- virality serve


def _read_lines(stream: Any, out: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        out.put(line)


def test_virality_serve_local_s3_until_ctrl_c(http) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "virality"), str(ROOT / "src")]), "POWERTOOLS_LOG_LEVEL": "WARNING",
           "POWERTOOLS_METRICS_DISABLED": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("AWS_ENDPOINT_URL_S3", None)
    proc = subprocess.Popen([sys.executable, "-m", "virality_dev.cli", "serve", "--local-s3", "--port", "0",
                             "--refresh-seconds", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    stderr_lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stderr, stderr_lines), daemon=True).start()
    output: list[str] = []
    url = s3_port = None
    try:
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            output.append(line)
            if m := re.search(r"local S3 \(moto\) on http://127\.0\.0\.1:(\d+)", line):
                s3_port = int(m.group(1))
            if m := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
                url = m.group(1)
        assert url and s3_port, "".join(output) + "".join(list(stderr_lines.queue))
        assert any("trained v" in line for line in output)
        status, _, body = http("GET", f"{url}/health")
        assert status == 200 and as_json(body)["source"] == "published"
        status, _, body = http("POST", f"{url}/predict", event_body("predict-explain.json"))
        assert status == 200 and len(as_json(body)["contributions"]) == 15
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    api_port = int(url.rsplit(":", 1)[1])
    assert not localapi.port_is_open("127.0.0.1", api_port)
    assert not localapi.port_is_open("127.0.0.1", s3_port)
