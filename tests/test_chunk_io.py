"""The chunk save node's frame writer (comfyui_nodes/wan_worker_nodes/chunk_io.py), on torch:
block by block, it writes exactly what quantising the whole chunk at once would (as core SaveVideo
quantises: x * 255, clamped, truncated to uint8), RGB only, frames in order."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.support.nodes import load_node_module

NODE = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "wan_worker_nodes" / "chunk_io.py"


chunk_io = load_node_module("chunk_io.py")


def test_frames_are_written_in_blocks_exactly_as_quantised_whole(tmp_path: Path) -> None:
    frames = 2 * chunk_io.SAVE_BLOCK_FRAMES + 3  # two whole blocks and a short one
    generator = torch.Generator().manual_seed(7)
    images = torch.rand((frames, 9, 11, 4), generator=generator) * 1.2 - 0.1  # RGBA, out of range too
    path = tmp_path / "chunk.rgb"
    chunk_io._write_frames(images, str(path))
    whole = (images[..., :3] * 255).clamp(0, 255).to(torch.uint8)
    assert path.read_bytes() == whole.numpy().tobytes()
    assert path.stat().st_size == frames * 9 * 11 * 3
    # truncated, not rounded: 0.999 * 255 = 254.7 -> 254
    assert chunk_io.quantize(torch.tensor([0.999, 1.5, -0.2])).tolist() == [254, 255, 0]
