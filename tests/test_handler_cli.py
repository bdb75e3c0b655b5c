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

    failed = run_handler({"input": {"input_image_minio_path": "in/avatar.png", "oops": 1}}, env)
    assert failed.returncode == 1  # the SDK's local mode exits 1 when the result has "error"
    assert "INVALID_INPUT" in failed.stdout + failed.stderr


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
