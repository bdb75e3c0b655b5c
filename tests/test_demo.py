"""`make demo` (``python -m localdev.demo``) end to end, as a user runs it: real processes, real ports."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from PIL import Image

from localdev.fake_comfyui import FakeComfyUI
from tests.support.s3 import S3Bucket

REPO = Path(__file__).resolve().parent.parent
DEMO = [sys.executable, "-m", "localdev.demo"]
CHECKS = (
    "completed",
    "key_naming",
    "codec_h264",
    "resolution_1280x720",
    "fps_24",
    "frame_count",
    "audio_matches_driving",
    "decodes_to_end",
    "inputs_unchanged",
)


def fresh_machine_env() -> dict[str, str]:
    """The environment of someone who has configured nothing."""
    prefixes = ("MINIO_", "COMFY_", "RUNPOD_")
    names = {"WORKFLOW", "OUTPUT_PREFIX", "WORK_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in names}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ports_in(text: str) -> set[int]:
    return {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", text)}


def accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_runs_the_main_job_end_to_end_and_stops_everything() -> None:
    result = subprocess.run(
        DEMO, cwd=REPO, env=fresh_machine_env(), capture_output=True, text=True, timeout=280
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "MODEL-FREE STAND-IN" in output and "NOT Wan2.2 Animate" in output
    for check in CHECKS:
        assert re.search(rf"PASS\s+{check}\b", output), f"{check} not passed:\n{output}"
    assert "SMOKE TEST PASSED" in output
    assert re.search(r"output key: outputs/demo-user/demo-avatar/\S+\.mp4", output)
    assert re.search(r"timings:\s+delayTime \d+ ms, executionTime \d+ ms", output)
    assert "worker:     download" in output  # the worker's stage timings
    assert (REPO / ".work" / "demo" / "output.mp4").stat().st_size > 0
    # The pictures of what came out, and where they are.
    demo_dir = REPO / ".work" / "demo"
    assert "joins:      2 (output frames [77, 149]); output motion: moving; 0 stand out" in output
    for name in ("contact_sheet.png", "timeline.png"):
        assert f"picture:    .work/demo/{name}" in output, output
        with Image.open(demo_dir / name) as picture:
            picture.verify()
    report = json.loads((demo_dir / "smoke-report.json").read_text())
    seams = report["jobs"][0]["seams"]
    assert seams["window_plan"]["joins"] == [77, 149] and len(seams["joins"]) == 2
    assert report["warnings"] == []
    ports = ports_in(output)
    assert len(ports) == 3, output  # S3, ComfyUI stand-in, queue API
    assert not [port for port in ports if accepts_connections(port)], "a service outlived the demo"


def test_ctrl_c_cancels_the_job_and_stops_everything() -> None:
    # The previous run's output must not stay beside an interrupted run's (missing) report.
    stale = REPO / ".work" / "demo" / "output.mp4"
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"the previous run's video")
    # A terminal's Ctrl-C: SIGINT to the demo's process group.
    demo = subprocess.Popen(
        DEMO,
        cwd=REPO,
        env=fresh_machine_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.append(line)
            comfy = re.search(r"listening at (http://127\.0\.0\.1:\d+)", line)
            if comfy:  # the stand-in's control endpoint: the job will hang in ComfyUI until interrupted
                reply = requests.post(f"{comfy.group(1)}/fake/fault", json={"kind": "hang"}, timeout=5)
                assert reply.status_code == 200, reply.text
            if "IN_PROGRESS" in line and "inference" in line:
                break
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    output = "".join(lines) + rest
    assert demo.returncode == 130, output
    assert "interrupted" in output
    assert "cancel -> CANCELLED" in output, output
    assert "demo: stopped every service it started" in output
    time.sleep(0.5)
    ports = ports_in(output)
    assert len(ports) == 3, output
    assert not [port for port in ports if accepts_connections(port)], "a service outlived the demo"
    assert not stale.exists(), "the previous run's output.mp4 was left beside an interrupted run"


def test_demo_uses_the_services_it_is_given_and_leaves_them_running(
    s3: S3Bucket, s3_env: dict[str, str], fake_comfy: FakeComfyUI
) -> None:
    env = {
        **fresh_machine_env(),
        **s3_env,
        "COMFY_URL": fake_comfy.url,
        "COMFY_INPUT_DIR": str(fake_comfy.input_dir),
        "COMFY_OUTPUT_DIR": str(fake_comfy.output_dir),
        "WORKFLOW": str(REPO / "workflows" / "model_free_still.json"),
    }
    result = subprocess.run(
        [*DEMO, "--fixture-seconds", "1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=280
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"your MinIO at {s3.endpoint} (MINIO_ENDPOINT), bucket {s3.bucket}" in output
    assert f"your ComfyUI 0.33.0-fake at {fake_comfy.url}" in output
    assert "MODEL-FREE STAND-IN" in output  # recognised from its /system_stats, so still labelled
    assert "joins:      0 (output frames -)" in output  # 24 frames: one window, frames across it shown
    assert "picture:    .work/demo/contact_sheet.png" in output
    key = re.search(r"output key: (\S+)", output)
    stored = s3.keys()
    assert key is not None and key.group(1) in stored
    given = {int(s3.endpoint.rsplit(":", 1)[1]), int(fake_comfy.url.rsplit(":", 1)[1])}
    started = ports_in(output) - given
    assert len(started) == 1, output  # the queue API only
    assert not [port for port in started if accepts_connections(port)]
    assert all(accepts_connections(port) for port in given), "the demo stopped a service it did not start"
