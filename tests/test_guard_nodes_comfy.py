"""The guard nodes around the real pack nodes inside a real ComfyUI (never in CI: ComfyUI and the
packs are not on PyPI). tests/comfy_core/guard_nodes.py copies the pinned packs into a temp
custom_nodes folder and runs them through ComfyUI's own executor on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMFY = os.environ.get("WAN_BENCH_COMFYUI")
PYTHON = os.environ.get("WAN_BENCH_PYTHON")
SAM2_PACK = Path(os.environ.get("WAN_SAM2_PACK", "/tmp/src/sam2"))  # ComfyUI-segment-anything-2 @ c59676b0
WAP_PACK = Path(os.environ.get("WAN_WAP_PACK", "/tmp/src/wap"))  # ComfyUI-WanAnimatePreprocess @ 0e0b6a2a


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not (COMFY and PYTHON):
        pytest.skip(
            "needs WAN_BENCH_COMFYUI (ComfyUI 0.33.0 checkout) and WAN_BENCH_PYTHON (its Python, torch)"
        )
    if not (SAM2_PACK / "nodes.py").is_file() or not (WAP_PACK / "nodes.py").is_file():
        pytest.skip(
            f"needs the pinned packs unpacked in WAN_SAM2_PACK ({SAM2_PACK}) and WAN_WAP_PACK ({WAP_PACK})"
        )
    command = [
        PYTHON, str(REPO / "tests" / "comfy_core" / "guard_nodes.py"), "--comfy", COMFY,
        "--sam2-pack", str(SAM2_PACK), "--wap-pack", str(WAP_PACK),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=880, cwd=tmp_path_factory.mktemp("g")
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(900)
def test_the_pack_node_keeps_the_video_and_tracking_state_on_its_cached_instance(report: dict) -> None:
    pack = report["pack"]
    assert pack["node_instance_cached"] and pack["instance_keeps_state"]
    assert pack["instance_state_is_the_tracking_state"]
    assert pack["frames_shape"] == [3, 3, 1024, 1024] and pack["frames_dtype"] == "torch.float32"
    assert pack["tracked_frames"] == 3 and pack["frames_tensor_alive"]
    assert pack["state_tensor_bytes"] > 3 * 3 * 1024 * 1024 * 4  # the frames, and more


@pytest.mark.timeout(900)
def test_our_node_leaves_no_tracking_state_behind(report: dict) -> None:
    ours = report["ours"]
    assert ours["node_instance_cached"]  # ComfyUI keeps the instance, as it keeps the pack's
    assert not ours["instance_keeps_state"]
    assert ours["state_keys"] == [] and ours["state_tensor_bytes"] == 0  # emptied, not only dropped
    assert not ours["frames_tensor_alive"]


@pytest.mark.timeout(900)
def test_the_onnx_loader_reports_and_refuses_the_silent_cpu_fallback(report: dict) -> None:
    onnx = report["onnx"]
    assert onnx["probe"]["cuda_session_ok"] is False and onnx["probe"]["gpu"] is False  # this CPU machine
    assert "CPUExecutionProvider" in onnx["probe"]["available_providers"]
    cpu = ["CPUExecutionProvider"]
    assert onnx["cpu_asked"] == onnx["cuda_asked_no_gpu"] == {"vitpose": cpu, "yolo": cpu}
    refused = (
        "ONNX Runtime was asked for CUDAExecutionProvider but the session runs on ['CPUExecutionProvider']"
    )
    assert f"vitpose: {refused}" in onnx["cuda_asked_gpu_load"]
    assert onnx["cuda_asked_gpu_reinit"].startswith(f"yolo: {refused}")
