"""ffmpeg as a process the job watches and stops (worker/ffmpeg_process.py), and its use by the
media steps: real ffmpeg, media generated here."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from worker.chunk_media import encode_frames
from worker.errors import ErrorCode, WorkerError
from worker.ffmpeg_process import FfmpegStopped, run_ffmpeg, stop_process
from worker.media import conform_driving_video


def ffmpeg_children() -> list[int]:
    """This process's child processes that are ffmpeg (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == str(os.getpid()) and fields.get("Name", "").strip() == "ffmpeg":
            children.append(int(entry.name))
    return children


def endless_source() -> list[str]:
    """An ffmpeg input that never ends by itself: a test pattern read at its own pace (-re)."""
    return ["ffmpeg", "-nostdin", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=24"]


def test_progress_reports_the_frames_written_up_to_the_last() -> None:
    frames: list[int] = []
    args = ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=24:duration=2"]
    outcome = run_ffmpeg([*args, "-f", "null", "-"], timeout_s=60, on_frames=frames.append)

    assert outcome.returncode == 0, outcome.stderr
    assert frames and frames[-1] == 48
    assert frames == sorted(frames)


def test_a_cancel_stops_a_running_ffmpeg_and_nothing_is_left_running(tmp_path: Path) -> None:
    cancel = threading.Event()
    reports: list[int] = []

    def on_frames(frame: int) -> None:
        reports.append(frame)
        cancel.set()  # at the first report, while ffmpeg is still converting

    args = [*endless_source(), "-y", str(tmp_path / "out.mp4")]
    with pytest.raises(FfmpegStopped) as stopped:
        run_ffmpeg(args, timeout_s=120, cancel=cancel, on_frames=on_frames)

    assert stopped.value.reason == "cancelled"
    assert reports
    assert ffmpeg_children() == []


def test_a_conversion_past_its_time_limit_is_stopped() -> None:
    args = [*endless_source(), "-f", "null", "-"]
    with pytest.raises(FfmpegStopped) as stopped:
        run_ffmpeg(args, timeout_s=0.5)

    assert stopped.value.reason == "timeout"
    assert ffmpeg_children() == []


def test_a_process_that_ignores_sigterm_is_killed() -> None:
    # ``exec`` keeps the ignored SIGTERM: the process left is one that will not stop when asked.
    process = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; exec sleep 60"], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"  # SIGTERM is ignored from here on
    stop_process(process, grace_s=0.2)
    process.stdout.close()
    assert process.returncode == -9


def test_a_cancelled_job_conforms_nothing(driving_video: Path, tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    dest = tmp_path / "out" / "driving.mp4"
    with pytest.raises(WorkerError) as caught:
        conform_driving_video(driving_video, dest, max_duration_s=30, cancel=cancel)

    assert caught.value.code is ErrorCode.CANCELLED
    assert list(dest.parent.iterdir()) == []  # no half-written file
    assert ffmpeg_children() == []


def test_conform_reports_its_frames_as_ffmpeg_writes_them(driving_video: Path, tmp_path: Path) -> None:
    progress: list[tuple[int, int]] = []
    driving = conform_driving_video(
        driving_video, tmp_path / "driving.mp4", max_duration_s=30, on_progress=lambda *p: progress.append(p)
    )

    assert progress and progress[-1] == (driving.frames, driving.frames)
    assert all(total == driving.frames and 0 <= done <= total for done, total in progress)


def test_a_cancelled_chunk_encode_writes_nothing(tmp_path: Path) -> None:
    raw = tmp_path / "frames.rgb"
    raw.write_bytes(bytes(64 * 32 * 3) * 24)
    cancel = threading.Event()
    cancel.set()
    dest = tmp_path / "out" / "chunk.mp4"
    with pytest.raises(WorkerError) as caught:
        encode_frames(raw, dest, width=64, height=32, frames=24, fps=24, cancel=cancel)

    assert caught.value.code is ErrorCode.CANCELLED
    assert list(dest.parent.iterdir()) == []
