"""What each node class does in the fake: the model-free classes of ``workflows/model_free_still.json``
and ``workflows/model_free_chunked.json``, run for real with Pillow, ffprobe and ffmpeg.

Images are decoded with Pillow, videos probed with ffprobe; frames are made lazily, when a save node
renders them (``render.py``). SaveVideo writes a real H.264/yuv420p MP4 (AAC audio when the graph has
audio); WanWorkerSaveChunk writes the frames as raw rgb24 (``<prefix>_00001_.rgb``, reported with
``wan_chunk: [{width, height, frames, motion_frames: 0}]``; a connected ``motion`` input fails: the
stand-in writes no motion frames). ImageCompositeMasked pastes a still, without mask or resize;
ImageFromBatch cuts a range as the real node does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from localdev.fake_comfyui.files import strip_annotation
from localdev.fake_comfyui.render import encode_video, resolve_overrides, write_raw_frames
from localdev.fake_comfyui.values import (
    Audio,
    FrameRange,
    Frames,
    NodeContext,
    NodeFailure,
    Paste,
    Scale,
    VideoFile,
    VideoSpec,
)
from worker.probe import ProbeError, ffprobe

NodeResult = tuple[tuple[Any, ...], dict[str, Any] | None]  # (outputs, the ``ui`` history reports)
SAVE_CLASSES = ("SaveVideo", "WanWorkerSaveChunk")  # the wrong_* / drop_audio faults act on these


def _ffprobe(path: Path) -> dict[str, Any]:
    try:
        return ffprobe(path)
    except ProbeError as exc:
        raise NodeFailure(
            "av.error.InvalidDataError",
            "[Errno 1094995529] Invalid data found when processing input: "
            f"'{path}'; last error log: {exc.reason}",
        ) from exc


def _rate(text: str | None) -> float:
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value)


def node_load_image(ctx: NodeContext, image: str) -> NodeResult:
    name, _ = strip_annotation(image)
    path = ctx.input_dir / name
    try:
        with Image.open(path) as opened:
            opened.load()
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except UnidentifiedImageError as exc:
        raise NodeFailure("PIL.UnidentifiedImageError", str(exc)) from exc
    except OSError as exc:
        raise NodeFailure(
            f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."), str(exc)
        ) from exc
    frames = Frames(width=picture.width, height=picture.height, count=1, still=picture)
    return (frames, None), None


def node_load_video(ctx: NodeContext, file: str) -> NodeResult:
    name, _ = strip_annotation(file)
    return (VideoFile(ctx.input_dir / name),), None


def node_get_video_components(ctx: NodeContext, video: Any) -> NodeResult:
    if isinstance(video, VideoSpec):
        return (video.frames, video.audio, float(video.fps), 8, "sRGB"), None
    probe = _ffprobe(video.path)
    streams = probe.get("streams", [])
    picture = next((s for s in streams if s.get("codec_type") == "video"), None)
    if picture is None:
        raise NodeFailure("ValueError", f"No video stream found in '{video.path}'")
    fps = _rate(picture.get("avg_frame_rate")) or _rate(picture.get("r_frame_rate"))
    count = int(picture.get("nb_frames") or 0)
    if count <= 0:
        duration = float(picture.get("duration") or probe.get("format", {}).get("duration") or 0)
        count = max(1, round(duration * fps))
    frames = Frames(
        width=int(picture["width"]), height=int(picture["height"]), count=count, source=video.path
    )
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    audio = Audio(video.path) if has_audio else None
    return (frames, audio, fps, 8, "sRGB"), None


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def node_image_scale(
    ctx: NodeContext, image: Frames, upscale_method: str, width: int, height: int, crop: str
) -> NodeResult:
    if width == 0 and height == 0:
        return (image,), None
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    if height == 0:
        height = max(1, round(image.height * width / image.width))
    if image.still is None:
        scaled = replace(image, width=width, height=height, ops=(*image.ops, Scale(width, height, crop)))
        return (scaled,), None
    picture = image.still
    if crop == "center":
        picture = ImageOps.fit(picture, (width, height), method=_RESAMPLE[upscale_method])
    else:
        picture = picture.resize((width, height), _RESAMPLE[upscale_method])
    return (replace(image, width=width, height=height, still=picture),), None


def node_repeat_image_batch(ctx: NodeContext, image: Frames, amount: int) -> NodeResult:
    # A video's frames repeat by looping the file: right while every op works frame by frame.
    if any(isinstance(op, FrameRange) for op in image.ops):
        raise NodeFailure(
            "NotImplementedError", "the fake ComfyUI cannot repeat a frame range of a video (ImageFromBatch)"
        )
    return (replace(image, count=image.count * amount, source_loops=image.source_loops * amount),), None


def node_image_from_batch(ctx: NodeContext, image: Frames, batch_index: int, length: int) -> NodeResult:
    # As the real node: a negative index counts from the end, then the start is clamped into the
    # batch and the length cut to what is left (at least one frame comes out).
    if batch_index < 0:
        batch_index += image.count
    start = max(0, min(image.count - 1, batch_index))
    count = min(image.count - start, length)
    if image.still is not None:
        return (replace(image, count=count),), None
    return (replace(image, count=count, ops=(*image.ops, FrameRange(start, count))),), None


_NOT_CONNECTED: Any = object()  # an optional input absent from the graph (a connected one may carry None)


def node_image_composite_masked(
    ctx: NodeContext,
    destination: Frames,
    source: Frames,
    x: int,
    y: int,
    resize_source: bool,
    mask: Any = _NOT_CONNECTED,
) -> NodeResult:
    if mask is not _NOT_CONNECTED:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI composites without a mask only")
    if resize_source:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI pastes the source at its own size only")
    if source.still is None:
        raise NodeFailure(
            "NotImplementedError", "the fake ComfyUI pastes a still source only, not a video's frames"
        )
    # The real node repeats the source over the destination's frames (all the same still here) and
    # clamps x, y to the destination: what does not fit is cut, a paste at or past the edge is none.
    x, y = min(x, destination.width), min(y, destination.height)
    visible = (min(source.width, destination.width - x), min(source.height, destination.height - y))
    if 0 in visible:
        return (destination,), None
    picture = source.still.crop((0, 0, *visible))
    if destination.still is None:
        return (replace(destination, ops=(*destination.ops, Paste(picture, x, y))),), None
    composite = destination.still.copy()
    composite.paste(picture, (x, y))
    return (replace(destination, still=composite),), None


def node_create_video(
    ctx: NodeContext, images: Frames, fps: float, audio: Audio | None = None, bit_depth: int = 8
) -> NodeResult:
    return (VideoSpec(frames=images, fps=float(fps), audio=audio),), None


def _next_counter(folder: Path, name: str) -> int:
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)_")
    counters = (
        [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    )
    return max(counters, default=0) + 1


def _output_folder(ctx: NodeContext, filename_prefix: str) -> tuple[Path, str, str]:
    """(folder, subfolder, name) of a save node's prefix; refused outside the output folder."""
    normalized = os.path.normpath(filename_prefix)
    subfolder, name = os.path.dirname(normalized), os.path.basename(normalized)
    folder = (ctx.output_dir / subfolder).resolve()
    if not folder.is_relative_to(ctx.output_dir.resolve()):
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {folder}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, subfolder, name


