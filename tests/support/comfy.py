"""ComfyUI fixtures: the project's fake ComfyUI on 127.0.0.1 (a fresh one per test), small
media generated at test time, and the model-free graph bound to them.

    def test_x(fake_comfy, comfy_media):
        image, video = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_mp4)
        graph = model_free_graph(image=image, video=video, frames=24)
        fake_comfy.set_fault("oom")      # see localdev/fake_comfyui/faults.py for the kinds
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_avatar_image, make_driving_video
from worker.graph.workflow import Workflow, WorkflowParams
from worker.probe import ffprobe

REPO = Path(__file__).resolve().parents[2]
MODEL_FREE_WORKFLOW = REPO / "workflows" / "model_free_still.json"
MEDIA_WIDTH, MEDIA_HEIGHT, MEDIA_FPS = 320, 180, 24


@dataclass(frozen=True)
class ComfyMedia:
    avatar_png: Path  # 400x300 RGB picture
    driving_mp4: Path  # 320x180, 24 fps, 24 frames, AAC 48 kHz
    driving_noaudio_mp4: Path  # 320x180, 24 fps, 24 frames, no audio
    corrupt_png: Path  # ".png" bytes that are no image
    corrupt_mp4: Path  # ".mp4" bytes without a moov atom


@pytest.fixture(scope="session")
def comfy_media(tmp_path_factory: pytest.TempPathFactory) -> ComfyMedia:
    folder = tmp_path_factory.mktemp("comfy-media")
    corrupt_png = folder / "corrupt.png"
    corrupt_png.write_bytes(b"this is not a PNG file")
    corrupt_mp4 = folder / "corrupt.mp4"
    corrupt_mp4.write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 2000)
    return ComfyMedia(
        avatar_png=make_avatar_image(folder / "avatar.png", width=400, height=300),
        driving_mp4=_driving_video(folder / "driving.mp4", audio=True),
        driving_noaudio_mp4=_driving_video(folder / "driving_noaudio.mp4", audio=False),
        corrupt_png=corrupt_png,
        corrupt_mp4=corrupt_mp4,
    )


@pytest.fixture
def fake_comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    """A fresh fake ComfyUI with empty input/output folders, stopped after the test."""
    server = FakeComfyUI(tmp_path / "comfy-input", tmp_path / "comfy-output").start()
    try:
        yield server
    finally:
        server.stop()


def _driving_video(path: Path, *, audio: bool) -> Path:
    return make_driving_video(
        path, seconds=1.0, fps=MEDIA_FPS, width=MEDIA_WIDTH, height=MEDIA_HEIGHT, audio=audio
    )


def stage_inputs(server: FakeComfyUI, image: Path, video: Path, folder: str = "") -> tuple[str, str]:
    """Copy the inputs into the server's input folder; returns the names for the graph."""
    names = []
    for source in (image, video):
        name = f"{folder}/{source.name}" if folder else source.name
        (server.input_dir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, server.input_dir / name)
        names.append(name)
    return names[0], names[1]


def model_free_graph(
    *,
    image: str,
    video: str,
    frames: int = MEDIA_FPS,
    width: int = MEDIA_WIDTH,
    height: int = MEDIA_HEIGHT,
    fps: float = float(MEDIA_FPS),
    prefix: str = "tests/out",
) -> dict[str, Any]:
    """workflows/model_free_still.json bound to the given inputs, as the worker builds it."""
    workflow = Workflow.load(MODEL_FREE_WORKFLOW)
    params = WorkflowParams(
        image=image,
        driving_video=video,
        frames=frames,
        filename_prefix=prefix,
        seed=1,
        prompt="",
        negative_prompt="",
        width=width,
        height=height,
        fps=fps,
    )
    return workflow.build(params)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def probe_video(path: Path) -> dict[str, Any]:
    """ffprobe's view of a file: {"video": {...} | None, "audio": {...} | None, "format": {...}}."""
    info = ffprobe(path, timeout_s=30)
    streams = info.get("streams", [])
    return {
        "video": next((s for s in streams if s.get("codec_type") == "video"), None),
        "audio": next((s for s in streams if s.get("codec_type") == "audio"), None),
        "format": info.get("format", {}),
    }


def worker_env(s3_env: dict[str, str], server: FakeComfyUI, work_dir: Path, workflow: str) -> dict[str, str]:
    """The worker's environment against the test S3 server and ``server``: ComfyUI's folders
    shared, ``workflow`` (a path under the repository), progress sent at once."""
    return {
        **s3_env,
        "COMFY_URL": server.url,
        "COMFY_INPUT_DIR": str(server.input_dir),
        "COMFY_OUTPUT_DIR": str(server.output_dir),
        "WORKFLOW": workflow,
        "WORK_DIR": str(work_dir),
        "PROGRESS_INTERVAL_S": "0",
    }
