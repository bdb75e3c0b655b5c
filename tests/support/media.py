"""Media fixtures: images and videos generated at test time (Pillow, real ffmpeg), never committed.

Fixtures (names are stable; other tests rely on them):

``media_dir`` (function) -> ``Path``
    An empty folder for one test's media (under ``tmp_path``).

``avatar_png`` (function) -> ``Path``
    A 512x768 RGB PNG portrait in ``media_dir``.

``avatar_factory`` (function) -> ``(name="avatar.png", **kwargs) -> Path``
    ``localdev.media_fixtures.make_avatar_image`` into ``media_dir/name``; kwargs: ``width``,
    ``height``, ``fmt`` ("PNG", "JPEG", "WEBP", "GIF", ...), ``exif_orientation``, ``mode``.

``driving_video_factory`` (function) -> ``(seconds=2.0, *, name=None, **kwargs) -> Path``
    ``localdev.media_fixtures.make_driving_video``: kwargs ``fps``, ``width``, ``height``,
    ``audio``, ``video_codec``, ``rotate``, ``pattern``, ``audio_delay_s``, ``faststart``.
    Each distinct video is encoded once per session and each call gets its own copy in
    ``media_dir`` (modify it freely).

``driving_video`` (function) -> ``Path``
    A 2-second 1280x720 24 fps H.264 MP4 with AAC audio (48 frames once conformed).

Helpers (plain functions): ``extract_frame(video, index) -> PIL.Image`` (decoded frame
``index``, counted from 0), ``stream_facts(path) -> list[dict]`` (ffprobe's streams),
``file_sha256(path) -> str``.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from localdev.media_fixtures import make_avatar_image, make_driving_video
from worker.probe import ffprobe


@pytest.fixture
def media_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


@pytest.fixture
def avatar_factory(media_dir: Path) -> Callable[..., Path]:
    def make(name: str = "avatar.png", **kwargs: Any) -> Path:
        return make_avatar_image(media_dir / name, **kwargs)

    return make


@pytest.fixture
def avatar_png(avatar_factory: Callable[..., Path]) -> Path:
    return avatar_factory("avatar.png")


@pytest.fixture(scope="session")
def _driving_video_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    return tmp_path_factory.mktemp("driving-videos"), {}


@pytest.fixture
def driving_video_factory(
    media_dir: Path, _driving_video_cache: tuple[Path, dict[str, Path]]
) -> Callable[..., Path]:
    cache_dir, cache = _driving_video_cache

    def make(seconds: float = 2.0, *, name: str | None = None, **kwargs: Any) -> Path:
        key = json.dumps({"seconds": seconds, **kwargs}, sort_keys=True)
        cached = cache.get(key)
        if cached is None:
            cached = make_driving_video(cache_dir / f"video-{len(cache)}.mp4", seconds=seconds, **kwargs)
            cache[key] = cached
        copy = media_dir / (name or f"driving-{hashlib.sha256(key.encode()).hexdigest()[:8]}.mp4")
        shutil.copyfile(cached, copy)
        return copy

    return make


@pytest.fixture
def driving_video(driving_video_factory: Callable[..., Path]) -> Path:
    return driving_video_factory(2.0, name="driving.mp4")


def extract_frame(video: Path, index: int) -> Image.Image:
    proc = subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-i", str(video)),
            *("-vf", f"select=eq(n\\,{index})", "-frames:v", "1", "-f", "image2pipe", "-c:v", "png", "-"),
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    if not proc.stdout:
        raise AssertionError(f"{video.name} has no frame {index}")
    return Image.open(io.BytesIO(proc.stdout)).convert("RGB")


def stream_facts(path: Path) -> list[dict[str, Any]]:
    return ffprobe(path, timeout_s=120)["streams"]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
