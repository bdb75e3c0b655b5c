"""ComfyUI's folders as its API names them: ``name [input]`` annotations and the input folder's listing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"}


def strip_annotation(name: str) -> tuple[str, str]:
    for folder in ("input", "output", "temp"):
        suffix = f" [{folder}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], folder
    return name, "input"


def input_file_exists(input_dir: Path, name: Any) -> bool:
    if not isinstance(name, str) or not name:
        return False
    name, _ = strip_annotation(name)
    path = (input_dir / name).resolve()
    return path.is_relative_to(input_dir.resolve()) and path.is_file()


def list_input_files(input_dir: Path, extensions: set[str]) -> list[str]:
    if not input_dir.is_dir():
        return []
    return sorted(p.name for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in extensions)
