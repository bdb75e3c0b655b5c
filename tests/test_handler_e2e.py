"""End to end through ``handler.handler(job)``: a moto S3 server, the fake ComfyUI speaking
ComfyUI 0.33.0's protocol and running the model-free workflow with ffmpeg, and real media.

Nothing of the worker is mocked; only RunPod's ``progress_update`` (which would post to
RunPod) is replaced by a recorder.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import runpod

import handler
from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import (
    make_avatar_image,
    make_corrupt_image,
    make_driving_video,
    make_truncated_mp4,
)
from localdev.queue_api import serve_in_thread
from tests.support.comfy import worker_env
from tests.support.logs import events
from tests.support.poll import until
from tests.support.results import from_handler
from worker.probe import ffprobe

AVATAR_KEY = "inputs/avatar.png"
VIDEO_KEY = "inputs/talk.mp4"
SILENT_VIDEO_KEY = "inputs/silent.mp4"


@dataclass(frozen=True)
class Media:
    avatar: Path
    video: Path  # 2 s, 320x180 at 30 fps with audio -> 48 frames at 24 fps
    silent_video: Path  # 1 s, 320x180 at 24 fps, no audio -> 24 frames


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("e2e-media")
    return Media(
        avatar=make_avatar_image(folder / "avatar.png", width=300, height=400),
        video=make_driving_video(folder / "talk.mp4", seconds=2, fps=30, width=320, height=180),
        silent_video=make_driving_video(
            folder / "silent.mp4", seconds=1, fps=24, width=320, height=180, audio=False
        ),
    )


@dataclass
class Stack:
    s3: Any
    comfy: FakeComfyUI
    progress: list[dict[str, Any]]
    env: dict[str, str]
    set_env: Callable[..., None]

    def run(self, job_input: dict[str, Any], job_id: str = "job-1") -> dict[str, Any]:
        return from_handler(asyncio.run(handler.handler({"id": job_id, "input": job_input})))

    def outputs(self) -> list[str]:
        """Every key the worker may have written (tests put their inputs under inputs/)."""
        written = self.s3.keys()  # the fixture lists every key of the test bucket
        return sorted(key for key in written if not key.startswith("inputs/"))


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
    s3.put(SILENT_VIDEO_KEY, media.silent_video)
    progress: list[dict[str, Any]] = []
    monkeypatch.setattr(runpod.serverless, "progress_update", lambda job, payload: progress.append(payload))
    env = worker_env(s3_env, fake_comfy, tmp_path / "work", "workflows/model_free_still.json")

    def set_env(**overrides: str) -> None:
        for name, value in {**env, **overrides}.items():
            monkeypatch.setenv(name, value)
        handler._runner = None  # the worker reads its settings once: rebuild it

    set_env()
    before = s3.snapshot()
    yield Stack(s3=s3, comfy=fake_comfy, progress=progress, env=env, set_env=set_env)
    handler._runner = None
    after = s3.snapshot()
    for key in (AVATAR_KEY, VIDEO_KEY, SILENT_VIDEO_KEY):
        assert after[key] == before[key], f"input {key} was modified"


def fetch_output(stack: Stack, key: str, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "fetched.mp4"
    path.write_bytes(stack.s3.get_bytes(key))
    probe = ffprobe(path, "-count_packets")
    video = next(s for s in probe["streams"] if s["codec_type"] == "video")
    audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    return {
        "codec": video["codec_name"],
        "pix_fmt": video["pix_fmt"],
        "size": (video["width"], video["height"]),
        "fps": video["avg_frame_rate"],
        "frames": int(video["nb_read_packets"]),
        "has_audio": bool(audio),
    }


def assert_failed(result: dict[str, Any], code: str, stack: Stack) -> None:
    assert result.get("error_code") == code, result
    assert isinstance(result["error"], str) and result["error"]
    assert isinstance(result["details"], dict)
    assert stack.outputs() == [], "a failed job must write nothing to MinIO"


# -- happy paths ---------------------------------------------------------------------------


def test_happy_path_with_audio(stack: Stack, tmp_path: Path) -> None:
    result = stack.run(
        {
            "input_image_minio_path": AVATAR_KEY,
            "driving_video_path": VIDEO_KEY,
            "user_id": "u1",
            "avatar_id": "a1",
        }
    )
    assert "error" not in result, result
    assert result["minio_key"] == "outputs/u1/a1/job-1.mp4"
    assert result["video"] == {
        "width": 1280,
        "height": 720,
        "fps": 24.0,
        "frames": 48,
        "duration_s": 2.0,
        "has_audio": True,
        "size_bytes": result["video"]["size_bytes"],
    }
    assert set(result["timings_s"]) == {
        "download",
        "prepare",
        "queue",
        "inference",
        "postprocess",
        "upload",
        "total",
    }
    assert result["workflow"]["name"] == "model_free_still"
    assert len(result["workflow"]["sha256"]) == 64
    assert result["reused"] is False
    assert "presigned_url" not in result
    assert result["attention_backend"] is None  # the fake ComfyUI has no attention node

    # The object in MinIO is what was promised, checked independently of the worker.
    fetched = fetch_output(stack, result["minio_key"], tmp_path)
    assert fetched == {
        "codec": "h264",
        "pix_fmt": "yuv420p",
        "size": (1280, 720),
        "fps": "24/1",
        "frames": 48,
        "has_audio": True,
    }
    info = stack.s3.storage.stat(result["minio_key"])
    assert info.content_type == "video/mp4"
    assert info.size == result["video"]["size_bytes"]

    # Progress went through every stage, in order, and ended at the upload.
    stages = [p["stage"] for p in stack.progress]
    order = ["download", "prepare", "queue", "inference", "postprocess", "upload"]
    seen = [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s]
    assert [s for s in order if s in seen] == order
    assert seen == sorted(seen, key=order.index)
    percents = [p["percent"] for p in stack.progress]
    assert percents == sorted(percents)

    # ComfyUI's copies of this job's inputs and outputs are gone.
    assert [p for p in stack.comfy.input_dir.rglob("*") if p.is_file()] == []
    assert [p for p in stack.comfy.output_dir.rglob("*") if p.is_file()] == []


def test_happy_path_without_audio_and_presigned_url(stack: Stack, tmp_path: Path) -> None:
    result = stack.run(
        {
            "input_image_minio_path": AVATAR_KEY,
            "driving_video_path": SILENT_VIDEO_KEY,
            "return_presigned_url": True,
        }
    )
    assert "error" not in result, result
    assert result["minio_key"] == "outputs/_no-user/_no-avatar/job-1.mp4"
    assert result["video"]["frames"] == 24
    assert result["video"]["has_audio"] is False
    fetched = fetch_output(stack, result["minio_key"], tmp_path)
    assert fetched["has_audio"] is False
    assert fetched["frames"] == 24
    response = requests.get(result["presigned_url"], timeout=10)
    assert response.status_code == 200
    assert response.content == stack.s3.get_bytes(result["minio_key"])


def test_default_driving_video(stack: Stack) -> None:
    stack.set_env(DEFAULT_DRIVING_VIDEO_PATH=SILENT_VIDEO_KEY)
    result = stack.run({"input_image_minio_path": AVATAR_KEY})
    assert "error" not in result, result
    assert result["video"]["frames"] == 24


def test_hd_30fps_driving_video_is_conformed_to_120_frames(stack: Stack, tmp_path: Path) -> None:
    source = make_driving_video(tmp_path / "hd.mp4", seconds=5, fps=30, width=1920, height=1080)
    stack.s3.put("inputs/hd.mp4", source)
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": "inputs/hd.mp4"})
    assert "error" not in result, result
    fetched = fetch_output(stack, result["minio_key"], tmp_path)
    assert fetched["frames"] == 120
    assert fetched["size"] == (1280, 720)
    assert fetched["fps"] == "24/1"
    assert fetched["has_audio"] is True


def test_framing_crop_and_the_delivered_colours(stack: Stack, tmp_path: Path) -> None:
    """A portrait driving video with framing "crop"; the avatar's flat colour reaches the user
    within 2 levels through the (fake) SaveVideo's BT.709 encode and the worker's finalize."""
    from PIL import Image

    from tests.test_media_colour import PATCH, _decode_rgb, _patch_mean, _tags

    Image.new("RGB", (1280, 720), PATCH).save(tmp_path / "flat.png")
    stack.s3.put("inputs/flat.png", tmp_path / "flat.png")
    portrait = make_driving_video(tmp_path / "phone.mp4", seconds=1, fps=30, width=360, height=640)
    stack.s3.put("inputs/phone.mp4", portrait)
    job = {"input_image_minio_path": "inputs/flat.png", "driving_video_path": "inputs/phone.mp4"}
    result = stack.run({**job, "framing": "crop"})
    assert "error" not in result, result
    fetched = tmp_path / "out.mp4"
    fetched.write_bytes(stack.s3.get_bytes(result["minio_key"]))
    assert _tags(fetched) == ("bt709", "bt709", "bt709", "tv")
    assert abs(_patch_mean(_decode_rgb(fetched)) - PATCH).max() <= 2

    refused = stack.run({**job, "framing": "stretch"})
    assert refused["error_code"] == "INVALID_INPUT" and refused["details"]["field"] == "framing"


def test_job_delivered_twice_is_not_generated_again(stack: Stack) -> None:
    job = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}
    first = stack.run(job, job_id="twice")
    assert "error" not in first, first
    prompts_after_first = len(stack.comfy.history())
    stored = stack.s3.get_bytes(first["minio_key"])

    second = stack.run(job, job_id="twice")
    assert "error" not in second, second
    assert second["reused"] is True
    assert second["minio_key"] == first["minio_key"]
    assert second["video"] == first["video"]
    assert len(stack.comfy.history()) == prompts_after_first  # nothing was submitted
    assert stack.s3.get_bytes(first["minio_key"]) == stored


def test_the_same_job_id_with_another_request_makes_a_new_video(stack: Stack, tmp_path: Path) -> None:
    """A job id says nothing about the request: `--test_input` runs, a client reusing ids. Only
    the request's fingerprint (inputs' bytes, seed, prompts, framing, workflow) lets an output be
    reused; another request's output at the key is replaced."""
    job = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY}
    first = stack.run(job, job_id="same-id")
    assert "error" not in first, first
    assert first["video"]["frames"] == 48 and first["video"]["has_audio"] is True
    prompts = len(stack.comfy.history())

    for changed, frames in (({"driving_video_path": SILENT_VIDEO_KEY}, 24), ({"seed": 7}, 48)):
        again = stack.run({**job, **changed}, job_id="same-id")
        assert "error" not in again, again
        assert again["reused"] is False, changed
        assert again["minio_key"] == first["minio_key"]
        assert len(stack.comfy.history()) == prompts + 1, "the new request was not generated"
        prompts += 1
        fetched = fetch_output(stack, again["minio_key"], tmp_path)
        assert fetched["frames"] == frames == again["video"]["frames"]
        assert again["seed"] == changed.get("seed", 42)

    # The seed-7 request again: now its own output is there, and it is reused.
    reused = stack.run({**job, "seed": 7}, job_id="same-id")
    assert reused["reused"] is True and reused["seed"] == 7 and reused["video"]["frames"] == 48
    assert len(stack.comfy.history()) == prompts
    assert stack.outputs() == [first["minio_key"]]


