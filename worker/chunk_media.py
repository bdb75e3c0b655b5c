"""The media of a chunked job: each chunk's driving slice, its encode, and the join.

* ``cut_slice``: the driving frames a chunk's prompt conditions on, written losslessly (H.264
  ``-qp 0`` in the conformed file's own yuv420p and colour tags: decoding the slice gives exactly
  the frames decoding the whole video would), reflect-padded at the clip's end as
  ``worker.graph.chunks.slice_indices`` says. No audio: the output takes the conformed driving audio.
* ``encode_frames``: a chunk's raw RGB frames (``WanWorkerSaveChunk``) to H.264 the way core
  ``SaveVideo`` encodes for the pinned graph (RGB to BT.709 limited range, yuv420p, CRF 17), in
  the worker's process, while ComfyUI already runs the next chunk.
* ``join_chunks``: the chunks' MP4s in order, one H.264 stream, by stream copy (no second lossy
  encode); ``media.finalize_output`` then adds the audio and checks the result.

Each takes the job's ``cancel``: a cancelled job's ffmpeg is stopped at once (``worker.ffmpeg_process``).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import ffmpeg

from worker.contract import OUTPUT
from worker.errors import ErrorCode, WorkerError
from worker.media import (
    _SCALE_FLAGS,
    BT709_TAGS,
    VIDEO_DEMUXERS,
    _atomic_path,
    _probe,
    _run_ffmpeg,
    cpu_threads,
    media_input,
)

# As the pinned graph's SaveVideo encoded (issue 9: CRF 17, x264's default preset).
CHUNK_CRF = 17
CHUNK_PRESET = "medium"
SLICE_PRESET = "ultrafast"  # lossless either way; this one is the fastest


def cut_slice(
    src: Path,
    dest: Path,
    *,
    start: int,
    real_frames: int,
    reflected: int,
    total_frames: int,
    fps: int,
    cancel: threading.Event | None = None,
) -> int:
    """Frames ``start .. start + real_frames - 1`` of ``src`` (``total_frames`` long), then
    ``reflected`` frames walking back from its last frame (``N-2, N-3, ...``); frames written."""
    if real_frames < 1 or start < 0 or start + real_frames > total_frames:
        raise ValueError(
            f"frames {start}..{start + real_frames - 1} are not all in a {total_frames}-frame video"
        )
    if reflected > total_frames - 1:
        raise ValueError(f"cannot reflect {reflected} frames at the end of a {total_frames}-frame video")
    what = "a chunk's driving frames"
    probe = _probe(src, what=what, code=ErrorCode.INVALID_MEDIA)
    source = media_input(src).video
    head = source.trim(start_frame=start, end_frame=start + real_frames).setpts("PTS-STARTPTS")
    video = head
    if reflected:
        last = total_frames - 1
        tail = (
            media_input(src)
            .video.trim(start_frame=last - reflected, end_frame=last)
            .setpts("PTS-STARTPTS")
            .filter("reverse")
        )
        video = ffmpeg.concat(head, tail, v=1, a=0)
    tags = {  # the conformed file's own, so the slice decodes to the same RGB
        "colorspace": probe.color_space or BT709_TAGS["colorspace"],
        "color_primaries": probe.color_primaries or BT709_TAGS["color_primaries"],
        "color_trc": probe.color_transfer or BT709_TAGS["color_trc"],
        "color_range": probe.color_range or BT709_TAGS["color_range"],
    }
    frames = real_frames + reflected
    options: dict[str, Any] = {
        "c:v": "libx264",
        "preset": SLICE_PRESET,
        "qp": 0,
        "pix_fmt": probe.info.pix_fmt or "yuv420p",
        "r": fps,
        "frames:v": frames,
        "threads": cpu_threads(),
        "map_metadata": -1,
        "f": "mp4",
        **tags,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(dest) as partial:
        _run_ffmpeg(
            ffmpeg.output(video, str(partial), **options), what=what, paths=[src, partial], cancel=cancel
        )
        written = _probe(partial, what=what, code=ErrorCode.INTERNAL_ERROR).info.frames
        if written != frames:
            raise WorkerError(
                ErrorCode.INTERNAL_ERROR,
                f"a chunk's driving slice has {written} frames, expected {frames}",
                details={"start": start, "frames": frames, "written": written},
            )
    return frames


def encode_frames(
    raw: Path,
    dest: Path,
    *,
    width: int,
    height: int,
    frames: int,
    fps: int,
    cancel: threading.Event | None = None,
) -> None:
    """Raw rgb24 frames (``frames`` x ``height`` x ``width`` x 3 bytes) to an H.264 MP4."""
    expected = frames * width * height * 3
    size = raw.stat().st_size
    if size != expected:
        raise WorkerError(
            ErrorCode.OUTPUT_INVALID,
            f"ComfyUI wrote {size} bytes of frames, expected {frames} frames of {width}x{height} "
            f"({expected} bytes)",
            details={"bytes": size, "expected_bytes": expected, "frames": frames},
        )
    video = (
        media_input(
            raw, formats=("rawvideo",), f="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", framerate=fps
        )
        .filter("scale", out_color_matrix="bt709", out_range="tv", flags=_SCALE_FLAGS)
        .filter("format", "yuv420p")
    )
    options: dict[str, Any] = {
        "c:v": "libx264",
        "preset": CHUNK_PRESET,
        "crf": CHUNK_CRF,
        "pix_fmt": "yuv420p",
        "r": fps,
        "threads": cpu_threads(),
        "f": "mp4",
        **BT709_TAGS,
    }
    dest.parent.mkdir(parents=True, exist_ok=True)
    what = "a chunk's frames"
    with _atomic_path(dest) as partial:
        _run_ffmpeg(
            ffmpeg.output(video, str(partial), **options),
            what=what,
            paths=[raw, partial],
            code=ErrorCode.OUTPUT_INVALID,
            cancel=cancel,
        )
        check_chunk(partial, frames=frames, width=width, height=height)


def check_chunk(path: Path, *, frames: int, width: int, height: int) -> None:
    """OUTPUT_INVALID unless ``path`` is an H.264 yuv420p video of ``frames`` ``width``x``height`` frames."""
    info = _probe(path, what="a chunk's video", code=ErrorCode.OUTPUT_INVALID).info
    found = (info.video_codec, info.pix_fmt, info.width, info.height, info.frames)
    if found != (OUTPUT.codec, OUTPUT.pix_fmt, width, height, frames):
        raise WorkerError(
            ErrorCode.OUTPUT_INVALID,
            f"a chunk's video is {info.video_codec} {info.pix_fmt} {info.width}x{info.height} with "
            f"{info.frames} frames, expected h264 yuv420p {width}x{height} with {frames}",
            details={"found": list(found), "frames": frames},
        )


def join_chunks(parts: list[Path], dest: Path, *, fps: int, cancel: threading.Event | None = None) -> None:
    """The chunks' videos in order as one MP4, streams copied (``concat`` demuxer).

    The demuxer offsets each part by its container duration, rounded to the millisecond (40
    frames at 24 fps: 1.667 s), which leaves the joined timestamps a few ticks off the frame grid
    (average frame rate 23.998); every timestamp is put back on the ``fps`` grid."""
    if len(parts) == 1:
        dest.write_bytes(parts[0].read_bytes())
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=dest.parent, delete=False) as listing:
        for part in parts:
            listing.write(f"file '{part.resolve().as_posix()}'\n")
    on_grid = f"round({{0}}*TB*{fps})/(TB*{fps})"
    try:
        with _atomic_path(dest) as partial:
            # The parts open through the concat demuxer, with the same allow-lists.
            stream = media_input(Path(listing.name), formats=("concat", *VIDEO_DEMUXERS), f="concat", safe=0)
            _run_ffmpeg(
                ffmpeg.output(
                    stream.video,
                    str(partial),
                    c="copy",
                    map_metadata=-1,
                    f="mp4",
                    **{"bsf:v": f"setts=pts={on_grid.format('PTS')}:dts={on_grid.format('DTS')}"},
                ),
                what="the chunks' videos",
                paths=[*parts, partial],
                code=ErrorCode.OUTPUT_INVALID,
                cancel=cancel,
            )
    finally:
        Path(listing.name).unlink(missing_ok=True)
