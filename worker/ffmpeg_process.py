"""ffmpeg as a child process a job can watch and stop.

* Progress: ffmpeg's own ``-progress`` report (one block of ``key=value`` lines every
  ``PROGRESS_PERIOD_S``, and one at the end) is read from its stdout as it comes and its ``frame``
  count (frames written to the first video output) handed to ``on_frames``; so no output may go to
  stdout.
* Stop: a cancelled job's ffmpeg (and one past its time limit) is terminated at once: SIGTERM
  (ffmpeg stops after the frame in hand), then SIGKILL when it has not exited within
  ``TERMINATE_GRACE_S``. A cancelled job must not keep converting while its worker takes the
  next one.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from worker.logs import log_event

PROGRESS_PERIOD_S = 0.5
TERMINATE_GRACE_S = 2.0
_POLL_S = 0.1


class FfmpegStopped(Exception):
    """ffmpeg was stopped before it finished: ``reason`` is "cancelled" or "timeout"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FfmpegOutcome:
    returncode: int
    stderr: str


def run_ffmpeg(
    args: Sequence[str],
    *,
    timeout_s: float,
    cancel: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> FfmpegOutcome:
    """Runs ``args`` (``ffmpeg`` first) to the end; FfmpegStopped when ``cancel`` is set or
    ``timeout_s`` passes first, with the process gone by then."""
    if cancel is not None and cancel.is_set():
        raise FfmpegStopped("cancelled")  # not started at all: a short run could end before a check
    command = [args[0], "-progress", "pipe:1", "-stats_period", f"{PROGRESS_PERIOD_S:g}", *args[1:]]
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []
    readers = [
        threading.Thread(target=_read_progress, args=(process.stdout, on_frames), daemon=True),
        threading.Thread(target=stderr.extend, args=(process.stderr,), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                process.wait(_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel is not None and cancel.is_set():
                raise FfmpegStopped("cancelled")
            if time.monotonic() > deadline:
                raise FfmpegStopped("timeout")
    finally:
        if process.poll() is None:
            stop_process(process)
        for reader in readers:
            reader.join()
        process.stdout.close()
        process.stderr.close()
    return FfmpegOutcome(returncode=process.returncode, stderr="".join(stderr))


def stop_process(process: subprocess.Popen[str], grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; returns once the process is gone."""
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        log_event("ffmpeg_killed", level="warning", pid=process.pid, grace_s=grace_s)


def _read_progress(stream: IO[str], on_frames: Callable[[int], None] | None) -> None:
    """Reads the ``-progress`` blocks to the end (the pipe must be drained either way)."""
    frame: int | None = None
    for line in stream:
        key, _, value = line.strip().partition("=")
        if key == "frame" and value.isdigit():
            frame = int(value)
        elif key == "progress" and frame is not None and on_frames is not None:
            try:
                on_frames(frame)
            except Exception as exc:  # progress is best effort: never fail the conversion over it
                log_event("ffmpeg_progress_callback_failed", level="warning", error=repr(exc))
