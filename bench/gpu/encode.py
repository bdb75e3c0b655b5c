#!/usr/bin/env python3
"""The worker's encode of one chunk's raw frames, timed: the H.264 encode that left the GPU's prompt.

    python bench/gpu/encode.py RAW DEST --width W --height H --frames N [--fps 24]

Runs ``worker.chunk_media.encode_frames`` (what ``Job._finish_chunk`` calls on a chunk's
``WanWorkerSaveChunk`` frames: RGB to BT.709 limited range, yuv420p, x264 CRF 17, then a probe of
the result) in a Python with the worker's requirements (ffmpeg-python and an ffmpeg binary, which
ComfyUI's Python on the GPU machine lacks: ``gpu_bench.py --worker-python`` names one). CPU only.
Prints one JSON line: ``{"seconds", "bytes", "frames"}``, or ``{"error"}`` and exits 2 when this
Python cannot encode (no ffmpeg-python, no ffmpeg).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--width", type=int, required=True)
    parser.add_argument("--height", type=int, required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--fps", type=int, default=24)
    args = parser.parse_args(argv)
    try:
        from worker.chunk_media import encode_frames
    except ImportError as exc:
        print(json.dumps({"error": f"{sys.executable} cannot import the worker's encode: {exc}"}))
        return 2
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        print(json.dumps({"error": f"no {' or '.join(missing)} binary on this machine"}))
        return 2
    started = time.perf_counter()
    encode_frames(args.raw, args.dest, width=args.width, height=args.height, frames=args.frames, fps=args.fps)
    seconds = time.perf_counter() - started
    print(
        json.dumps({"seconds": round(seconds, 3), "bytes": args.dest.stat().st_size, "frames": args.frames})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
