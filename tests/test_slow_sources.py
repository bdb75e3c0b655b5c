"""Slow sources (issue 13): a server that sends one byte at a time holds no worker past its limits.

A URL download ends at its own total limit (``SOURCE_UNAVAILABLE``) or at the job's deadline
(``TIMEOUT``), whichever comes first; a MinIO download ends at the job's deadline. The servers here
are real sockets that trickle their headers or body; the bound checked is loose (seconds past a
one-second limit, where the trickle would last minutes), so it holds on a loaded machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_driving_video
from tests.support.comfy import worker_env
from tests.support.s3 import S3Bucket, S3FaultProxy
from tests.support.trickle import send_trickled
from worker.config import Settings
from worker.errors import ErrorCode, WorkerError
from worker.job import JobRunner
from worker.urlfetch import fetch_url

LIMIT_S = 1.0
# How long past the limit a download may take to end: the cut is immediate; this is slack for a
# loaded 2-core machine. The trickles last minutes, so a download that is not cut fails the check.
SLACK_S = 5.0
TRICKLE_S = 0.2
MIB = 1024 * 1024


class _Trickler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests += 1  # type: ignore[attr-defined]
        if self.path.startswith("/slow-headers"):
            answer = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nX-Padding: " + b"p" * 200
        else:  # a declared length, then the body a byte at a time (one read never completes)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + b"b" * 200
        send_trickled(self, answer, TRICKLE_S)


@pytest.fixture
def trickler() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Trickler)
    server.daemon_threads = True
    server.requests = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def _fetch_error(url: str, dest: Path, **options: Any) -> tuple[WorkerError, float]:
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        fetch_url(url, dest, max_bytes=MIB, allow_private=True, **options)
    assert not dest.exists()
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("path", ["/slow-body.png", "/slow-headers.png"])
def test_a_trickling_url_ends_at_the_total_fetch_limit(
    trickler: ThreadingHTTPServer, tmp_path: Path, path: str
) -> None:
    error, elapsed = _fetch_error(_url(trickler, path), tmp_path / "a.png", total_timeout_s=LIMIT_S)
    assert error.code is ErrorCode.SOURCE_UNAVAILABLE and error.retryable
    assert "too slowly" in error.message and "not complete after 1 s" in error.message
    assert LIMIT_S <= elapsed < LIMIT_S + SLACK_S


def test_a_trickling_url_ends_at_the_jobs_deadline_when_that_comes_first(
    trickler: ThreadingHTTPServer, tmp_path: Path
) -> None:
    deadline = time.monotonic() + LIMIT_S
    error, elapsed = _fetch_error(_url(trickler, "/slow-body.png"), tmp_path / "a.png", deadline=deadline)
    assert error.code is ErrorCode.TIMEOUT
    assert error.retryable  # a faster source would make it
    assert "JOB_TIMEOUT_S" in error.message and error.details["bytes_received"] < 200
    assert elapsed < LIMIT_S + SLACK_S


def test_a_fast_url_within_the_limits_is_not_cut(tmp_path: Path) -> None:
    class Quick(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"image")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quick)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        dest = tmp_path / "a.png"
        url = _url(server, "/a.png")
        assert fetch_url(url, dest, max_bytes=MIB, allow_private=True, deadline=time.monotonic() + 30) == 5
        assert dest.read_bytes() == b"image"
    finally:
        server.shutdown()
        server.server_close()


def _download_error(
    s3: S3Bucket, proxy: S3FaultProxy, tmp_path: Path, **options: Any
) -> tuple[WorkerError, float]:
    """The error a download through ``proxy`` ends with, and how long it took; nothing left behind."""
    storage = s3.make_storage(proxy.endpoint, retries=4)
    dest = tmp_path / "v.mp4"
    started = time.monotonic()
    with pytest.raises(WorkerError) as caught:
        storage.download("videos/v.mp4", dest, max_bytes=MIB, field="driving_video_path", **options)
    assert not dest.exists()
    return caught.value, time.monotonic() - started


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_trickling_minio_download_ends_at_the_jobs_deadline(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path, method: str
) -> None:
    s3.put("videos/v.mp4", b"v" * 100)
    s3_proxy.trickle_next(method, TRICKLE_S)
    error, elapsed = _download_error(s3, s3_proxy, tmp_path, deadline=time.monotonic() + LIMIT_S)
    assert error.code is ErrorCode.TIMEOUT and error.retryable
    assert "JOB_TIMEOUT_S" in error.message and "too slowly" in error.message
    assert elapsed < LIMIT_S + SLACK_S
    assert s3_proxy.count(method) == 1  # no retry begins after the deadline


def cancelled_after(seconds: float) -> threading.Event:
    """A job's cancel, set ``seconds`` from now (RunPod's cancel arriving mid-download)."""
    cancel = threading.Event()
    timer = threading.Timer(seconds, cancel.set)
    timer.daemon = True
    timer.start()
    return cancel


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_cancel_ends_a_trickling_minio_download_at_once(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path, method: str
) -> None:
    """The job's deadline is far away: the cancel alone ends it, and no retry begins after it."""
    s3.put("videos/v.mp4", b"v" * 100)
    s3_proxy.trickle_next(method, TRICKLE_S)
    error, elapsed = _download_error(
        s3, s3_proxy, tmp_path, deadline=time.monotonic() + 600, cancel=cancelled_after(LIMIT_S)
    )
    assert error.code is ErrorCode.CANCELLED
    assert elapsed < LIMIT_S + SLACK_S
    assert s3_proxy.count(method) == 1


