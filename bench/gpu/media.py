"""The job's inputs, made at run time: an avatar picture and a driving video (H.264 + AAC).

Written with PyAV (ComfyUI's own video dependency), since the GPU machine has no ffmpeg binary.
The pixels are a moving pattern: nothing downstream depends on content for its cost. A chunk's
driving slice (``worker.graph.chunks.slice_indices``: its frames of the clip, reflect-padded at the end)
is drawn from the same pattern by frame index, without audio, as ``worker.chunk_media.cut_slice``
cuts it from the conformed video.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image


def make_avatar(path: Path, width: int = 768, height: int = 1024) -> Path:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 160)], axis=-1).astype(
        np.uint8
    )
    Image.fromarray(pixels).save(path)
    return path


def make_driving_video(
    path: Path,
    *,
    frames: int,
    width: int,
    height: int,
    fps: int = 24,
    indices: list[int] | None = None,
) -> Path:
    """``frames`` frames of the pattern with AAC audio; or, with ``indices``, those frames of it
    (a chunk's slice), without audio."""
    import av

    y, x = np.mgrid[0:height, 0:width]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = None
        if indices is None:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "stereo"
        for index in indices if indices is not None else range(frames):
            shift = index * 4
            rgb = np.stack(
                [(x + shift) % 256, (y + shift) % 256, np.full_like(x, (index * 3) % 256)], axis=-1
            ).astype(np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is None:
            return path
        samples_per_frame = 1024
        total = int(48000 * frames / fps)
        t = np.arange(total) / 48000.0
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, total, samples_per_frame):
            chunk = tone[start : start + samples_per_frame]
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            frame.sample_rate = 48000
            frame.pts = start
            frame.time_base = Fraction(1, 48000)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path
