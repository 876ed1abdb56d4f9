"""A local stack without Docker: moto's S3 on loopback and an API Gateway emulator.

Three building blocks, shared by ``virality serve``, ``scripts/demo.py`` and
the end-to-end tests:

:class:`LocalS3`
    moto's S3 server on 127.0.0.1 (a free port by default), with the process
    environment pointed at it (``AWS_ENDPOINT_URL_S3``, fake credentials,
    region) so every boto3 client the handlers create talks to it and never
    to AWS.
:class:`LocalApi`
    what ``sam local start-api`` gives, in-process: a threading HTTP server
    that turns each request into an API Gateway REST proxy event (resource
    ``/{proxy+}``, body base64-encoded as for binary-safe proxying), calls
    the predict Lambda's ``lambda_handler`` and turns its proxy response back
    into HTTP.
:func:`serve`
    the ``virality serve`` command.

One invocation at a time (as in one Lambda container)
-----------------------------------------------------
Handler calls are serialized with a lock. The model provider would survive
concurrent calls (a cold start could load twice; a swap is one reference
assignment), but the rest of the invocation is per-container state by
design: Powertools' resolver keeps the request being resolved on the
module-level ``app`` (``app.current_event``, read by the route functions),
and Logger/Metrics keep the invocation's keys and metric set on module-level
objects that the decorators flush after each call. Lambda never runs two
invocations in one container at once, so neither does this server; HTTP
parsing and socket I/O still run in parallel, one thread per connection.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import errno
import io
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

from virality.errors import ConfigurationError, ViralityError
from virality_dev.events import api_event, s3_put_event
from virality_dev.fakeaws import CONFLICTING_AWS_ENV, FAKE_CREDENTIALS, patched_environ
from virality_dev.handlers import REGION, LocalLambdaContext, load_handler

DATA_BUCKET = "virality-data-local"
MODEL_BUCKET = "virality-models-local"
TRAINING_PREFIX = "training-data/"
SAMPLE_KEY = "training-data/sample videos.csv"
#: API Gateway REST refuses payloads above 10 MB before the function runs.
API_GATEWAY_MAX_PAYLOAD = 10 * 1024 * 1024

# --------------------------------------------------------------------------- environment


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


# --------------------------------------------------------------------------- handlers


# --------------------------------------------------------------------------- events


def _normalise_response(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and body of a Lambda proxy response, merged as API Gateway does.

    ``multiValueHeaders`` win over ``headers`` for the same name. Raises ValueError on a
    malformed response (API Gateway answers those with 502).
    """
    if not isinstance(result, Mapping) or "statusCode" not in result:
        raise ValueError("the Lambda proxy response has no statusCode")
    status = int(result["statusCode"])
    if not 100 <= status <= 599:
        raise ValueError(f"invalid statusCode {status}")
    out: list[tuple[str, str]] = []
    multi = result.get("multiValueHeaders") or {}
    seen = {name.lower() for name in multi}
    for name, values in multi.items():
        out.extend((str(name), str(v)) for v in (values if isinstance(values, list) else [values]))
    for name, value in (result.get("headers") or {}).items():
        if name.lower() not in seen:
            out.append((str(name), str(value)))
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded"):
        data = base64.b64decode(body)
    else:
        data = str(body).encode()
    return status, out, data


