"""Chunked jobs end to end (issue 10), through ``handler.handler`` against a moto S3 server and the
fake ComfyUI running ``workflows/model_free_chunked.json``: the driving video with the avatar inset,
each output frame made from its own driving frame, as prompts of 48 frames whose raw frames the
worker encodes. A 3-s clip is 72 frames: three chunks of 24.

Checked: the joined output has exactly N frames in the driving video's order (frames at the chunk
joins included) and its audio; a worker killed between chunks leaves its finished chunks in MinIO
and the job delivered again runs only the rest; the same job id with another input or setting
starts over and never mixes chunks; the scratch prefix is empty once the output is uploaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import runpod

import handler
from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_avatar_image, make_driving_video
from tests.support.comfy import worker_env
from tests.support.results import from_handler
from worker.media import conform_driving_video

REPO = Path(__file__).resolve().parent.parent
AVATAR_KEY, VIDEO_KEY = "inputs/avatar.png", "inputs/talk.mp4"
SCRATCH = "wan-worker-scratch"
W, H, FRAMES = 1280, 720, 72
FRAME_BYTES = W * H * 3


@dataclass(frozen=True)
class Media:
    avatar: Path
    video: Path
    driving_frames: list[bytes]  # the conformed driving video's frames, rgb24


def decode(path: Path) -> list[bytes]:
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return [raw[i : i + FRAME_BYTES] for i in range(0, len(raw), FRAME_BYTES)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("chunked-media")
    video = make_driving_video(folder / "talk.mp4", seconds=3, fps=30, width=320, height=180)
    conformed = conform_driving_video(video, folder / "conformed.mp4", max_duration_s=60)
    assert conformed.frames == FRAMES
    return Media(
        avatar=make_avatar_image(folder / "avatar.png", width=300, height=400),
        video=video,
        driving_frames=decode(conformed.path),
    )


@dataclass
class Stack:
    s3: Any
    comfy: FakeComfyUI
    env: dict[str, str]
    progress: list[dict[str, Any]]

    def run(self, job_input: dict[str, Any], job_id: str) -> dict[str, Any]:
        handler._runner = None
        return from_handler(asyncio.run(handler.handler({"id": job_id, "input": job_input})))

    def scratch(self) -> list[str]:
        written = self.s3.keys()  # every key of the bucket (a list, not a dict view)
        return [key for key in written if key.startswith(SCRATCH + "/")]

    def prompts(self) -> int:
        return len(self.comfy.history())


@pytest.fixture
def stack(
    s3: Any,
    s3_env: dict[str, str],
    fake_comfy: FakeComfyUI,
    media: Media,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:
    s3.put(AVATAR_KEY, media.avatar)
    s3.put(VIDEO_KEY, media.video)
    progress: list[dict[str, Any]] = []
    monkeypatch.setattr(runpod.serverless, "progress_update", lambda job, payload: progress.append(payload))
    env = worker_env(s3_env, fake_comfy, tmp_path / "work", "workflows/model_free_chunked.json")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = s3.snapshot()
    yield Stack(s3=s3, comfy=fake_comfy, env=env, progress=progress)
    handler._runner = None
    after = s3.snapshot()
    for key in (AVATAR_KEY, VIDEO_KEY):
        assert after[key] == before[key], f"input {key} was modified"


def job_input(**extra: Any) -> dict[str, Any]:
    return {"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY, **extra}


def check_output(stack: Stack, result: dict[str, Any], media: Media, tmp_path: Path) -> None:
    """Exactly N frames, in the driving video's order (each one nearest to its own driving frame,
    the frames on both sides of every chunk join included), with the audio."""
    assert "error_code" not in result, result
    assert result["video"]["frames"] == FRAMES and result["video"]["has_audio"] is True
    path = tmp_path / "output.mp4"
    path.write_bytes(stack.s3.get_bytes(result["minio_key"]))
    frames = decode(path)
    assert len(frames) == FRAMES
    below_inset = slice(240 * W * 3, None)  # rows under the avatar inset: the driving frame only
    for index in (0, 1, 22, 23, 24, 25, 47, 48, 49, 70, 71):
        errors = {
            k: _mean_abs(frames[index][below_inset], media.driving_frames[k][below_inset])
            for k in range(max(0, index - 2), min(FRAMES, index + 3))
        }
        assert min(errors, key=errors.__getitem__) == index, (index, errors)
        assert errors[index] < 3.0, (index, errors[index])


def _mean_abs(a: bytes, b: bytes) -> float:
    step = 101
    return sum(abs(x - y) for x, y in zip(a[::step], b[::step], strict=True)) / len(a[::step])


def test_a_chunked_job_joins_its_chunks_exactly(stack: Stack, media: Media, tmp_path: Path) -> None:
    result = stack.run(job_input(), "job-chunks")
    check_output(stack, result, media, tmp_path)
    assert result["chunks"] == {"count": 3, "resumed": 0}
    assert stack.prompts() == 3
    assert stack.scratch() == []  # removed once the output was uploaded
    seen = {(p.get("chunk"), p.get("chunks")) for p in stack.progress if p["stage"] == "inference"}
    assert {(1, 3), (2, 3), (3, 3)} <= seen
    percents = [p["percent"] for p in stack.progress]
    assert percents == sorted(percents)
    # ComfyUI's input and output folders hold nothing of the job any more
    assert not [p for p in stack.comfy.output_dir.rglob("*") if p.is_file()]
    assert not [p for p in stack.comfy.input_dir.rglob("*") if p.is_file()]


def _run_in_child(stack: Stack, job_id: str, job: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    """The job in a worker process of its own (its log in ``log``: a pipe nobody reads could fill)."""
    script = (
        "import asyncio, json, sys, handler\n"
        "job = json.loads(sys.argv[1])\n"
        "print(json.dumps(asyncio.run(handler.handler(job))))\n"
    )
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-c", script, json.dumps({"id": job_id, "input": job})],
            cwd=REPO,
            env={**os.environ, **stack.env, "WORK_DIR": stack.env["WORK_DIR"] + "-child"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _kill_after_first_chunk(stack: Stack, job_id: str, job: dict[str, Any]) -> list[str]:
    """Run the job in a worker process and SIGKILL it once chunk 1 is kept in MinIO."""
    stack.comfy.set_fault("slow", seconds=0.4, times=None)  # a prompt takes a few seconds
    log = Path(stack.env["WORK_DIR"]).parent / f"{job_id}-child.log"
    child = _run_in_child(stack, job_id, job, log)
    first = f"{SCRATCH}/{job_id}/chunk-0001.mp4"
    try:
        deadline = time.monotonic() + 120
        while first not in stack.scratch():
            assert child.poll() is None, f"the worker ended before chunk 1 was kept:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"chunk 1 never reached MinIO:\n{log.read_text()}"
            time.sleep(0.05)  # polling MinIO for the chunk, not waiting a fixed time
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        stack.comfy.clear_faults()
    kept = stack.scratch()
    assert first in kept and f"{SCRATCH}/{job_id}/chunk-0003.mp4" not in kept
    written = stack.s3.keys()
    assert not [key for key in written if key.startswith("outputs/")]  # nothing half-made
    _wait_until_idle(stack.comfy)
    return kept


def _wait_until_idle(comfy: FakeComfyUI) -> None:
    """The killed worker's prompt still runs in ComfyUI: let it end, as a real one would."""
    deadline = time.monotonic() + 60
    while any(comfy.queue_ids()):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_job_delivered_again_after_its_worker_died_resumes(
    stack: Stack, media: Media, tmp_path: Path
) -> None:
    kept = _kill_after_first_chunk(stack, "job-kill", job_input())
    finished = sum(key.endswith(".mp4") for key in kept)
    before = stack.prompts()
    result = stack.run(job_input(), "job-kill")
    check_output(stack, result, media, tmp_path)
    assert result["chunks"] == {"count": 3, "resumed": finished}
    assert stack.prompts() - before == 3 - finished  # only the chunks not yet kept
    assert stack.scratch() == []