def test_an_invalid_existing_output_of_the_same_request_is_regenerated(stack: Stack) -> None:
    job = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}
    first = stack.run(job, job_id="again")
    assert "error" not in first, first
    key = first["minio_key"]
    # The same request's metadata (its fingerprint) on a damaged object.
    metadata = stack.s3.storage.stat(key).metadata
    assert "fingerprint" in metadata, metadata
    stack.s3.put(key, b"not a video", metadata=metadata)
    result = stack.run(job, job_id="again")
    assert "error" not in result, result
    assert result["reused"] is False
    assert stack.s3.get_bytes(key) != b"not a video"


def test_sampler_progress_reaches_status(stack: Stack) -> None:
    stack.comfy.set_fault("progress", node="6", steps=4)
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert "error" not in result, result
    steps = [p for p in stack.progress if p.get("steps") == 4]
    assert [p["step"] for p in steps] == [1, 2, 3, 4], stack.progress
    assert all(p["stage"] == "inference" and 10 <= p["percent"] <= 94 for p in steps)
    # The model-free graph has no windows: the step alone is named, and moves the percent.
    assert [p["message"] for p in steps] == [f"step {k} of 4" for k in range(1, 5)]
    assert all(p["window"] is None and p["windows"] is None for p in steps)
    assert {p["node"] for p in steps} == {"Frames + driving audio at 24 fps"}
    percents = [p["percent"] for p in steps]
    assert percents == sorted(percents) and len(set(percents)) == 4


