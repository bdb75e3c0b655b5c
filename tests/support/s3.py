"""S3 fixtures: a real moto server on 127.0.0.1, a fresh bucket per test, a fault-injecting proxy.

Fixtures (names are stable; other tests rely on them):

``moto_s3_server`` (session)
    ``"127.0.0.1:PORT"`` of a ``moto.server.ThreadedMotoServer`` started once per session.
    moto keeps its state in this process: do not use ``moto.mock_aws`` in the same session
    (it resets every backend, this server's buckets included).

``s3`` (function) -> ``S3Bucket``
    A new, empty bucket on that server, removed after the test. Fields: ``endpoint``,
    ``access_key``, ``secret_key``, ``bucket``, ``region``, ``client`` (a raw ``Minio``
    client for arranging and inspecting state) and ``storage`` (the worker's ``Storage``
    for this bucket, with a tiny retry backoff). Helpers:

    - ``put(key, path_or_bytes, *, content_type=None, metadata=None) -> etag``
    - ``get_bytes(key) -> bytes``
    - ``keys() -> list[str]`` every key in the bucket, sorted
    - ``snapshot() -> dict[str, str]`` key -> sha256 of the bytes, to assert "inputs
      unchanged" (equal snapshots) and "nothing written" (same keys)
    - ``make_storage(endpoint=None, **overrides) -> Storage`` the bucket's ``Storage``
      through another endpoint (e.g. ``s3_proxy.endpoint``) or with other settings

``s3_env`` (function) -> ``dict[str, str]``
    The ``MINIO_*`` variables for ``Settings.from_env`` pointing at the ``s3`` bucket.

``s3_proxy`` (function) -> ``S3FaultProxy``
    A real HTTP proxy on 127.0.0.1 in front of the moto server that records every
    request and can inject faults: ``fail_next(count, status=503, code="SlowDown",
    method=None, path_contains=None)``, ``deny(code="AccessDenied")`` (every request from
    then on), ``cut_next_get(after_bytes)`` (send the headers and only part of the body,
    then drop the connection), ``understate_next_head(length)``, ``trickle_next(method, interval_s)``
    (forward, then send the answer one byte every ``interval_s``: a storage that hardly moves),
    ``lose_next_answer(count, method=None, path_contains=None)`` (the request reaches moto, its answer
    is never sent: the connection is closed instead, as when a network drops it). Use with
    ``s3.make_storage(s3_proxy.endpoint)``; ``requests`` and ``count(method)`` tell what
    reached it.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from minio import Minio
from moto.server import ThreadedMotoServer

from tests.support.trickle import send_trickled
from worker.storage import Storage

ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
REGION = "us-east-1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


@pytest.fixture(scope="session")
def moto_s3_server() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"{host}:{port}"
    finally:
        server.stop()


@dataclass
class S3Bucket:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str
    client: Minio
    storage: Storage = field(init=False)

    def __post_init__(self) -> None:
        self.storage = self.make_storage()

    def make_storage(self, endpoint: str | None = None, **overrides: Any) -> Storage:
        options: dict[str, Any] = {
            "endpoint": endpoint or self.endpoint,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "bucket": self.bucket,
            "secure": False,
            "region": self.region,
            "backoff_s": 0.01,
        }
        options.update(overrides)
        return Storage(**options)

    def put(
        self,
        key: str,
        data: bytes | Path,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        content = data.read_bytes() if isinstance(data, Path) else data
        result = self.client.put_object(
            self.bucket,
            key,
            io.BytesIO(content),
            len(content),
            content_type=content_type or "application/octet-stream",
            metadata=metadata,
        )
        return str(result.etag)

    def get_bytes(self, key: str) -> bytes:
        response = self.client.get_object(self.bucket, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def keys(self) -> list[str]:
        return sorted(str(obj.object_name) for obj in self.client.list_objects(self.bucket, recursive=True))

    def snapshot(self) -> dict[str, str]:
        return {key: hashlib.sha256(self.get_bytes(key)).hexdigest() for key in self.keys()}


@pytest.fixture
def s3(moto_s3_server: str) -> Iterator[S3Bucket]:
    client = Minio(moto_s3_server, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False, region=REGION)
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    client.make_bucket(bucket)
    yield S3Bucket(
        endpoint=moto_s3_server,
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        bucket=bucket,
        region=REGION,
        client=client,
    )
    # moto keeps objects in memory for the whole session: free them.
    for obj in client.list_objects(bucket, recursive=True):
        client.remove_object(bucket, str(obj.object_name))
    client.remove_bucket(bucket)


@pytest.fixture
def s3_env(s3: S3Bucket) -> dict[str, str]:
    return {
        "MINIO_ENDPOINT": s3.endpoint,
        "MINIO_ACCESS_KEY": s3.access_key,
        "MINIO_SECRET_KEY": s3.secret_key,
        "MINIO_BUCKET": s3.bucket,
        "MINIO_USE_SSL": "false",
        "MINIO_REGION": s3.region,
    }


# -- fault-injecting proxy ---------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _Fault:
    status: int = 503
    code: str | None = "SlowDown"
    cut_after_bytes: int | None = None
    head_length: int | None = None
    trickle_s: float | None = None
    lose_answer: bool = False
    method: str | None = None
    path_contains: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )

    @property
    def forwards(self) -> bool:
        return (
            self.cut_after_bytes is not None
            or self.head_length is not None
            or self.trickle_s is not None
            or self.lose_answer
        )


class S3FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream_host, upstream_port = upstream.rsplit(":", 1)
        self.upstream_port = int(upstream_port)
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._deny_code: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self.endpoint = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_next(
        self,
        count: int,
        *,
        status: int = 503,
        code: str | None = "SlowDown",
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next ``count`` requests (of ``method``, with ``path_contains`` in the path
        and query, when given) get ``status`` without reaching moto: an S3 XML error with
        ``code``, or a plain-text body when ``code`` is None."""
        fault = _Fault(status=status, code=code, method=method, path_contains=path_contains)
        with self._lock:
            self._faults.extend(_Fault(**vars(fault)) for _ in range(count))

    def understate_next_head(self, length: int) -> None:
        """The next HEAD answers with ``Content-Length: length`` (a server that misreports sizes)."""
        with self._lock:
            self._faults.append(_Fault(head_length=length, method="HEAD"))

    def cut_next_get(self, after_bytes: int) -> None:
        """The next GET is forwarded, but only ``after_bytes`` of its body are sent."""
        with self._lock:
            self._faults.append(_Fault(cut_after_bytes=after_bytes, method="GET"))

    def trickle_next(self, method: str, interval_s: float) -> None:
        """The next ``method`` request is forwarded, and its answer (status line, headers and body)
        sent one byte every ``interval_s`` until it is complete or the client hangs up."""
        with self._lock:
            self._faults.append(_Fault(trickle_s=interval_s, method=method))

    def lose_next_answer(
        self, count: int, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """The next ``count`` matching requests are forwarded and done by moto, but their answers
        are dropped: the client's connection is closed before any byte of the response."""
        with self._lock:
            self._faults.extend(
                _Fault(lose_answer=True, method=method, path_contains=path_contains) for _ in range(count)
            )

    def deny(self, code: str = "AccessDenied") -> None:
        with self._lock:
            self._deny_code = code

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for request in self.requests if method is None or request.method == method)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            if self._deny_code is not None:
                return _Fault(status=403, code=self._deny_code)
            for index, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    return self._faults.pop(index)
            return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy: S3FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name: value for name, value in self.headers.items()}
        proxy._record(RecordedRequest(self.command, self.path, headers))
        fault = proxy._take_fault(self.command, self.path)
        if fault is not None and not fault.forwards:
            self._send_error(fault)
            return
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=30)
        try:
            forward = {name: value for name, value in headers.items() if name.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=forward)
            response = upstream.getresponse()
            payload = response.read()
            if fault is not None and fault.lose_answer:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None and fault.trickle_s is not None:
                self._trickle(response, payload, fault.trickle_s)
                return
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length") if self.command == "HEAD" else len(payload)
            if fault is not None and fault.head_length is not None:
                length = fault.head_length
            self.send_header("Content-Length", str(length or 0))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault is not None and fault.cut_after_bytes is not None:
                self.wfile.write(payload[: fault.cut_after_bytes])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)
        finally:
            upstream.close()

    def _trickle(self, response: http.client.HTTPResponse, payload: bytes, interval_s: float) -> None:
        head = f"HTTP/1.1 {response.status} {response.reason}\r\n"
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP:
                head += f"{name}: {value}\r\n"
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(payload)
        head += f"Content-Length: {length or 0}\r\nConnection: close\r\n\r\n"
        send_trickled(self, head.encode() + (b"" if self.command == "HEAD" else payload), interval_s)

    def _send_error(self, fault: _Fault) -> None:
        if fault.code is None:
            payload, content_type = b"Service Unavailable", "text/plain"
        else:
            payload = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message>"
                f"<Resource>{self.path.split('?')[0]}</Resource><RequestId>proxy</RequestId></Error>"
            ).encode()
            content_type = "application/xml"
        self.send_response(fault.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


@pytest.fixture
def s3_proxy(moto_s3_server: str) -> Iterator[S3FaultProxy]:
    proxy = S3FaultProxy(moto_s3_server)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
