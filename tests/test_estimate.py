"""The job time model (worker/estimate.py) against the measured H100 figures, the default
limits, and the driving video's duration read from its header before any download."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localdev.media_fixtures import make_driving_video
from tests.support.s3 import S3Bucket
from worker.config import DEFAULT_MAX_VIDEO_DURATION_S, DEFAULT_WORKFLOW, Settings
from worker.estimate import H100, TimeModel, figures_for
from worker.graph.chunks import plan_window_chunks
from worker.graph.workflow import Workflow
from worker.media import header_duration

PINNED = Workflow.load(DEFAULT_WORKFLOW)
FULL = TimeModel(H100, steps=6, chunks=PINNED.chunks)  # the pinned chunks: 4 windows each


def test_the_measured_clip_is_what_the_model_says() -> None:
    # bench/README.md, one H100: the 10-s clip's measured path was 356.4 GPU-s (4 full windows,
    # 6 steps; model files from /dev/shm; pose/SAM2 stood in). The model without its two assumed
    # terms (model loads from disk, preprocessing) must land within 3 % of that.
    # That path ended in SaveVideo's encode; the worker encodes now (the last chunk's on the path).
    estimate = FULL.estimate(240)
    assumed = 30.0 + H100.preprocess_frame_s * 293  # 293 padded frames
    assert (estimate.windows, estimate.chunks) == (4, 1)
    encode = H100.encode_frame_s * 240
    assert estimate.gpu_s + encode - assumed == pytest.approx(356.4, rel=0.03)
    assert FULL.window_s(77) == pytest.approx(6 * 12.03 + 6.7 + 4.4)


def test_a_shorter_last_window_costs_less_and_more_steps_cost_more() -> None:
    fit = TimeModel(H100, steps=6, chunks=lambda n: plan_window_chunks(n, chunk_windows=4, last_window="fit"))
    assert fit.estimate(240).gpu_s < FULL.estimate(240).gpu_s - 60  # window 4: 25 frames, not 77
    assert FULL.window_s(25) < FULL.window_s(77) / 3
    assert TimeModel(H100, steps=4, chunks=PINNED.chunks).estimate(240).gpu_s < FULL.estimate(240).gpu_s
    assert [FULL.estimate(n).total_s for n in (1, 77, 78, 240, 721)] == sorted(
        FULL.estimate(n).total_s for n in (1, 77, 78, 240, 721)
    )


def test_the_default_duration_limit_is_what_the_default_deadline_fits() -> None:
    required = {
        "MINIO_ENDPOINT": "h:9000",
        "MINIO_ACCESS_KEY": "a",
        "MINIO_SECRET_KEY": "b",
        "MINIO_BUCKET": "c",
    }
    settings = Settings.from_env(required)
    longest = FULL.longest_fitting(settings.job_timeout_s)
    assert FULL.estimate(longest).total_s <= settings.job_timeout_s < FULL.estimate(longest + 1).total_s
    # The limit accepts nothing the deadline cannot finish, and refuses at most one window's worth.
    assert settings.max_video_duration_s == DEFAULT_MAX_VIDEO_DURATION_S
    assert DEFAULT_MAX_VIDEO_DURATION_S * 24 <= longest < DEFAULT_MAX_VIDEO_DURATION_S * 24 + 72


def test_chunks_cost_their_overhead_and_hide_all_encodes_but_the_last() -> None:
    one_prompt = TimeModel(H100, steps=6, chunks=lambda n: plan_window_chunks(n, chunk_windows=50))
    chunked, whole = FULL.estimate(721), one_prompt.estimate(721)
    assert (chunked.chunks, whole.chunks, chunked.windows, whole.windows) == (3, 1, 10, 10)
    # two more prompts (5 s each), the 5 frames of each join preprocessed again, 2 s of worker a chunk
    extra_gpu = 2 * H100.chunk_fixed_s + 2 * 5 * (H100.preprocess_frame_s + H100.decode_frame_s)
    assert chunked.gpu_s - whole.gpu_s == pytest.approx(extra_gpu)
    # only the last chunk's frames (140) are encoded on the job's path, not all 721
    last = plan_window_chunks(721, chunk_windows=4)[-1].frames
    assert last == 140
    assert chunked.worker_s - whole.worker_s == pytest.approx(2 * 2.0 - H100.encode_frame_s * (721 - last))
    assert chunked.as_dict()["chunks"] == 3


def test_longest_fitting_is_exact_at_the_edges() -> None:
    model = TimeModel(H100, steps=6, chunks=None)  # worker only: 1 s + 0.05 s a frame
    assert model.longest_fitting(3.0) == 40
    assert model.longest_fitting(0.5) == 0
    assert model.estimate(40).total_s <= 3.0 < model.estimate(41).total_s


def test_other_gpus_use_the_h100_figures_and_say_so() -> None:
    assert figures_for("cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync") is H100
    other = figures_for("cuda:0 NVIDIA L40S : cudaMallocAsync")
    assert not other.measured and other.sampler_step_s == H100.sampler_step_s
    assert "L40S" in other.name and "H100 figures" in other.name
    assert "unknown GPU" in figures_for(None).name


@pytest.mark.parametrize("faststart", [False, True], ids=["index-at-the-end", "faststart"])
def test_duration_is_read_from_the_header_through_a_presigned_url(
    s3: S3Bucket, tmp_path: Path, faststart: bool
) -> None:
    video = make_driving_video(tmp_path / "talk.mp4", seconds=3, fps=30, width=320, height=180)
    if faststart:
        moved = tmp_path / "fast.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-c", "copy", "-movflags", "+faststart",
                        str(moved)], check=True, timeout=60)  # fmt: skip
        video = moved
    s3.put("inputs/talk.mp4", video.read_bytes())
    duration = header_duration(s3.storage.internal_get_url("inputs/talk.mp4"))
    assert duration == pytest.approx(3.0, abs=0.05)


def test_an_unreadable_header_gives_no_duration(s3: S3Bucket) -> None:
    s3.put("inputs/not-a-video.mp4", b"\x00" * 5000)
    assert header_duration(s3.storage.internal_get_url("inputs/not-a-video.mp4")) is None
    assert header_duration(s3.storage.internal_get_url("inputs/missing.mp4")) is None
    assert header_duration("file:///etc/hostname") is None  # only http(s) may be opened