def test_throttled_progress_still_sends_every_stage_change_at_once(stack: Stack) -> None:
    """A throttle far longer than the job: each stage change still arrives, once and in order;
    the sampler's steps, held back, are dropped when a newer stage supersedes them."""
    stack.set_env(PROGRESS_INTERVAL_S="600")
    stack.comfy.set_fault("progress", node="6", steps=4)
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert "error" not in result, result
    stages = [p["stage"] for p in stack.progress]
    assert stages == ["download", "prepare", "queue", "inference", "postprocess", "upload"], stack.progress


def test_held_back_sampler_steps_reach_status_after_the_interval(stack: Stack) -> None:
    """Steps come faster than PROGRESS_INTERVAL_S and the sampler outlasts it: some steps reach
    /status, in order (that a held-back update is sent later is tests/test_progress.py's)."""
    stack.set_env(PROGRESS_INTERVAL_S="0.3")
    stack.comfy.set_fault("progress", node="6", steps=40, step_s=0.025, preview=False)
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert "error" not in result, result
    steps = [p["step"] for p in stack.progress if p.get("steps") == 40]
    assert steps, stack.progress
    assert steps == sorted(steps)


def test_dropped_socket_mid_run_still_completes(stack: Stack) -> None:
    stack.comfy.set_fault("drop_socket")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert "error" not in result, result
    assert result["video"]["frames"] == 24