# --------------------------------------------------------------------------- the HTTP server

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te", "trailer"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30            # idle keep-alive connections are closed after this many seconds
    server_version = "virality-localapi"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.api.access_log:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own errors (malformed request line, oversize headers) as JSON, like the API.
        self._write(code, [("Content-Type", "application/json")],
                    json.dumps({"error": message or HTTPStatus(code).phrase, "details": []}).encode(), close=True)

    def _write(self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool = False) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _gateway_error(self, status: int, message: str, request_id: str, *, close: bool = False) -> None:
        self._write(status, [("Content-Type", "application/json"), ("x-amzn-RequestId", request_id),
                             ("x-amzn-ErrorType", "LocalApiError")],
                    json.dumps({"error": message, "details": []}).encode(), close=close)

    def _read_body(self) -> bytes | None:
        """The request body; None when it exceeds the API Gateway limit (nothing more is read)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            for _ in range(1_000_000):          # bounded: at most this many chunks
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():   # trailers up to the blank line
                        pass
                    break
                total += size
                if total > API_GATEWAY_MAX_PAYLOAD:
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > API_GATEWAY_MAX_PAYLOAD:
            return None
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        request_id = str(uuid.uuid4())
        try:
            body = self._read_body()
        except ValueError:
            self._gateway_error(400, "invalid Content-Length or chunked encoding", request_id, close=True)
            return
        if body is None:
            self._gateway_error(413, f"request body exceeds the API Gateway limit of {API_GATEWAY_MAX_PAYLOAD} bytes",
                                request_id, close=True)
            return
        event = api_event(self.command, self.path, raw_body=body, headers=list(self.headers.items()),
                          source_ip=self.client_address[0], stage=self.server.api.stage,
                          host=self.headers.get("Host", self.server.api.host), request_id=request_id)
        try:
            status, headers, data = _normalise_response(self.server.api.invoke(event))
        except Exception:
            # API Gateway answers a failed invocation or a malformed proxy response with 502.
            sys.stderr.write(f"localapi: request {request_id} {self.command} {self.path} failed:\n"
                             f"{traceback.format_exc()}")
            self._gateway_error(502, "Internal server error", request_id)
            return
        self._write(status, [*headers, ("x-amzn-RequestId", request_id)], data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128        # the default backlog of 5 drops bursts of connects (1 s SYN retry)

    def __init__(self, address: tuple[str, int], api: LocalApi) -> None:
        self.api = api
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._connections_lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._connections_lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class LocalApi:
    """The predict handler behind a local HTTP server (``sam local start-api`` without Docker).

    Parameters
    ----------
    handler : callable or None
        ``lambda_handler(event, context)``; default: a freshly imported
        ``functions/predict/app.py`` (available as :attr:`module`).
    host, port : str, int
        Where to listen; port 0 picks a free one (see :attr:`url`).
    env : mapping or None
        Environment variables (``MODEL_BUCKET``, ``MODEL_REFRESH_SECONDS``...) set
        while the server runs and restored by :meth:`stop`. The handler reads
        them on its first invocation.
    quiet : bool
        Swallow what the handler prints to stdout (Powertools' EMF metric lines).
    access_log : bool
        Log one line per request to stderr.
    """

    def __init__(self, handler: Callable[[dict[str, Any], Any], Any] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, env: Mapping[str, str | None] | None = None, quiet: bool = False,
                 access_log: bool = False, stage: str = "local") -> None:
        self.host = host
        self.requested_port = port
        self.env = dict(env or {})
        self.quiet = quiet
        self.access_log = access_log
        self.stage = stage
        self.module: ModuleType | None = None
        self._handler = handler
        self._invoke_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._env_ctx: contextlib.AbstractContextManager[None] | None = None
        self.invocations = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> LocalApi:
        if self._server is not None:
            return self
        self._env_ctx = patched_environ(self.env)
        self._env_ctx.__enter__()
        try:
            if self._handler is None:
                self.module = load_handler("predict")
                self._handler = self.module.lambda_handler
            try:
                self._server = _Server((self.host, self.requested_port), self)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigurationError(f"{self.host}:{self.requested_port} is already in use; "
                                             "choose another port (0 = any free port)") from None
                raise
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                            name=f"localapi-{self.port}", daemon=True)
            self._thread.start()
        except BaseException:
            self._restore_env()
            raise
        return self

    def stop(self) -> None:
        """Stop accepting, close open connections, close the socket and restore the environment."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
        if self.module is not None:
            with contextlib.suppress(Exception):
                self.module.reset()
            sys.modules.pop(self.module.__name__, None)
        self._restore_env()

    def _restore_env(self) -> None:
        ctx, self._env_ctx = self._env_ctx, None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def __enter__(self) -> LocalApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LocalApi is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self.port}"

    def invoke(self, event: dict[str, Any]) -> Any:
        """Call the handler with ``event`` (one invocation at a time; see the module docstring)."""
        assert self._handler is not None, "start() first"
        with self._invoke_lock:
            self.invocations += 1
            context = LocalLambdaContext(aws_request_id=event.get("requestContext", {}).get("requestId")
                                         or str(uuid.uuid4()))
            if not self.quiet:
                return self._handler(event, context)
            with contextlib.redirect_stdout(io.StringIO()):
                return self._handler(event, context)


# --------------------------------------------------------------------------- local S3