@pytest.mark.parametrize("path", ["/slow-body.png", "/slow-headers.png"])
def test_a_cancel_ends_a_trickling_url_fetch_at_once(
    trickler: ThreadingHTTPServer, tmp_path: Path, path: str
) -> None:
    error, elapsed = _fetch_error(
        _url(trickler, path),
        tmp_path / "a.png",
        deadline=time.monotonic() + 600,
        cancel=cancelled_after(LIMIT_S),
    )
    assert error.code is ErrorCode.CANCELLED
    assert elapsed < LIMIT_S + SLACK_S
    assert trickler.requests == 1  # type: ignore[attr-defined]


def test_a_minio_download_within_the_deadline_is_not_cut(s3: S3Bucket, tmp_path: Path) -> None:
    s3.put("videos/v.mp4", b"v" * 100)
    dest = tmp_path / "v.mp4"
    size = s3.storage.download(
        "videos/v.mp4", dest, max_bytes=MIB, field="driving_video_path", deadline=time.monotonic() + 30
    )
    assert size == 100 and dest.read_bytes() == b"v" * 100


def test_a_job_with_a_trickling_image_url_ends_as_timeout_at_job_timeout_s(
    s3: S3Bucket,
    s3_env: dict[str, str],
    fake_comfy: FakeComfyUI,
    trickler: ThreadingHTTPServer,
    tmp_path: Path,
) -> None:
    """The reported case: JOB_TIMEOUT_S=60 held the job 150 s. Here JOB_TIMEOUT_S=4 (the 1-s video's
    estimate on the model-free workflow is about 2 s, so the job is not refused up front)."""
    video = make_driving_video(tmp_path / "talk.mp4", seconds=1, fps=24, width=160, height=90, audio=False)
    s3.put("inputs/talk.mp4", video)
    env = worker_env(s3_env, fake_comfy, tmp_path / "work", "workflows/model_free_still.json")
    runner = JobRunner(Settings.from_env({**env, "JOB_TIMEOUT_S": "4", "ALLOW_PRIVATE_URLS": "1"}))
    started = time.monotonic()
    result = runner.run(
        "job-slow-url",
        {"input_image_url": _url(trickler, "/slow-body.png"), "driving_video_path": "inputs/talk.mp4"},
        lambda update: None,
    )
    elapsed = time.monotonic() - started
    assert result["error_code"] == "TIMEOUT", result
    assert result["details"]["field"] == "input_image_url"
    assert result["details"]["retryable"] is True
    assert elapsed < 4 + SLACK_S
    assert s3.keys() == ["inputs/talk.mp4"]
    assert list((tmp_path / "work").iterdir()) == []  # the job's folder is gone
