"""ffmpeg renderings of a node's frames: SaveVideo's MP4 and WanWorkerSaveChunk's raw frames."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from localdev.fake_comfyui.identity import FAKE_VERSION
from localdev.fake_comfyui.values import (
    FrameRange,
    Frames,
    NodeContext,
    NodeFailure,
    SaveOverrides,
    Scale,
    VideoSpec,
)


def _picture_graph(frames: Frames, scratch: Path, *, rate: Fraction | None = None) -> tuple[list[str], str]:
    """ffmpeg inputs and a filter graph whose pad ``[pictures]`` gives ``frames``' pictures in
    order: the still looped (at ``rate``, when given), or the source video's decoded frames
    (looped ``source_loops`` times) through ``ops``. Inputs after these are the caller's."""
    if frames.still is not None:
        still = scratch / "still.png"
        frames.still.save(still)
        looped = ["-loop", "1", *(["-framerate", str(rate)] if rate is not None else []), "-i", str(still)]
        return looped, "[0:v]null[pictures]"
    assert frames.source is not None
    args = ["-stream_loop", str(frames.source_loops - 1), "-i", str(frames.source)]
    segments: list[str] = []
    pad, chain = "0:v", []
    for op in frames.ops:
        if isinstance(op, Scale):
            w, h = op.width, op.height
            chain.append(
                f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
                if op.crop == "center"
                else f"scale={w}:{h}"
            )
        elif isinstance(op, FrameRange):
            end = op.start + op.count
            chain.append(f"trim=start_frame={op.start}:end_frame={end},setpts=PTS-STARTPTS")
        else:
            # The still is one frame at time 0 and overlay repeats a finished input's last frame,
            # so every frame from time 0 on gets it.
            index = args.count("-i")
            picture = scratch / f"paste{index}.png"
            op.picture.save(picture)
            args += ["-i", str(picture)]
            chain.append("setpts=PTS-STARTPTS")
            segments.append(f"[{pad}]{','.join(chain)}[main{index}]")
            segments.append(f"[main{index}][{index}:v]overlay=x={op.x}:y={op.y}:format=rgb[pasted{index}]")
            pad, chain = f"pasted{index}", []
    segments.append(f"[{pad}]{','.join(chain) or 'null'}[pictures]")
    return args, ";".join(segments)


def _run_ffmpeg(args: list[str], partial: Path, exception_type: str) -> None:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", *args, str(partial)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise NodeFailure(exception_type, f"ffmpeg failed: {proc.stderr.strip()[-400:]}")


def encode_video(ctx: NodeContext, video: VideoSpec, dest: Path, *, crf: float | None = None) -> None:
    """As the real SaveVideo of frames (VideoFromComponents.save_to): RGB to BT.709 limited
    range, tagged BT.709 with an sRGB transfer, libx264 at ``crf`` (x264's default 23 when None).
    The preset is ultrafast (the real one x264's default, medium): the stand-in's speed matters."""
    frames = video.frames
    overrides = resolve_overrides(ctx.overrides, frames, video.fps)
    fps = Fraction(overrides.fps or video.fps).limit_denominator(1001)
    count = overrides.frames if overrides.frames is not None else frames.count
    width, height = overrides.size or (frames.width, frames.height)
    audio = None if overrides.drop_audio else video.audio
    with tempfile.TemporaryDirectory(prefix="fake-comfy-") as scratch:
        args, graph = _picture_graph(frames, Path(scratch), rate=fps if frames.still is not None else None)
        filters = [] if frames.still is not None else [f"fps={fps}"]
        if (width, height) != (frames.width, frames.height):
            filters.append(f"scale={width}:{height}")
        # The real node converts its RGB frames with the BT.709 matrix (a decoded video's frames
        # were made RGB by their tags, BT.601 when untagged: scale's "auto" input does the same).
        filters.append("scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int")
        filters.append("format=yuv420p")
        audio_input = args.count("-i")
        if audio is not None:
            args += ["-i", str(audio.path)]
        args += ["-filter_complex", f"{graph};[pictures]{','.join(filters)}[video]", "-map", "[video]"]
        if audio is not None:
            args += ["-map", f"{audio_input}:a:0", "-c:a", "aac"]
        # -t alone (no -frames:v): a frame limit would end the audio early.
        args += ["-t", f"{float(count / fps):.6f}", "-r", str(fps)]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", f"{23.0 if crf is None else crf:g}"]
        args += ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709"]
        args += ["-color_trc", "iec61966-2-1", "-color_range", "tv"]
        args += ["-metadata", f"comment=written by the fake ComfyUI {FAKE_VERSION} (a stand-in)"]
        args += ["-metadata", "prompt=" + json.dumps(ctx.prompt, separators=(",", ":"))]
        partial = dest.with_name(dest.name + ".part.mp4")
        _run_ffmpeg(args, partial, "av.error.ValueError")
        os.replace(partial, dest)


def write_raw_frames(frames: Frames, dest: Path, *, width: int, height: int, count: int) -> None:
    """Exactly ``count`` frames of ``width`` x ``height`` rgb24 (a video's decoded frames, no fps
    conversion; more than it has repeat the last), written beside ``dest`` then renamed."""
    with tempfile.TemporaryDirectory(prefix="fake-comfy-") as scratch:
        args, graph = _picture_graph(frames, Path(scratch))
        filters = []
        if (width, height) != (frames.width, frames.height):
            filters.append(f"scale={width}:{height}")
        if frames.still is None and count > frames.count:
            filters.append(f"tpad=stop_mode=clone:stop={count - frames.count}")
        filters.append("format=rgb24")
        args += ["-filter_complex", f"{graph};[pictures]{','.join(filters)}[frames]", "-map", "[frames]"]
        args += ["-frames:v", str(count), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        partial = dest.with_name(dest.name + ".part")
        _run_ffmpeg(args, partial, "RuntimeError")
        written, expected = partial.stat().st_size, width * height * 3 * count
        if written != expected:
            partial.unlink()
            raise NodeFailure(
                "RuntimeError",
                f"the fake ComfyUI rendered {written} bytes of frames, not {expected} "
                f"({count} frames of {width}x{height}): the video has fewer frames than it said",
            )
        os.replace(partial, dest)


def resolve_overrides(overrides: SaveOverrides, frames: Frames, fps: float) -> SaveOverrides:
    size = overrides.size
    if size is not None and -1 in size:
        size = (max(2, frames.width // 4 * 2), max(2, frames.height // 4 * 2))
    new_fps = overrides.fps
    if new_fps is not None and new_fps < 0:
        new_fps = 30.0 if abs(fps - 25.0) < 0.01 else 25.0
    count = overrides.frames
    if count is not None and count < 0:
        count = max(1, frames.count - 1)
    return replace(overrides, size=size, fps=new_fps, frames=count)
