"""``python handler.py --test_input '{...}'``: the README's way to run one job locally, through
the RunPod SDK's own local mode, against the moto S3 server and the fake ComfyUI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_avatar_image, make_driving_video

REPO = Path(__file__).resolve().parent.parent


def run_handler(job: dict[str, Any], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "handler.py", "--test_input", json.dumps(job)],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_one_job_from_the_command_line(
    s3: Any, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    s3.put("in/avatar.png", make_avatar_image(tmp_path / "a.png", width=200, height=300))
    s3.put("in/talk.mp4", make_driving_video(tmp_path / "d.mp4", seconds=1, width=320, height=180))
    env = {
        **s3_env,
        "COMFY_URL": fake_comfy.url,
        "WORKFLOW": "workflows/model_free_still.json",
        "WORK_DIR": str(tmp_path / "work"),
    }
    job = {
        "input": {
            "input_image_minio_path": "in/avatar.png",
            "driving_video_path": "in/talk.mp4",
            "user_id": "u1",
            "avatar_id": "a1",
        }
    }
    done = run_handler(job, env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = s3.keys()  # every key of the test bucket
    keys = [key for key in written if key.startswith("outputs/")]
    assert len(keys) == 1 and keys[0].startswith("outputs/u1/a1/")
    assert '"event":"job_succeeded"' in done.stdout
    # A successful run looks successful: the SDK has no RunPod to post progress to locally, so
    # the progress is logged instead (posting it printed "ERROR ... Failed to return job results").
    assert "ERROR" not in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
    progress = [event for event in events(done.stdout) if event["event"] == "progress"]
    assert [event["stage"] for event in progress][-1] == "upload"

    failed = run_handler({"input": {"input_image_minio_path": "in/avatar.png", "oops": 1}}, env)
    assert failed.returncode == 1  # the SDK's local mode exits 1 when the result has "error"
    # The SDK prints the error as the handler returned it: the worker's failure as JSON text.
    assert '"error_code": "INVALID_INPUT"' in run_output(failed)


def test_each_local_run_is_a_job_of_its_own(
    s3: Any, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """The SDK gives every --test_input job the id "local_test", and outputs are keyed on the job
    id: a second run with another input returned the first run's video. Each run now gets its own
    id; an id given in the test input is kept (to run the same job again)."""
    s3.put("in/avatar.png", make_avatar_image(tmp_path / "a.png", width=200, height=300))
    s3.put("in/one.mp4", make_driving_video(tmp_path / "1.mp4", seconds=1, width=320, height=180))
    s3.put("in/two.mp4", make_driving_video(tmp_path / "2.mp4", seconds=2, width=320, height=180))
    env = {**s3_env, "COMFY_URL": fake_comfy.url, "WORKFLOW": "workflows/model_free_still.json"}
    env["WORK_DIR"] = str(tmp_path / "work")
    results = []
    for video in ("in/one.mp4", "in/two.mp4"):
        done = run_handler(
            {"input": {"input_image_minio_path": "in/avatar.png", "driving_video_path": video}}, env
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        results.append(next(e for e in events(done.stdout) if e["event"] == "job_succeeded"))
    first, second = results
    assert first["job_id"] != second["job_id"] and first["job_id"].startswith("local-")
    assert f"Job {second['job_id']} completed successfully" in run_output(done)
    assert first["minio_key"] != second["minio_key"] and second["reused"] is False
    written = s3.keys()  # every key of the test bucket
    outputs = [key for key in written if key.startswith("outputs/")]
    assert sorted(outputs) == sorted([first["minio_key"], second["minio_key"]])

    given = {
        "id": "job-7",
        "input": {"input_image_minio_path": "in/avatar.png", "driving_video_path": "in/one.mp4"},
    }
    for reused in (False, True):
        done = run_handler(given, env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        succeeded = next(e for e in events(done.stdout) if e["event"] == "job_succeeded")
        assert (succeeded["job_id"], succeeded["minio_key"], succeeded["reused"]) == (
            "job-7",
            "outputs/_no-user/_no-avatar/job-7.mp4",
            reused,
        )


def events(stdout: str) -> list[dict[str, Any]]:
    """The worker's structured log lines (one JSON object each) among the SDK's own."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith('{"ts":')]


def run_output(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout + done.stderr


def test_a_misconfigured_worker_stops_at_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "handler.py"],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MINIO_")}, "MINIO_ENDPOINT": "x:9"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "MINIO_BUCKET is required" in done.stderr
