"""smoke_test.py against the local queue API: with the real worker (fake ComfyUI, moto S3), and
with small stand-in handlers that misbehave in ways the worker itself would refuse to."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import runpod
from PIL import Image

import smoke_test
from localdev.demo import Services, start_queue_api
from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_driving_video
from localdev.queue_api import LocalQueueServer, serve_in_thread
from tests.support.s3 import S3Bucket

REPO = Path(__file__).resolve().parent.parent
# Small generated inputs: 1 s of 320x240 video at 30 fps (conformed to 24 frames) with audio.
SMALL_FIXTURES = ["--fixture-seconds", "1", "--fixture-fps", "30", "--fixture-width", "320"]
SMALL_FIXTURES += ["--fixture-height", "240"]


def run_smoke(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    code = smoke_test.main([*argv, "--poll-initial-s", "0.05", "--poll-max-s", "0.2"], env=env, out=out)
    return code, out.getvalue()


def check_lines(text: str) -> dict[str, str]:
    """check name -> PASS/FAIL, from the printed results."""
    results = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("PASS", "FAIL"):
            results[parts[1]] = parts[0]
    return results


def render_video(
    path: Path, *, fps: int, frames: int, audio: bool, source: str = "color=c=gray", vf: str | None = None
) -> None:
    command = [
        "ffmpeg",
        "-nostdin",
        "-y",
        "-v",
        "error",
        "-f",
        "lavfi",
        "-i",
        f"{source}:s=1280x720:r={fps}",
    ]
    if audio:
        command += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac", "-shortest"]
    if vf:
        command += ["-vf", vf]
    command += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, str(path)], check=True, timeout=60)


class StandInWorker:
    """A handler that writes a video of its own making to the output key and reports success
    (claiming a perfect 24 fps video), or hangs until cancelled. ``seam_at``: a moving test card
    whose brightness jumps at that frame (a window that came out lighter)."""

    def __init__(
        self,
        s3: S3Bucket,
        tmp_path: Path,
        *,
        fps: int = 24,
        hang: bool = False,
        frames: int = 24,
        seam_at: int | None = None,
        cost: dict[str, Any] | None = None,
    ) -> None:
        self.s3 = s3
        self.cost = cost
        self.tmp_path = tmp_path
        self.fps = fps
        self.hang = hang
        self.frames = frames
        self.seam_at = seam_at
        self.cancelled = threading.Event()

    async def __call__(self, job: dict[str, Any]) -> dict[str, Any]:
        job_input = job["input"]
        runpod.serverless.progress_update(job, {"stage": "inference", "percent": 50.0, "step": 1, "steps": 2})
        if self.hang:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        key = f"outputs/{job_input['user_id']}/{job_input['avatar_id']}/{job['id']}.mp4"
        path = self.tmp_path / f"{job['id']}.mp4"
        looks: dict[str, Any] = {}
        if self.seam_at is not None:
            looks = {"source": "testsrc2=d=60", "vf": f"eq=brightness=0.25:enable='gte(n,{self.seam_at})'"}
        await asyncio.to_thread(render_video, path, fps=self.fps, frames=self.frames, audio=True, **looks)
        self.s3.put(key, path, content_type="video/mp4")
        video = {"width": 1280, "height": 720, "fps": 24.0, "frames": self.frames}
        return {"minio_key": key, "video": video, **({"cost": self.cost} if self.cost else {})}


@pytest.fixture
def given_inputs(s3: S3Bucket, comfy_media: Any) -> list[str]:
    """A 1 s, 24 fps driving video with audio (24 frames) and an avatar, already in the bucket."""
    s3.put("in/avatar.png", comfy_media.avatar_png, content_type="image/png")
    s3.put("in/driving.mp4", comfy_media.driving_mp4, content_type="video/mp4")
    return ["--image-key", "in/avatar.png", "--video-key", "in/driving.mp4"]


@contextmanager
def standin_server(worker: StandInWorker) -> Iterator[LocalQueueServer]:
    server = serve_in_thread(worker, execution_timeout_s=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def real_worker(s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path) -> Iterator[str]:
    """handler.handler behind the local queue API, in its own process as in the demo; its URL."""
    work_dir = tmp_path / "worker"
    work_dir.mkdir()
    env = {
        **os.environ,
        **s3_env,
        "COMFY_URL": fake_comfy.url,
        "COMFY_INPUT_DIR": str(fake_comfy.input_dir),
        "COMFY_OUTPUT_DIR": str(fake_comfy.output_dir),
        "WORKFLOW": str(REPO / "workflows" / "model_free_still.json"),
        "WORK_DIR": str(work_dir),
        "PROGRESS_INTERVAL_S": "0",
    }
    services = Services(tmp_path)
    try:
        yield start_queue_api(services, env)
    finally:
        services.stop_all()


def test_real_worker_two_jobs_pass_every_check_with_timings(
    real_worker: str, s3: S3Bucket, s3_env: dict[str, str], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    argv = ["--api-url", real_worker, *SMALL_FIXTURES, "--jobs", "2", "--concurrency", "2"]
    code, text = run_smoke([*argv, "--report", str(report)], s3_env)
    assert code == 0, text
    assert "SMOKE TEST PASSED" in text
    assert "IN_QUEUE" in text  # one worker: the second job waited for the first
    written = json.loads(report.read_text())
    assert [job["status"] for job in written["jobs"]] == ["COMPLETED", "COMPLETED"]
    assert written["inputs"]["driving_frames"] == 24 and written["inputs"]["driving_has_audio"] is True
    summary = written["summary"]
    assert summary["jobs"] == 2 and summary["passed"] == 2
    assert set(summary["delayTime_ms"]) == {"p50", "p90", "max"}
    assert all(isinstance(job["execution_ms"], int) for job in written["jobs"])
    assert summary["cold_starts"] == 0
    stored = s3.keys()
    for job in written["jobs"]:
        assert job["output_key"] == f"outputs/smoke-user/smoke-avatar/{job['id']}.mp4"
        assert job["output_key"] in stored
        assert {check["name"] for check in job["checks"]} >= {"fps_24", "frame_count", "decodes_to_end"}
        # The fake ComfyUI's device has no price: billed seconds, no cost, and why.
        assert job["cost"]["gpu_s"] > 0 and job["cost"]["usd"] is None
    assert summary["cost"]["jobs"] == 2 and summary["cost"]["usd"] is None
    assert summary["cost"]["gpu_s"] == round(sum(job["cost"]["gpu_s"] for job in written["jobs"]), 3)
    assert len(summary["cost"]["unpriced"]) == 1 and "fake (stand-in" in summary["cost"]["unpriced"][0]
    assert "no price: no price for the GPU 'fake (stand-in for tests, no GPU)'" in text


def test_key_check_uses_the_workers_id_rule_and_prefix(
    real_worker: str, s3: S3Bucket, s3_env: dict[str, str], tmp_path: Path
) -> None:
    """Ids the worker cleans (a run of bad characters is one '_') and a prefix given with slashes:
    the smoke test expects the key the worker writes (it used to expect ``team__a``)."""
    report = tmp_path / "report.json"
    ids = ["--user-id", "team::a", "--avatar-id", " ava/tar ", "--output-prefix", "/outputs/"]
    code, text = run_smoke(["--api-url", real_worker, *SMALL_FIXTURES, *ids, "--report", str(report)], s3_env)
    assert code == 0, text
    (job,) = json.loads(report.read_text())["jobs"]
    assert job["output_key"] == f"outputs/team_a/ava_tar/{job['id']}.mp4"
    stored = s3.keys()
    assert job["output_key"] in stored
    assert any(check["name"] == "key_naming" and check["passed"] for check in job["checks"])


def test_real_worker_report_dir_leaves_pictures_and_seam_scores(
    real_worker: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "pictures"
    argv = ["--api-url", real_worker, *SMALL_FIXTURES, "--fixture-seconds", "4", "--report-dir", str(folder)]
    code, text = run_smoke(argv, s3_env)
    assert code == 0, text
    written = json.loads((folder / "report.json").read_text())  # the JSON report defaults into DIR
    seams = written["jobs"][0]["seams"]
    assert seams["window_plan"]["joins"] == [77]  # 96 frames: a second window from frame 77
    assert seams["output_motion"] == "no motion"  # the model-free stand-in holds the avatar still
    assert seams["joins"][0]["output_ratio"] is None and not seams["joins"][0]["stands_out"]
    assert written["warnings"] == [] and "WARNING" not in text
    assert "join 1 at frame 77: output change" in text and "(no motion)" in text
    assert seams["pictures"] == [str(folder / "contact_sheet.png"), str(folder / "timeline.png")]
    for picture in seams["pictures"]:
        with Image.open(picture) as image:
            image.verify()


def test_real_worker_failure_is_reported_with_its_error_code(
    real_worker: str, fake_comfy: FakeComfyUI, s3: S3Bucket, s3_env: dict[str, str]
) -> None:
    fake_comfy.set_fault("runtime_error", exception_message="sampler exploded")
    code, text = run_smoke(["--api-url", real_worker, *SMALL_FIXTURES], s3_env)
    assert code == 1
    assert check_lines(text)["completed"] == "FAIL"
    assert "FAILED after" in text and "GENERATION_FAILED" in text and "sampler exploded" in text
    assert not [key for key in list(s3.keys()) if key.startswith("outputs/")]


def test_real_worker_failure_status_carries_the_error_code_in_error_alone(
    real_worker: str, s3: S3Bucket
) -> None:
    """What a RunPod client polls: a FAILED job's /status has ``error`` and no ``output``, so the
    worker's code, message and details are a JSON object in ``error`` (the SDK's real path)."""
    job_input = {"input_image_minio_path": "in/missing.png", "driving_video_path": "in/missing.mp4"}
    job_id = requests.post(f"{real_worker}/run", json={"input": job_input}, timeout=10).json()["id"]
    deadline = time.monotonic() + 60
    body = requests.get(f"{real_worker}/status/{job_id}", timeout=10).json()
    while body["status"] not in smoke_test.TERMINAL and time.monotonic() < deadline:
        time.sleep(0.1)
        body = requests.get(f"{real_worker}/status/{job_id}", timeout=10).json()
    assert body["status"] == "FAILED", body
    assert set(body) == {"id", "status", "delayTime", "executionTime", "workerId", "error"}
    failure = json.loads(body["error"])
    assert failure["error_code"] == "INPUT_NOT_FOUND"
    assert "in/missing.png" in failure["message"] and isinstance(failure["details"], dict)
    assert smoke_test.parse_error(body["error"]) == (
        "INPUT_NOT_FOUND",
        failure["message"],
        failure["details"],
    )
    assert not [key for key in list(s3.keys()) if key.startswith("outputs/")]


def test_cost_of_the_jobs_in_the_summary(
    s3: S3Bucket, s3_env: dict[str, str], given_inputs: list[str], tmp_path: Path
) -> None:
    cost = {"gpu_s": 2.5, "usd": 0.0029, "usd_per_s": 0.00116, "gpu": "H100 PRO", "reason": None}
    with standin_server(StandInWorker(s3, tmp_path, cost=cost)) as server:
        report = tmp_path / "report.json"
        argv = ["--api-url", server.url, *given_inputs, "--jobs", "2", "--report", str(report)]
        code, text = run_smoke(argv, s3_env)
    assert code == 0, text
    written = json.loads(report.read_text())
    jobs, summary = written["jobs"], written["summary"]["cost"]
    assert [job["cost"] for job in jobs] == [cost, cost]
    executed_s = sum(job["execution_ms"] for job in jobs) / 1000
    assert summary == {
        "jobs": 2,
        "gpu_s": 5.0,
        "usd": 0.0058,
        "usd_by_execution_time": pytest.approx(executed_s * 0.00116, abs=2e-6),
        "unpriced": [],
    }
    assert "2.5 GPU-s billed (the job's time on the worker) x $0.00116/s (H100 PRO) = $0.0029" in text
    assert "cost over 2 job(s): 5.0 GPU-s billed, $0.0058" in text


def test_the_error_of_a_failed_job_in_each_form_it_comes() -> None:
    worker = json.dumps({"error_code": "TIMEOUT", "message": "the job exceeded", "details": {"a": 1}})
    assert smoke_test.parse_error(worker) == ("TIMEOUT", "the job exceeded", {"a": 1})
    sdk = json.dumps(
        {"error_type": "<class 'ValueError'>", "error_message": "boom", "error_traceback": "..."}
    )
    assert smoke_test.parse_error(sdk) == (None, "<class 'ValueError'>: boom", None)
    assert smoke_test.parse_error("execution timeout of 600 s exceeded") == (
        None,
        "execution timeout of 600 s exceeded",
        None,
    )


def test_real_worker_job_past_the_timeout_is_cancelled_and_comfy_interrupted(
    real_worker: str, fake_comfy: FakeComfyUI, s3: S3Bucket, s3_env: dict[str, str]
) -> None:
    fake_comfy.set_fault("hang")
    code, text = run_smoke(["--api-url", real_worker, *SMALL_FIXTURES, "--timeout", "4"], s3_env)
    assert code == 1
    assert check_lines(text)["finished_within_timeout"] == "FAIL"
    assert "cancel -> CANCELLED" in text
    deadline = time.monotonic() + 20
    while "execution_interrupted" not in json.dumps(fake_comfy.history()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "execution_interrupted" in json.dumps(fake_comfy.history()), "the cancel did not reach ComfyUI"
    assert not [key for key in list(s3.keys()) if key.startswith("outputs/")]


def test_a_correct_video_passes_every_check(
    s3: S3Bucket, s3_env: dict[str, str], given_inputs: list[str], tmp_path: Path
) -> None:
    with standin_server(StandInWorker(s3, tmp_path, fps=24)) as server:
        report = tmp_path / "report.json"
        code, text = run_smoke(["--api-url", server.url, *given_inputs, "--report", str(report)], s3_env)
    assert code == 0, text
    checks = check_lines(text)
    for name in ("completed", "key_naming", "codec_h264", "resolution_1280x720", "fps_24", "frame_count"):
        assert checks[name] == "PASS", text
    assert checks["audio_matches_driving"] == "PASS" and checks["decodes_to_end"] == "PASS"
    assert checks["inputs_unchanged"] == "PASS"
    assert "SMOKE TEST PASSED" in text
    written = json.loads(report.read_text())
    assert written["passed"] is True and written["failed_checks"] == []
    assert written["jobs"][0]["status"] == "COMPLETED"


def test_a_seam_at_a_join_is_a_warning_not_a_failed_check(
    s3: S3Bucket, s3_env: dict[str, str], comfy_media: Any, tmp_path: Path
) -> None:
    driving = make_driving_video(tmp_path / "driving.mp4", seconds=4, fps=24)  # 96 frames: join at 77
    s3.put("in/avatar.png", comfy_media.avatar_png, content_type="image/png")
    s3.put("in/long.mp4", driving, content_type="video/mp4")
    worker = StandInWorker(s3, tmp_path, frames=96, seam_at=77)
    folder = tmp_path / "pictures"
    report = tmp_path / "report.json"
    argv = ["--api-url", "", "--image-key", "in/avatar.png", "--video-key", "in/long.mp4"]
    with standin_server(worker) as server:
        argv[1] = server.url
        code, text = run_smoke([*argv, "--report-dir", str(folder), "--report", str(report)], s3_env)
    assert code == 0, text  # every check passed; the seam is for a person to look at
    assert "WARNING  join 1 (output frame 77, window 2) stands out" in text
    assert "SMOKE TEST PASSED: all" in text and "(1 warning to look at, above)" in text
    written = json.loads(report.read_text())
    assert len(written["warnings"]) == 1 and written["warnings"][0].startswith(
        "job 1: join 1 (output frame 77"
    )
    join = written["jobs"][0]["seams"]["joins"][0]
    assert join["stands_out"] and join["output_ratio"] > 3 > join["driving_ratio"]
    assert (folder / "contact_sheet.png").is_file() and (folder / "timeline.png").is_file()
    assert not (folder / "report.json").exists()  # --report given: the JSON goes there


def test_a_wrong_fps_video_is_caught_although_the_worker_reports_24_fps(
    s3: S3Bucket, s3_env: dict[str, str], given_inputs: list[str], tmp_path: Path
) -> None:
    with standin_server(StandInWorker(s3, tmp_path, fps=16)) as server:
        code, text = run_smoke(["--api-url", server.url, *given_inputs], s3_env)
    assert code == 1
    checks = check_lines(text)
    assert checks["fps_24"] == "FAIL"
    assert "r_frame_rate 16/1" in text
    assert checks["completed"] == "PASS" and checks["resolution_1280x720"] == "PASS"
    assert "SMOKE TEST FAILED" in text and "job 1: fps_24" in text


def test_a_job_past_the_timeout_is_cancelled(
    s3: S3Bucket, s3_env: dict[str, str], given_inputs: list[str], tmp_path: Path
) -> None:
    worker = StandInWorker(s3, tmp_path, hang=True)
    with standin_server(worker) as server:
        code, text = run_smoke(["--api-url", server.url, *given_inputs, "--timeout", "1.5"], s3_env)
        job_id = next(iter(server.queue.jobs))
        assert server.queue.jobs[job_id].status == "CANCELLED"
    assert code == 1
    assert worker.cancelled.wait(10), "the cancel did not reach the handler"
    assert f"POST /cancel/{job_id}" in text
    assert "IN_PROGRESS 50.0% inference step 1/2" in text  # the worker's progress, as plain lines
    checks = check_lines(text)
    assert checks["finished_within_timeout"] == "FAIL" and checks["completed"] == "FAIL"
    assert "CANCELLED" in text
    assert s3.keys() == ["in/avatar.png", "in/driving.mp4"]


def test_missing_storage_settings_are_a_usage_error(tmp_path: Path) -> None:
    code, _ = run_smoke(["--api-url", "http://127.0.0.1:9", "--image-key", "a", "--video-key", "b"], {})
    assert code == 2


def test_percentiles_and_cold_starts() -> None:
    records = [
        smoke_test.JobRecord(index=i, delay_ms=d, execution_ms=e)
        for i, (d, e) in enumerate([(200, 1000), (15_000, 1200), (300, 900), (400, 1100)], start=1)
    ]
    summary = smoke_test.summarize(records, cold_start_ms=10_000)
    assert summary["delayTime_ms"] == {"p50": 300.0, "p90": 15_000.0, "max": 15_000.0}
    assert summary["executionTime_ms"] == {"p50": 1000.0, "p90": 1200.0, "max": 1200.0}
    assert summary["cold_starts"] == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal() -> None:
    out = Terminal()
    view = smoke_test.ProgressView(out, bar=True, lock=threading.Lock())
    progress = {"stage": "inference", "percent": 50.0, "step": 3, "steps": 6}
    view.show("job 1", {"status": "IN_PROGRESS", "output": progress}, 12.0)
    view.show("job 1", {"status": "IN_PROGRESS", "output": {**progress, "percent": 60.0}}, 14.0)
    view.say("job 1: COMPLETED after 20.0 s")
    frames = out.getvalue().split("\r")
    assert frames[1].startswith("job 1 [" + "#" * 15 + "-" * 15 + "]  50.0% IN_PROGRESS inference step 3/6")
    assert frames[2].startswith("job 1 [" + "#" * 18 + "-" * 12 + "]  60.0%")
    assert frames[2].endswith("\njob 1: COMPLETED after 20.0 s\n")  # the bar's line is closed first


def test_endpoint_id_targets_runpod_and_needs_an_api_key() -> None:
    with pytest.raises(SystemExit) as exit_info:
        smoke_test.parse_args(["--endpoint-id", "abc123"], {})
    assert exit_info.value.code == 2
    args = smoke_test.parse_args(["--endpoint-id", "abc123"], {"RUNPOD_API_KEY": "k"})
    assert args.api_url == "https://api.runpod.ai/v2/abc123" and args.api_key == "k"