def test_cached_rerun_without_a_file_is_recovered(stack: Stack) -> None:
    first = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}, "c1")
    assert "error" not in first, first
    stack.comfy.set_fault("cached_rerun")
    second = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}, "c2")
    assert "error" not in second, second
    assert second["minio_key"] == "outputs/_no-user/_no-avatar/c2.mp4"
    assert second["video"]["frames"] == 24


# -- every error code ----------------------------------------------------------------------


def test_invalid_input_unknown_field(stack: Stack) -> None:
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_key": VIDEO_KEY})
    assert_failed(result, "INVALID_INPUT", stack)
    assert "driving_video_key" in result["error"]


@pytest.mark.parametrize("key", ["../inputs/avatar.png", "/inputs/avatar.png"])
def test_unsafe_keys_are_refused(stack: Stack, key: str) -> None:
    result = stack.run({"input_image_minio_path": key, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "INVALID_INPUT", stack)


def test_input_not_found(stack: Stack) -> None:
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": "inputs/missing.mp4"})
    assert_failed(result, "INPUT_NOT_FOUND", stack)
    assert result["details"]["retryable"] is False
    assert "inputs/missing.mp4" in result["error"]


def test_input_too_long(stack: Stack) -> None:
    stack.set_env(MAX_VIDEO_DURATION_S="1.5")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "INPUT_TOO_LARGE", stack)


def test_input_too_large_in_bytes(stack: Stack) -> None:
    stack.set_env(MAX_VIDEO_BYTES="2048")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "INPUT_TOO_LARGE", stack)


def test_corrupt_image(stack: Stack, tmp_path: Path) -> None:
    stack.s3.put("inputs/corrupt.png", make_corrupt_image(tmp_path / "corrupt.png"))
    result = stack.run({"input_image_minio_path": "inputs/corrupt.png", "driving_video_path": VIDEO_KEY})
    assert_failed(result, "INVALID_MEDIA", stack)


def test_truncated_mp4(stack: Stack, media: Media, tmp_path: Path) -> None:
    stack.s3.put("inputs/truncated.mp4", make_truncated_mp4(tmp_path / "truncated.mp4", source=media.video))
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": "inputs/truncated.mp4"})
    assert_failed(result, "INVALID_MEDIA", stack)


def test_url_at_loopback_is_refused(stack: Stack) -> None:
    # The fake ComfyUI listens on 127.0.0.1 and serves files: a URL input must not reach it.
    result = stack.run(
        {"input_image_url": f"{stack.comfy.url}/system_stats?x=1", "driving_video_path": VIDEO_KEY}
    )
    assert_failed(result, "URL_NOT_ALLOWED", stack)
    assert "127.0.0.1" in result["error"] or "loopback" in result["error"]


def test_url_input_when_private_urls_are_allowed(stack: Stack, media: Media) -> None:
    # Development setting: the same loopback URL is fetched (the avatar served by ComfyUI's /view).
    stack.set_env(ALLOW_PRIVATE_URLS="1")
    (stack.comfy.output_dir / "avatar.png").write_bytes(media.avatar.read_bytes())
    url = f"{stack.comfy.url}/view?filename=avatar.png&type=output"
    result = stack.run({"input_image_url": url, "driving_video_path": SILENT_VIDEO_KEY})
    assert "error" not in result, result


