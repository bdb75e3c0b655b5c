"""A full scratch disk is the worker's own problem (issue 13): WORKER_DISK_FULL with
``refresh_worker``, never STORAGE_ERROR (check credentials) nor INVALID_MEDIA (send a playable video).

Two real ways to fill a disk:

- ``/dev/full``: every write to it fails with ENOSPC, from the kernel, for any user. A download's
  destination or ffmpeg's output pointed at it (a symlink, or the path itself) fails exactly as on a
  full disk. These tests run everywhere.
- a tmpfs of a few KB as ``WORK_DIR``, for a whole job: the disk fills at the download, or at the
  conversion (ffmpeg 5.1 then even exits 0, with "No space left on device" in its log). Mounting
  needs root (CAP_SYS_ADMIN); elsewhere (CI runs as a user) those tests are skipped with that reason.
  RLIMIT_FSIZE is no substitute: it gives EFBIG and SIGXFSZ, not ENOSPC.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ffmpeg
import pytest

from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_avatar_image, make_driving_video
from tests.support.comfy import worker_env
from tests.support.s3 import S3Bucket
from worker.config import Settings
from worker.errors import ErrorCode, WorkerError
from worker.job import JobRunner
from worker.media import _run_ffmpeg, media_input
from worker.urlfetch import fetch_url

DEV_FULL = Path("/dev/full")
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full (Linux)")


def _full_destination(tmp_path: Path, name: str) -> Path:
    """A path in the job's folder whose writes fail with ENOSPC."""
    dest = tmp_path / name
    dest.symlink_to(DEV_FULL)
    return dest


def _assert_disk_full(error: WorkerError) -> None:
    assert error.code is ErrorCode.WORKER_DISK_FULL, error
    assert error.refresh_worker and error.retryable
    assert "worker's own disk" in error.message


def test_a_minio_download_onto_a_full_disk(s3: S3Bucket, tmp_path: Path) -> None:
    s3.put("videos/v.mp4", b"v" * 300_000)
    dest = _full_destination(tmp_path, "driving.src")
    with pytest.raises(WorkerError) as caught:
        s3.storage.download("videos/v.mp4", dest, max_bytes=MIB, field="driving_video_path")
    _assert_disk_full(caught.value)
    assert "downloading driving_video_path" in caught.value.message
    assert not dest.exists() and not dest.is_symlink()


def test_a_url_download_onto_a_full_disk(tmp_path: Path) -> None:
    class Image(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(300_000))
            self.end_headers()
            self.wfile.write(b"i" * 300_000)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Image)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        dest = _full_destination(tmp_path, "avatar.src")
        url = f"http://127.0.0.1:{server.server_address[1]}/a.png"
        with pytest.raises(WorkerError) as caught:
            fetch_url(url, dest, max_bytes=MIB, allow_private=True)
    finally:
        server.shutdown()
        server.server_close()
    _assert_disk_full(caught.value)
    assert not dest.is_symlink()


def test_ffmpeg_writing_onto_a_full_disk(tmp_path: Path) -> None:
    video = make_driving_video(tmp_path / "v.mp4", seconds=0.5, width=160, height=90, audio=False)
    with pytest.raises(WorkerError) as caught:
        _run_ffmpeg(
            ffmpeg.output(media_input(video).video, str(DEV_FULL), f="mp4", vcodec="libx264"),
            what="the driving video",
            paths=[video],
        )
    _assert_disk_full(caught.value)
    assert "ffmpeg writing the driving video" in caught.value.message


def test_comfyui_failing_on_a_full_disk_replaces_the_worker(
    s3: S3Bucket, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """ComfyUI runs beside the worker, on its disk: its ENOSPC is the worker's too."""
    _put_inputs(s3, tmp_path)
    fake_comfy.set_fault(
        "runtime_error",
        exception_type="OSError",
        exception_message="[Errno 28] No space left on device: '/comfyui/output/wan-worker/x.mp4'",
    )
    result = _run_job(s3_env, fake_comfy, tmp_path / "work")
    assert result["error_code"] == "WORKER_DISK_FULL", result
    assert result["refresh_worker"] is True and result["details"]["retryable"] is True


# -- a whole job on a tiny disk (root only) ------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Any]:
    """``mount(size_bytes) -> Path``: a tmpfs of that size (unmounted after the test)."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        folder = tmp_path / f"disk-{len(mounted)}"
        folder.mkdir()
        size_kib = max(4, -(-size_bytes // 4096) * 4)
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"mounting a tmpfs needs root (CAP_SYS_ADMIN): {proc.stderr.strip()[:120]}")
        mounted.append(folder)
        return folder

    try:
        yield mount
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def _put_inputs(s3: S3Bucket, tmp_path: Path) -> tuple[int, int]:
    avatar = make_avatar_image(tmp_path / "avatar.jpg", width=64, height=64, fmt="JPEG")
    video = make_driving_video(tmp_path / "talk.mp4", seconds=1, fps=24, width=160, height=90, audio=False)
    s3.put("inputs/avatar.jpg", avatar)
    s3.put("inputs/talk.mp4", video)
    return avatar.stat().st_size, video.stat().st_size


def _run_job(s3_env: dict[str, str], comfy: FakeComfyUI, work_dir: Path) -> dict[str, Any]:
    env = worker_env(s3_env, comfy, work_dir, "workflows/model_free_still.json")
    runner = JobRunner(Settings.from_env(env))
    return runner.run(
        "job-disk",
        {"input_image_minio_path": "inputs/avatar.jpg", "driving_video_path": "inputs/talk.mp4"},
        lambda update: None,
    )


def test_a_job_whose_disk_fills_during_the_download(
    s3: S3Bucket, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path, tiny_disk: Any
) -> None:
    avatar_bytes, video_bytes = _put_inputs(s3, tmp_path)
    work = tiny_disk(avatar_bytes + 4096)  # the avatar fits, the driving video does not
    assert video_bytes > 8192
    result = _run_job(s3_env, fake_comfy, work)
    assert result["error_code"] == "WORKER_DISK_FULL", result
    assert "downloading driving_video_path" in result["error"]
    assert result["refresh_worker"] is True
    assert s3.keys() == ["inputs/avatar.jpg", "inputs/talk.mp4"]


def test_a_job_whose_disk_fills_during_the_conversion(
    s3: S3Bucket, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path, tiny_disk: Any
) -> None:
    """Was INVALID_MEDIA ("send a playable video"): the conformed 1280x720 video does not fit."""
    avatar_bytes, video_bytes = _put_inputs(s3, tmp_path)
    # Both downloads and the avatar's PNG fit (a 64x64 PNG is a few KB); the conversion does not.
    work = tiny_disk(avatar_bytes + video_bytes + 64 * 1024)
    result = _run_job(s3_env, fake_comfy, work)
    assert result["error_code"] == "WORKER_DISK_FULL", result
    assert "ffmpeg writing the driving video" in result["error"]
    assert result["refresh_worker"] is True
    assert s3.keys() == ["inputs/avatar.jpg", "inputs/talk.mp4"]
    assert list(work.iterdir()) == []  # the job's folder is removed all the same