def node_save_video(
    ctx: NodeContext, video: Any, filename_prefix: str, format: str = "auto", **nested: Any
) -> NodeResult:
    # The nested DynamicCombo values arrive as dotted keys, as in the API graph.
    encoding = nested.get("format.codec.encoding")
    crf = nested.get("format.codec.encoding.crf") if encoding == "re-encode" else None
    color_space = nested.get("format.codec.encoding.color_space") if encoding == "re-encode" else None
    if color_space not in (None, "auto", "sRGB"):
        raise NodeFailure("NotImplementedError", f"the fake ComfyUI writes SDR only, not {color_space!r}")
    if format not in ("auto", "mp4"):
        if format in ("mkv", "webm"):
            raise NodeFailure("NotImplementedError", f"the fake ComfyUI writes MP4 only, not {format!r}")
        raise NodeFailure("TypeError", "SaveVideo.execute() missing 1 required positional argument: 'format'")
    if isinstance(video, VideoFile):
        frames, audio, fps, *_rest = node_get_video_components(ctx, video)[0]
        video = VideoSpec(frames=frames, fps=fps, audio=audio)
    folder, subfolder, name = _output_folder(ctx, filename_prefix)
    filename = f"{name}_{_next_counter(folder, name):05}_.mp4"
    encode_video(ctx, video, folder / filename, crf=crf)
    ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}
    return (video,), ui


def node_save_chunk(
    ctx: NodeContext, images: Frames, filename_prefix: str, motion_frames: int, motion: Any = _NOT_CONNECTED
) -> NodeResult:
    """WanWorkerSaveChunk (comfyui_nodes/wan_worker_nodes/chunk_io.py): the frames as raw rgb24,
    frame after frame, for the worker to encode. The stand-in has no windows, so no motion file."""
    if motion is not _NOT_CONNECTED:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI does not write motion frames")
    folder, subfolder, name = _output_folder(ctx, filename_prefix)
    overrides = resolve_overrides(ctx.overrides, images, 0.0)  # fps and audio mean nothing here
    count = overrides.frames if overrides.frames is not None else images.count
    width, height = overrides.size or (images.width, images.height)
    filename = f"{name}_{_next_counter(folder, name):05}_.rgb"
    write_raw_frames(images, folder / filename, width=width, height=height, count=count)
    ui = {
        "images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
        "wan_chunk": [{"width": width, "height": height, "frames": count, "motion_frames": 0}],
    }
    return (), ui


NODE_FUNCTIONS: dict[str, Callable[..., NodeResult]] = {
    "LoadImage": node_load_image,
    "LoadVideo": node_load_video,
    "GetVideoComponents": node_get_video_components,
    "ImageScale": node_image_scale,
    "RepeatImageBatch": node_repeat_image_batch,
    "CreateVideo": node_create_video,
    "SaveVideo": node_save_video,
    "ImageFromBatch": node_image_from_batch,
    "ImageCompositeMasked": node_image_composite_masked,
    "WanWorkerSaveChunk": node_save_chunk,
}