def test_comfy_unavailable_refreshes_the_worker(stack: Stack) -> None:
    stack.comfy.stop()
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "COMFY_UNAVAILABLE", stack)
    assert result["refresh_worker"] is True


def test_workflow_rejected_by_comfy(stack: Stack) -> None:
    stack.comfy.set_fault("reject")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "WORKFLOW_INVALID", stack)
    assert result["details"]["node_errors"]


def test_generation_failed(stack: Stack) -> None:
    stack.comfy.set_fault("runtime_error", node="4", exception_type="RuntimeError", exception_message="boom")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "GENERATION_FAILED", stack)
    assert result["details"]["node_id"] == "4"
    assert "boom" in result["error"] or "boom" in json.dumps(result["details"])
    assert "refresh_worker" not in result


def test_a_lora_that_does_not_fit_the_model_is_a_deployment_error(stack: Stack) -> None:
    # What StrictLoraLoaderModelOnly (comfyui_nodes/wan_worker_nodes/lora.py) raises inside ComfyUI.
    message = (
        "LoRA 'wan2.2_animate_14B_relight_lora_bf16.safetensors': 0 of 1200 keys matched the model; "
        "ComfyUI would silently ignore the rest.\nUnmatched keys: blocks.0.cross_attn.k.alpha (+1199 more)."
    )
    stack.comfy.set_fault(
        "runtime_error",
        node="4",
        exception_type="custom_nodes.wan_worker_nodes.lora_keys.LoraKeysNotMatchedError",
        exception_message=message,
    )
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "WORKFLOW_INVALID", stack)
    assert result["error"].startswith(
        "LoRA 'wan2.2_animate_14B_relight_lora_bf16.safetensors': 0 of 1200 keys matched the model"
    )
    details = result["details"]
    assert (details["lora_name"], details["keys_matched"], details["keys_total"]) == (
        "wan2.2_animate_14B_relight_lora_bf16.safetensors",
        0,
        1200,
    )
    assert details["node_id"] == "4" and "blocks.0.cross_attn.k.alpha" in details["exception_message"]
    assert "refresh_worker" not in result  # a fresh worker would read the same file


def test_gpu_out_of_memory_refreshes_the_worker(stack: Stack) -> None:
    stack.comfy.set_fault("oom")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "GENERATION_FAILED", stack)
    assert result["refresh_worker"] is True


def test_timeout_interrupts_comfy(stack: Stack) -> None:
    stack.set_env(JOB_TIMEOUT_S="3")
    stack.comfy.set_fault("hang", node="6")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY})
    assert_failed(result, "TIMEOUT", stack)
    assert stack.comfy.queue_ids() == ([], [])


def test_cancellation_reaches_comfy(stack: Stack) -> None:
    stack.comfy.set_fault("hang", node="6")

    async def run_and_cancel() -> None:
        task = asyncio.create_task(
            handler.handler(
                {
                    "id": "cancel-me",
                    "input": {"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY},
                }
            )
        )
        for _ in range(300):
            if any(p["stage"] == "inference" for p in stack.progress):
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_and_cancel())
    # The worker thread interrupts ComfyUI on its own, within about a second.
    for _ in range(100):
        if stack.comfy.queue_ids() == ([], []):
            break
        threading.Event().wait(0.1)
    assert stack.comfy.queue_ids() == ([], [])
    assert stack.outputs() == []