class LocalS3:
    """moto's S3 server on loopback, with this process's AWS environment pointed at it.

    ``with LocalS3(["bucket-a"]) as s3:`` starts the server (free port by default), sets
    ``AWS_ENDPOINT_URL_S3``, fake credentials and the region in ``os.environ``, and
    creates the buckets (versioned, like the template's). :meth:`stop` shuts the server
    down, closes its socket and restores the environment.

    moto keeps its store per process: the first LocalS3 of a process starts from an
    empty store, and instances running at the same time in one process see the same
    buckets. Do not use it inside ``mock_aws`` (which resets that store).
    """

    _active = 0
    _active_lock = threading.Lock()

    def __init__(self, buckets: Iterable[str] = (), *, host: str = "127.0.0.1", port: int = 0,
                 versioned: bool = True, region: str = REGION) -> None:
        self.host = host
        self.requested_port = port
        self.buckets = list(buckets)
        self.versioned = versioned
        self.region = region
        self._server: Any = None
        self._env_ctx: contextlib.AbstractContextManager[None] | None = None
        self.port = 0

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> LocalS3:
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        werkzeug_log = logging.getLogger("werkzeug")       # one line per S3 request otherwise
        if werkzeug_log.level == logging.NOTSET:
            werkzeug_log.setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self.host, port=self.requested_port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise ConfigurationError(f"cannot start the local S3 on {self.host}:{self.requested_port}: {exc}") from None
        self._server = server
        self.port = int(server.get_host_and_port()[1])
        env: dict[str, str | None] = dict.fromkeys(CONFLICTING_AWS_ENV)
        env.update({**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region,
                    "AWS_ENDPOINT_URL_S3": self.endpoint_url})
        self._env_ctx = patched_environ(env)
        self._env_ctx.__enter__()
        with LocalS3._active_lock:
            first = LocalS3._active == 0
            LocalS3._active += 1
        try:
            if first:   # a fresh store, unless another LocalS3 of this process is using it
                urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
                                       timeout=10).close()
            client = self.client()
            for bucket in self.buckets:
                self.create_bucket(bucket, client)
        except BaseException:
            self.stop()
            raise
        return self

    def create_bucket(self, bucket: str, client: Any = None) -> None:
        client = client or self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        if self.versioned:
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def client(self) -> Any:
        """A boto3 S3 client for the local server (explicit endpoint and fake credentials)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            aws_session_token="testing")

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()       # werkzeug's serve_forever closes the listening socket on its way out
            with LocalS3._active_lock:
                LocalS3._active -= 1
        ctx, self._env_ctx = self._env_ctx, None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- training through the handler


def upload_training_file(client: Any, bucket: str, key: str, body: bytes,
                         metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """PUT a training file and return the S3 notification that put triggers."""
    content_type = "application/x-ndjson" if key.endswith((".jsonl", ".ndjson")) else "text/csv"
    put = client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type,
                            Metadata=dict(metadata or {}))
    return s3_put_event(bucket, key, size=len(body), etag=put["ETag"], version_id=put.get("VersionId"))


def invoke_retrain(event: dict[str, Any], *, model_bucket: str, prefix: str = "models/",
                   module: ModuleType | None = None, quiet: bool = True) -> dict[str, Any]:
    """Deliver an S3 notification to the retrain Lambda's ``lambda_handler``; returns its response."""
    module = module or load_handler("retrain")
    env = {"MODEL_BUCKET": model_bucket, "MODEL_PREFIX": prefix, "TRAINING_PREFIX": TRAINING_PREFIX}
    context = LocalLambdaContext(function_name="virality-retrain-local", memory_limit_in_mb=3008,
                                 timeout_seconds=900)
    with patched_environ(env), (contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()):
        return module.lambda_handler(copy.deepcopy(event), context)


def publish_sample_model(s3: LocalS3, *, data_bucket: str = DATA_BUCKET, model_bucket: str = MODEL_BUCKET,
                         prefix: str = "models/", rows: int = 7358, seed: int = 42, key: str = SAMPLE_KEY,
                         metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Upload synthetic sample data and train on it through the retrain handler; the record's summary."""
    from virality_dev.synthetic import sample_csv

    event = upload_training_file(s3.client(), data_bucket, key, sample_csv(rows, seed), metadata)
    response = invoke_retrain(event, model_bucket=model_bucket, prefix=prefix)
    results = response.get("results") or []
    if len(results) != 1 or results[0].get("status") != "published":
        raise ViralityError(f"retraining on s3://{data_bucket}/{key} did not publish a model: {results}")
    return results[0]


# --------------------------------------------------------------------------- virality serve


_LOG_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class ConsoleLogFormatter(LambdaPowertoolsFormatter):
    """One readable line per log record: ``12:00:01 INFO  model loaded  model_version=v1 source=published``.

    Structured keys passed as ``extra=`` stay visible as ``key=value`` pairs; the
    Lambda-context keys that a local server does not have are dropped. A Powertools
    formatter underneath, so the handler decorators can still append their keys.
    """

    _SKIP = frozenset({"service", "sampling_rate", "xray_trace_id", "cold_start", "function_name",
                       "function_memory_size", "function_arn", "function_request_id", "correlation_id",
                       "location", "timestamp", "level"})

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in vars(record).items()
                         if k not in _LOG_RECORD_FIELDS and k not in self._SKIP and not k.startswith("_")
                         and v not in (None, "", {}))
        line = (f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<7} {record.getMessage()}"
                f"{'  ' + pairs if pairs else ''}")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def use_console_logs() -> None:
    """Human-readable handler logs and no EMF metric lines (``virality serve --log-format console``)."""
    from virality.observability import logger

    for handler in logger.handlers:
        handler.setFormatter(ConsoleLogFormatter())
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"


