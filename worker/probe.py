"""The one ffprobe reader: ffprobe's JSON answer about a local file.

Used by the worker's media step, the fake ComfyUI, the smoke test (which measures the output on its
own, with the same reader) and the tests' helpers. ``ffmpeg.probe`` (ffmpeg-python 0.2.0) has no
timeout, and a damaged or hostile file must not hold a worker, hence this wrapper.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_S = 60.0
STREAMS_AND_FORMAT = ("-show_streams", "-show_format")


class ProbeError(Exception):
    """ffprobe could not read the file; ``reason`` is ffprobe's first error line, without
    addresses (``[mov,mp4 @ 0x55…] moov atom not found`` -> ``[mov,mp4] moov atom not found``)."""

    def __init__(self, reason: str, *, stderr: str = "", timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stderr = stderr
        self.timed_out = timed_out


def ffprobe(
    path: Path | str, *options: str, timeout_s: float = DEFAULT_TIMEOUT_S, streams_and_format: bool = True
) -> dict[str, Any]:
    """ffprobe's JSON for ``path``: streams and format (unless ``streams_and_format`` is False),
    plus whatever ``options`` ask for (``-count_packets``, ``-show_entries …``)."""
    shown = STREAMS_AND_FORMAT if streams_and_format else ()
    args = ["ffprobe", "-v", "error", *shown, *options, "-of", "json", str(path)]
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"ffprobe took longer than {timeout_s:g} s", timed_out=True) from exc
    if proc.returncode != 0:
        raise ProbeError(first_error_line(proc.stderr), stderr=proc.stderr)
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise ProbeError("ffprobe gave no usable answer") from exc
    if not isinstance(data, dict):
        raise ProbeError("ffprobe gave no usable answer")
    return data


def first_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    match = re.match(r"\[(.+?) @ 0x[0-9a-f]+\] (.*)", lines[0])
    return f"[{match.group(1)}] {match.group(2)}" if match else lines[0]