def test_a_cancelled_job_lets_go_before_the_handler_returns(stack: Stack, log_lines: io.StringIO) -> None:
    """RunPod's SDK takes the next job when the handler returns: by then the job's thread has
    interrupted ComfyUI and returned, and the given-up prompt's files are watched for."""
    stack.comfy.set_fault("hang", node="6")

    async def run_and_cancel() -> list[dict[str, Any]]:
        job = {
            "id": "cancel-me",
            "input": {"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY},
        }
        task = asyncio.create_task(handler.handler(job))
        while not any(p["stage"] == "inference" for p in stack.progress):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return events(log_lines, "job_failed")  # as the handler let go

    [failed] = asyncio.run(asyncio.wait_for(run_and_cancel(), 60))
    assert (failed["job_id"], failed["error_code"]) == ("cancel-me", "CANCELLED")
    assert stack.comfy.queue_ids() == ([], [])
    assert [p.name for p in stack.comfy.output_dir.rglob("*") if p.is_file()] == []
    assert [p.name for p in stack.comfy.input_dir.rglob("*") if p.is_file()] == []
    [given_up] = handler.get_runner().leftovers.watching()
    assert given_up.startswith("wan-worker/cancel-me-")


def test_jobs_given_to_one_worker_at_once_run_one_after_the_other(
    stack: Stack, log_lines: io.StringIO
) -> None:
    """Should the SDK start a job before a cancelled one's thread returned, the runner holds it."""
    stack.comfy.set_fault("hang", node="6")
    runner = handler.get_runner()
    results: dict[str, dict[str, Any]] = {}
    job_input = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}

    def run(job_id: str, cancel: threading.Event) -> None:
        results[job_id] = runner.run(job_id, job_input, stack.progress.append, cancel)

    cancel_first = threading.Event()
    first = threading.Thread(target=run, args=("first", cancel_first))
    first.start()
    assert until(lambda: any(p["stage"] == "inference" for p in stack.progress))
    second = threading.Thread(target=run, args=("second", threading.Event()))
    second.start()
    assert until(lambda: events(log_lines, "job_waiting_for_previous"))
    cancel_first.set()
    first.join(60)
    second.join(60)

    assert results["first"]["error_code"] == "CANCELLED"
    assert "error" not in results["second"], results["second"]
    lifecycle = [
        (record["event"], record["job_id"])
        for record in map(json.loads, log_lines.getvalue().splitlines())
        if record["event"] in ("job_started", "job_failed", "job_succeeded")
    ]
    assert lifecycle == [
        ("job_started", "first"),
        ("job_failed", "first"),
        ("job_started", "second"),
        ("job_succeeded", "second"),
    ]


def test_the_queue_api_shows_the_worker_busy_until_a_cancelled_job_let_go(
    stack: Stack, log_lines: io.StringIO
) -> None:
    stack.comfy.set_fault("hang", node="6")
    server = serve_in_thread(handler.handler, execution_timeout_s=60)
    try:
        job_input = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY}
        job_id = requests.post(f"{server.url}/run", json={"input": job_input}, timeout=5).json()["id"]
        assert until(lambda: any(p["stage"] == "inference" for p in stack.progress))
        assert requests.post(f"{server.url}/cancel/{job_id}", timeout=5).json()["status"] == "CANCELLED"
        assert until(lambda: requests.get(f"{server.url}/health", timeout=5).json()["workers"]["idle"] == 1)
        failed = events(log_lines, "job_failed")  # when /health first said idle
    finally:
        server.stop()
    assert [(f["job_id"], f["error_code"]) for f in failed] == [(job_id, "CANCELLED")]


def test_prepare_reports_the_driving_videos_conversion(stack: Stack) -> None:
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert "error" not in result, result
    prepare = [p for p in stack.progress if p["stage"] == "prepare"]
    assert prepare[0] == {"stage": "prepare", "percent": 4.0}
    assert prepare[-1] == {
        "stage": "prepare",
        "percent": 8.0,
        "message": "converting the driving video: frame 48 of 48",
    }


@pytest.mark.parametrize(
    ("fault", "params", "problem"),
    [
        ("wrong_fps", {"fps": 16}, "frame rate is 16"),
        ("wrong_size", {"width": 640, "height": 360}, "640x360"),
        ("wrong_frames", {"frames": 20}, "frames"),
    ],
)
def test_output_invalid_is_never_uploaded(
    stack: Stack, fault: str, params: dict[str, Any], problem: str
) -> None:
    stack.comfy.set_fault(fault, **params)
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "OUTPUT_INVALID", stack)
    assert problem in json.dumps(result["details"]) + result["error"]


def test_audio_lost_by_comfy_is_restored_from_the_driving_video(stack: Stack, tmp_path: Path) -> None:
    stack.comfy.set_fault("drop_audio")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert "error" not in result, result
    assert fetch_output(stack, result["minio_key"], tmp_path)["has_audio"] is True


def test_storage_misconfigured_when_access_is_denied(stack: Stack, s3_proxy: Any) -> None:
    stack.set_env(MINIO_ENDPOINT=s3_proxy.endpoint)
    s3_proxy.deny("AccessDenied")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "STORAGE_MISCONFIGURED", stack)
    assert result["details"]["retryable"] is False
    assert stack.env["MINIO_SECRET_KEY"] not in json.dumps(result)