def _print(*lines: str) -> None:
    print("\n".join(lines), flush=True)


def serve(host: str, port: int, local_s3: bool, bucket: str | None, prefix: str, refresh_seconds: float) -> int:
    """``virality serve``: the predict handler on ``http://host:port`` until Ctrl-C (or SIGTERM).

    With ``local_s3``: start moto's S3 on loopback, create the data and model buckets,
    train a model on the synthetic sample through the retrain handler and serve it.
    Without: serve from ``bucket`` (default ``MODEL_BUCKET``) with the ambient AWS
    credentials, or the bundled baseline model when no bucket is set.
    """
    if refresh_seconds < 0:
        raise ConfigurationError("--refresh-seconds must be >= 0")
    prefix = prefix if prefix.endswith("/") or not prefix else prefix + "/"
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} if main_thread else {}

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if main_thread:
        signal.signal(signal.SIGTERM, _terminate)
        # Ctrl-C explicitly too: a process started in the background by a non-interactive shell
        # inherits SIGINT as ignored, and Python then never installs its KeyboardInterrupt handler.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _serve(host, port, local_s3, bucket, prefix, refresh_seconds, main_thread)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve(host: str, port: int, local_s3: bool, bucket: str | None, prefix: str, refresh_seconds: float,
           main_thread: bool) -> int:
    with contextlib.ExitStack() as stack:
        try:
            if local_s3:
                local_bucket = bucket or MODEL_BUCKET
                model_bucket: str | None = local_bucket
                s3 = stack.enter_context(LocalS3(dict.fromkeys([DATA_BUCKET, local_bucket])))
                _print(f"local S3 (moto) on {s3.endpoint_url}: buckets {DATA_BUCKET}, {model_bucket}",
                       f"  versions: virality versions --local-s3 {s3.endpoint_url}")
                summary = publish_sample_model(s3, model_bucket=local_bucket, prefix=prefix)
                m = summary.get("metrics") or {}
                _print(f"trained {summary['version']} on the synthetic sample through the retrain handler "
                       f"(accuracy {m.get('accuracy', 0):.3f}, macro-F1 {m.get('macroF1', 0):.3f}, "
                       f"promoted: {summary.get('promoted')})")
            else:
                model_bucket = bucket or os.environ.get("MODEL_BUCKET") or None
                _print(f"model: s3://{model_bucket}/{prefix}latest.json" if model_bucket
                       else "model: the bundled baseline (no --bucket / MODEL_BUCKET)")
            env = {"MODEL_BUCKET": model_bucket or "", "MODEL_PREFIX": prefix,
                   "MODEL_REFRESH_SECONDS": f"{refresh_seconds:g}"}
            api = stack.enter_context(LocalApi(host=host, port=port, env=env, access_log=True))
            sample = json.dumps({"video": {"videoId": "demo", "views": 182000, "likes": 21400, "comments": 640,
                                           "shares": 1900, "saves": 2300, "followers": 54000,
                                           "durationSeconds": 21, "hashtagCount": 5, "hasTrendingSound": True,
                                           "captionLength": 72, "postedAt": "2026-11-27T19:30:00Z"},
                                 "explain": True})
            _print(f"virality API (predict handler, API Gateway proxy events) listening on {api.url}",
                   f"  routes: POST {api.url}/predict   GET {api.url}/model   GET {api.url}/health"
                   f"   GET {api.url}/openapi.json",
                   f"  try:    curl -s -X POST {api.url}/predict -H 'Content-Type: application/json' -d '{sample}'",
                   "  Ctrl-C to stop")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            if main_thread:     # a second Ctrl-C must not cut the (bounded) shutdown short
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_IGN)
            _print("stopping...")
    _print("stopped")
    return 0