def test_the_same_job_id_with_another_input_starts_over(stack: Stack, media: Media, tmp_path: Path) -> None:
    _kill_after_first_chunk(stack, "job-changed", job_input(prompt="a first prompt"))
    before = stack.prompts()
    result = stack.run(job_input(prompt="another prompt"), "job-changed")
    check_output(stack, result, media, tmp_path)
    assert result["chunks"] == {"count": 3, "resumed": 0}  # nothing of the other input reused
    assert stack.prompts() - before == 3
    assert stack.scratch() == []


def test_a_damaged_kept_chunk_is_made_again(stack: Stack, media: Media, tmp_path: Path) -> None:
    kept = _kill_after_first_chunk(stack, "job-damaged", job_input())
    first = next(key for key in kept if key.endswith("chunk-0001.mp4"))
    info = stack.s3.storage.stat(first)
    assert info is not None and len(info.metadata["fingerprint"]) == 64
    stack.s3.put(first, b"not a video", metadata=info.metadata)  # the same fingerprint, bad bytes
    before = stack.prompts()
    result = stack.run(job_input(), "job-damaged")
    check_output(stack, result, media, tmp_path)
    assert result["chunks"]["resumed"] == 0
    assert stack.prompts() - before == 3


def test_a_job_that_fails_in_a_later_chunk_leaves_nothing_behind(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed job is not delivered again, so its kept chunks are deleted with it."""
    armed: list[bool] = []

    def progress(job: Any, payload: dict[str, Any]) -> None:
        stack.progress.append(payload)
        if payload.get("chunk") == 2 and not armed:
            armed.append(True)  # chunk 1 is done; chunk 2's output node fails
            stack.comfy.set_fault("runtime_error", exception_message="boom in chunk 2")

    monkeypatch.setattr(runpod.serverless, "progress_update", progress)
    result = stack.run(job_input(), "job-fails")
    assert result.get("error_code") == "GENERATION_FAILED", result
    assert "boom in chunk 2" in result["error"]
    assert stack.prompts() == 2 and armed
    assert stack.scratch() == []
    written = stack.s3.keys()
    assert not [key for key in written if key.startswith("outputs/")]