def test_a_missing_bucket_is_the_deployments_storage_not_a_missing_input(stack: Stack) -> None:
    stack.set_env(MINIO_BUCKET="no-such-bucket-here")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "STORAGE_MISCONFIGURED", stack)
    assert "no-such-bucket-here" in result["error"] and "MINIO_BUCKET" in result["error"]
    assert result["details"]["retryable"] is False


def test_storage_that_does_not_answer_is_unavailable_and_retryable(stack: Stack, s3_proxy: Any) -> None:
    stack.set_env(MINIO_ENDPOINT=s3_proxy.endpoint)
    s3_proxy.fail_next(1000, status=503, code="ServiceUnavailable")
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "STORAGE_UNAVAILABLE", stack)
    assert result["details"]["retryable"] is True


def test_config_invalid(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MINIO_BUCKET")
    handler._runner = None
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert_failed(result, "CONFIG_INVALID", stack)
    assert "MINIO_BUCKET" in result["error"]


# -- the time model: a job that cannot finish is refused at once (worker/estimate.py) -------------


def test_a_job_that_cannot_finish_is_refused_before_any_download(stack: Stack) -> None:
    # The model-free workflow is priced at the worker's own 1 s + 0.05 s a frame: the 2-s video
    # (48 frames, ~3.4 s) cannot finish in 2 s. The avatar key does not exist: refused as too
    # long, not as missing, proves nothing was downloaded first.
    stack.set_env(JOB_TIMEOUT_S="2")
    result = stack.run({"input_image_minio_path": "inputs/missing.png", "driving_video_path": VIDEO_KEY})
    assert_failed(result, "INPUT_TOO_LARGE", stack)
    assert "JOB_TIMEOUT_S=2 s" in result["error"] and "longest video that fits is 0.8 s" in result["error"]
    details = result["details"]
    assert details["estimate_s"]["frames"] == 48 and details["estimate_s"]["total"] > 2
    assert (details["max_frames"], details["max_duration_s"]) == (20, 0.83)
    assert [p["stage"] for p in stack.progress] == []  # nothing was downloaded or prepared
    assert stack.comfy.queue_ids() == ([], []) and stack.comfy.history() == {}


def test_every_result_carries_the_estimate_beside_the_timings(stack: Stack) -> None:
    result = stack.run({"input_image_minio_path": AVATAR_KEY, "driving_video_path": VIDEO_KEY})
    assert "error_code" not in result, result
    assert result["estimate_s"] == {
        "total": 3.4,  # 1 s + 0.05 s x 48 frames: no windows in the model-free workflow
        "gpu": 0.0,
        "worker": 3.4,
        "windows": 0,
        "chunks": 1,
        "frames": 48,
        "gpu_figures": result["estimate_s"]["gpu_figures"],
    }
    assert result["chunks"] == {"count": 1, "resumed": 0}
    assert result["timings_s"]["total"] > 0


# -- what a job costs (worker/cost.py) ------------------------------------------------------------


def test_every_result_carries_its_billed_seconds_and_their_price(stack: Stack) -> None:
    job = {"input_image_minio_path": AVATAR_KEY, "driving_video_path": SILENT_VIDEO_KEY}
    result = stack.run(job)
    cost = result["cost"]
    # Billed seconds are the job's whole time on the worker, not only ComfyUI's.
    assert cost["gpu_s"] == result["timings_s"]["total"] > result["timings_s"]["inference"]
    # The fake ComfyUI's device is in no price table: no cost, and the reason, never a guess.
    assert cost["device"] == "fake (stand-in for tests, no GPU)"
    assert cost["usd"] is None and cost["usd_per_s"] is None and cost["gpu"] is None
    assert "fake (stand-in for tests, no GPU)" in cost["reason"] and "GPU_PRICES_PER_S" in cost["reason"]

    # A price for that device name from the environment (the name read from ComfyUI's /system_stats).
    stack.set_env(GPU_PRICES_PER_S="H100=0.00093, stand-in=0.002")
    priced = stack.run(job, job_id="job-2")["cost"]
    assert (priced["gpu"], priced["usd_per_s"], priced["price_source"]) == (
        "stand-in",
        0.002,
        "GPU_PRICES_PER_S",
    )
    assert priced["usd"] == round(priced["gpu_s"] * 0.002, 6) and priced["reason"] is None
