"""What flows between the fake's nodes: lazily rendered frames, videos, audio, and a node's failure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


class NodeFailure(Exception):
    """A failure inside a node: becomes ``execution_error`` with these fields."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.exception_message = message if message.endswith("\n") else message + "\n"


@dataclass(frozen=True)
class VideoFile:
    """LoadVideo's output: a file, opened lazily (a corrupt file fails downstream)."""

    path: Path


@dataclass(frozen=True)
class Scale:
    """ImageScale of a video's frames."""

    width: int
    height: int
    crop: str


@dataclass(frozen=True)
class Paste:
    """ImageCompositeMasked of a still onto every frame, at x, y (cut at the frame's edges)."""

    picture: Image.Image
    x: int
    y: int


@dataclass(frozen=True)
class FrameRange:
    """ImageFromBatch: ``count`` frames from frame ``start`` (of the frames as they are by then)."""

    start: int
    count: int


@dataclass(frozen=True)
class Frames:
    """An IMAGE batch: one still repeated, or the frames of a video file, decoded and changed
    lazily: ``ops`` apply in order when the frames are rendered (ffmpeg filters)."""

    width: int
    height: int
    count: int
    still: Image.Image | None = None
    source: Path | None = None
    source_loops: int = 1
    ops: tuple[Scale | Paste | FrameRange, ...] = ()


@dataclass(frozen=True)
class Audio:
    path: Path


@dataclass(frozen=True)
class VideoSpec:
    """A VIDEO made from frames (CreateVideo): encoded only when saved."""

    frames: Frames
    fps: float
    audio: Audio | None


@dataclass(frozen=True)
class SaveOverrides:
    """What the wrong_* / drop_audio faults change in the written file."""

    size: tuple[int, int] | None = None
    fps: float | None = None
    frames: int | None = None
    drop_audio: bool = False


@dataclass
class NodeContext:
    input_dir: Path
    output_dir: Path
    prompt: dict[str, Any]
    overrides: SaveOverrides = field(default_factory=SaveOverrides)
