"""A chunk join equals a window join, on ComfyUI's own executor (issue 10).

The worker generates a long clip as consecutive prompts ("chunks", ``worker.graph.chunks``); each
continuing chunk starts with a window that continues from the previous chunk's last 5 decoded
frames, saved as float32 by ``WanWorkerSaveChunk`` and read back by ``WanWorkerLoadMotionFrames``.
The claim (``worker/graph/chunks.py``): apart from SAM2's tracker memory, a chunk join is a window join,
so the chunks' frames joined in order are the frames one prompt makes for the whole clip.

The pinned graph runs for a clip of 3 windows whose last is partly padding, twice, in one ComfyUI
process (``bench/gpu/run_prompts.py``: the GPU benchmark's toy machinery, i.e. shape-true random
weights with a toy DiT and a narrow VAE, stand-ins for the pack classes, 64x64, CPU, 1 sampler step):

* once as ONE prompt (``Workflow.chunks(N, chunk_windows=0)``: the graph built without a chunk),
  reading the conformed driving video (``worker.media.conform_driving_video``, as a job does);
* once with ``chunk_windows=1``: every window its own prompt, reading its slice of that video cut
  by ``worker.chunk_media.cut_slice`` (the chunk's start, real frames and reflected frames) and,
  after the first, the previous chunk's ``.motion.safetensors`` copied into ComfyUI's input folder
  under the name given to ``Workflow.build(..., motion_file=...)``, as the worker uploads it.

Window length: the shape-true face motion encoder of Wan Animate takes every face frame at 512x512
(``WanAnimateToVideo`` resizes them so; ~37 GFLOP a frame, 1-2.5 s a frame on 2 CPU cores), whatever
the toy DiT, so 77-frame windows (7 window runs with the control below, 539 face frames a step)
took 633-1,159 s here, depending on what else shared the 2 cores. By default the windows are
therefore 21 frames (``windows.window_frames``, the two WanAnimateToVideo lengths and the extension
window's trim changed in a copy of the pinned files, nothing else; N = 45: 21 + 16 + 8 new frames,
the last window 13 real frames and 8 reflected): 214 s (352 s with another ComfyUI run on the cores).
``WAN_CHUNKS_TEST_WINDOW=77`` runs the pinned length (N = 185: 77 + 72 + 36 new frames, the last
window 41 real frames and 36 reflected).

Result, both lengths (2026-12-02, ComfyUI 0.33.0, torch 2.14 CPU): the joined chunk frames are
**byte-identical** to the single prompt's (max |difference| 0 on every frame), every window's VAE
decode is identical in float32, and each motion file is exactly the last 5 frames of its chunk's
last decode, which are also the single prompt's frames the next window continues from. So no
tolerance: every stand-in works frame by frame (the real SAM2 does not: its tracker memory is the
one thing chunks do not carry over), the sampler's noise depends only on the seed and the window's
latent shape, each window's conditioning is the same frames at the same offset, and each window's
arithmetic has the same shapes in both runs, so the same CPU kernels give the same bits.

Equal frames alone prove less than they seem: with random weights the frames hardly depend on the
conditioning. A control prompt, chunk 2 with its slice cut one frame late, changed its float32
decode by at most 1.1e-6 and 3 of its 16 new 8-bit frames by one level (77-frame windows: 1.2e-6,
15 of 72 frames). So the test also compares every window's sampler inputs and output bit for bit
(SHA-256 of each tensor: conditioning, latent in and out; ``run_prompts.py --record KSampler``):
identical in both runs, and the control's differ (its face pixels and its sampled latent).

Needs ComfyUI (``WAN_BENCH_COMFYUI`` + ``WAN_BENCH_PYTHON``, see tests/support/comfy_checkout.py);
CI skips it. The plan check above the ComfyUI part runs everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.gpu.media import make_avatar
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.graph.chunks import Chunk
from worker.graph.workflow import Workflow, WorkflowParams

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / "workflows" / "wan22_animate_replace.json"
PINNED_WINDOW = 77
# The window length: 21 by default (see the module docstring: CPU time), 77 (the pinned one) on demand.
WINDOW = int(os.environ.get("WAN_CHUNKS_TEST_WINDOW") or 21)
MOTION_FRAMES = 5
STEP = WINDOW - MOTION_FRAMES
FRAMES = WINDOW + STEP + STEP // 2  # 3 windows; the third adds STEP // 2 frames, the rest of it is padding
SIZE = 64
FIRST_DECODE, EXTENSION_DECODE = "33", "43"  # window 1's VAEDecode, the extension window's
THIRD_DECODE = f"3{int(EXTENSION_DECODE):03d}"  # window 3's copy of it in the single prompt
FIRST_SAMPLER, EXTENSION_SAMPLER = "31", "41"  # their KSamplers
THIRD_SAMPLER = f"3{int(EXTENSION_SAMPLER):03d}"
RUN_TIMEOUT_S = 1500 if WINDOW <= 21 else 5400  # 2 CPU cores (shared, measured in the docstring)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """The pinned workflow at 1 sampler step; with WINDOW < 77 a copy whose windows are WINDOW
    frames: ``windows.window_frames``, the two WanAnimateToVideo lengths and the extension window's
    frame trim (72 = 77 - 5), nothing else."""
    if WINDOW == PINNED_WINDOW:
        return Workflow.load(PINNED, {"WAN_STEPS": "1"})
    graph = json.loads(PINNED.read_text())
    bindings = json.loads(PINNED.with_suffix(".bindings.json").read_text())
    windows = bindings["windows"]
    assert (windows["window_frames"], windows["motion_frames"]) == (PINNED_WINDOW, MOTION_FRAMES)
    windows["window_frames"] = WINDOW
    for node in (windows["first"]["animate"], windows["extension"]["animate"]):
        assert graph[node]["inputs"]["length"] == PINNED_WINDOW
        graph[node]["inputs"]["length"] = WINDOW
    trim = windows["extension"]["images"]
    assert graph[trim]["inputs"]["length"] == PINNED_WINDOW - MOTION_FRAMES
    graph[trim]["inputs"]["length"] = STEP
    folder = tmp_path_factory.mktemp("workflow")
    path = folder / PINNED.name
    path.write_text(json.dumps(graph))
    path.with_suffix(".bindings.json").write_text(json.dumps(bindings))
    return Workflow.load(path, {"WAN_STEPS": "1"})


def params(driving: str, frames: int, prefix: str) -> WorkflowParams:
    return WorkflowParams(
        image="avatar.png",
        driving_video=driving,
        frames=frames,
        filename_prefix=prefix,
        seed=42,
        prompt="a person dancing",
        negative_prompt="blurry",
        width=SIZE,
        height=SIZE,
    )


def test_the_clip_is_one_prompt_or_three_chunks_whose_last_is_partly_padding(flow: Workflow) -> None:
    (single,) = flow.chunks(FRAMES, chunk_windows=0)
    assert (single.frames, len(single.windows), single.continues) == (FRAMES, 3, False)
    chunks = flow.chunks(FRAMES, chunk_windows=1)
    real_last = FRAMES - 2 * STEP
    assert [(c.start, c.real_frames, c.reflected, c.frames) for c in chunks] == [
        (0, WINDOW, 0, WINDOW),
        (STEP, WINDOW, 0, STEP),
        (2 * STEP, real_last, WINDOW - real_last, STEP // 2),  # 21: 13 real frames, 8 reflected
    ]
    assert [c.continues for c in chunks] == [False, True, True]
    assert sum(c.frames for c in chunks) == FRAMES
    graphs = [
        flow.build(
            params(f"chunk-{c.index}.mp4", c.frames, f"equiv/chunk-{c.index}"),
            chunk=c,
            clip_frames=FRAMES,
            motion_file=f"motion-{c.index}.safetensors" if c.continues else None,
        )
        for c in chunks
    ]
    # The decode whose last 5 frames a chunk saves: window 1's in chunk 1, the extension's after.
    assert graphs[0]["53"]["inputs"]["motion"] == [FIRST_DECODE, 0]
    assert graphs[1]["53"]["inputs"]["motion"] == [EXTENSION_DECODE, 0]
    assert "motion" not in graphs[2]["53"]["inputs"]
    for graph, chunk in zip(graphs[1:], chunks[1:], strict=True):
        assert graph["16"]["inputs"]["file"] == f"motion-{chunk.index}.safetensors"
        assert graph["40"]["inputs"]["continue_motion"] == ["16", 0]
        assert graph["40"]["inputs"]["video_frame_offset"] == MOTION_FRAMES


# ------------------------------------------------------------------ with ComfyUI (never in CI)


def read_safetensors(path: Path) -> dict[str, tuple[str, list[int], np.ndarray]]:
    """name -> (dtype, shape, values) of a safetensors file (the format: 8-byte header size, JSON
    header, raw little-endian data)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": None, "U8": np.uint8}
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = dtypes.get(info["dtype"])
        data = raw[8 + size + start : 8 + size + end]
        values = np.frombuffer(data, dtype=dtype).reshape(info["shape"]) if dtype else np.array([])
        tensors[name] = (info["dtype"], info["shape"], values)
    return tensors


def rgb_frames(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype=np.uint8).reshape(-1, SIZE, SIZE, 3)


@dataclass
class Runs:
    chunks: list[Chunk]
    prompts: dict[str, dict[str, Any]]  # label -> run_prompts.py's report
    seconds: float

    def frames(self, label: str) -> np.ndarray:
        return rgb_frames(Path(self.prompts[label]["frames_file"]))

    def decode(self, label: str, node: str) -> np.ndarray:
        return np.load(self.prompts[label]["recorded"][node])

    def digests(self, label: str, node: str) -> dict[str, str]:
        """SHA-256 of every tensor in the node's inputs and outputs (bench/gpu/run_prompts.py)."""
        return self.prompts[label]["digests"][node]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, flow: Workflow) -> Runs:
    from worker.chunk_media import cut_slice
    from worker.media import conform_driving_video

    root = tmp_path_factory.mktemp("chunks-comfy")
    media = root / "media"
    from localdev.media_fixtures import make_driving_video

    source = make_driving_video(media / "source.mp4", seconds=FRAMES / 24, width=SIZE, height=SIZE)
    driving = conform_driving_video(
        source, media / "driving.mp4", width=SIZE, height=SIZE, fps=24, max_duration_s=60
    )
    assert driving.frames == FRAMES
    avatar = make_avatar(media / "avatar.png", 96, 128)
    (single,) = flow.chunks(FRAMES, chunk_windows=0)
    prompts: list[dict[str, Any]] = [
        {
            "label": "single",
            "graph": flow.build(params("driving.mp4", single.frames, "equiv/single")),  # no chunk: one prompt
            "inputs": {"avatar.png": str(avatar), "driving.mp4": str(driving.path)},
        }
    ]
    chunks = flow.chunks(FRAMES, chunk_windows=1)
    for chunk in chunks:
        piece = media / f"chunk-{chunk.index}.mp4"
        cut_slice(driving.path, piece, start=chunk.start, real_frames=chunk.real_frames,
                  reflected=chunk.reflected, total_frames=FRAMES, fps=24)  # fmt: skip
        motion = f"motion-{chunk.index}.safetensors" if chunk.continues else None
        graph = flow.build(
            params(piece.name, chunk.frames, f"equiv/chunk-{chunk.index}"),
            chunk=chunk,
            clip_frames=FRAMES,
            motion_file=motion,
        )
        prompts.append(
            {
                "label": f"chunk-{chunk.index}",
                "graph": graph,
                "inputs": {"avatar.png": str(avatar), piece.name: str(piece)},
                "motion": motion,
            }
        )
    # The control: chunk 2 once more, its slice cut one frame late. It must not pass for chunk 2.
    second = chunks[1]
    late = media / "chunk-2-late.mp4"
    cut_slice(driving.path, late, start=second.start + 1, real_frames=second.real_frames, reflected=0,
              total_frames=FRAMES, fps=24)  # fmt: skip
    prompts.append(
        {
            "label": "chunk-2-late",
            "graph": flow.build(
                params(late.name, second.frames, "equiv/chunk-2-late"),
                chunk=second,
                clip_frames=FRAMES,
                motion_file="motion-2-late.safetensors",
            ),
            "inputs": {"avatar.png": str(avatar), late.name: str(late)},
            "motion": "motion-2-late.safetensors",
            "motion_from": "chunk-1",
        }
    )
    plan = root / "plan.json"
    plan.write_text(json.dumps({"output_node": flow.output_node, "prompts": prompts}))
    out = root / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "gpu" / "run_prompts.py"), "--plan", str(plan),
        "--record", "VAEDecode", "--record", "KSampler", "--comfy", str(COMFY), "--tiny", "--cpu",
        "--out", str(out), "--work", str(root / "work"), "--models", str(root / "models"),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=REPO)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    report = {entry["label"]: entry for entry in json.loads((out / "prompts.json").read_text())}
    walls = {label: entry["wall_s"] for label, entry in report.items()}
    print(f"run_prompts.py: {seconds:.0f} s in all; prompts (s): {walls}", file=sys.stderr)
    return Runs(chunks=chunks, prompts=report, seconds=seconds)


@needs_comfy
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_each_chunk_saves_its_own_frames(runs: Runs) -> None:
    assert runs.frames("single").shape == (FRAMES, SIZE, SIZE, 3)
    for chunk in runs.chunks:
        label = f"chunk-{chunk.index}"
        assert runs.frames(label).shape[0] == chunk.frames, label
        (meta,) = runs.prompts[label]["ui"]["53"]["wan_chunk"]
        expected_motion = 0 if chunk.last else MOTION_FRAMES
        assert meta == {
            "width": SIZE,
            "height": SIZE,
            "frames": chunk.frames,
            "motion_frames": expected_motion,
        }
        assert (runs.prompts[label]["motion_file"] is None) == chunk.last


@needs_comfy
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_a_chunks_motion_file_is_the_last_five_decoded_frames_in_float32(runs: Runs) -> None:
    single_decodes = {1: FIRST_DECODE, 2: EXTENSION_DECODE, 3: THIRD_DECODE}
    for chunk in runs.chunks[:-1]:
        label = f"chunk-{chunk.index}"
        tensors = read_safetensors(Path(runs.prompts[label]["motion_file"]))
        assert list(tensors) == ["motion"]
        dtype, shape, motion = tensors["motion"]
        assert (dtype, shape) == ("F32", [MOTION_FRAMES, SIZE, SIZE, 3])
        decode = runs.decode(label, FIRST_DECODE if chunk.index == 1 else EXTENSION_DECODE)
        assert decode.shape == (WINDOW, SIZE, SIZE, 3)  # the whole window, before any trim
        np.testing.assert_array_equal(motion, decode[-MOTION_FRAMES:])
        assert not np.array_equal(motion, np.round(motion * 255) / 255)  # not quantised to 8 bits
        # ... and what the single prompt's next window continues from.
        window = chunk.first_window
        np.testing.assert_array_equal(motion, runs.decode("single", single_decodes[window])[-MOTION_FRAMES:])


@needs_comfy
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_the_chunks_joined_are_the_single_prompts_frames(runs: Runs) -> None:
    single = runs.frames("single")
    joined = np.concatenate([runs.frames(f"chunk-{c.index}") for c in runs.chunks])
    assert joined.shape == single.shape
    diff = np.abs(joined.astype(np.int16) - single.astype(np.int16)).reshape(FRAMES, -1).max(axis=1)
    differing = {int(i): int(diff[i]) for i in np.flatnonzero(diff)}
    # Per window, the float32 decodes: where a difference would start.
    single_decodes = [FIRST_DECODE, EXTENSION_DECODE, THIRD_DECODE]
    windows = {}
    for chunk, node in zip(runs.chunks, single_decodes, strict=True):
        mine = runs.decode(f"chunk-{chunk.index}", FIRST_DECODE if chunk.index == 1 else EXTENSION_DECODE)
        windows[chunk.index] = float(np.abs(mine - runs.decode("single", node)).max())
    assert differing == {}, (
        f"frames that differ (max |diff| in 8-bit): {differing}; per window decode: {windows}"
    )
    assert windows == {1: 0.0, 2: 0.0, 3: 0.0}


@needs_comfy
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_every_window_samples_the_same_conditioning_into_the_same_latent(runs: Runs) -> None:
    """What the frames barely show (random weights hardly listen to the conditioning, see the module
    docstring): each window's KSampler gets the same conditioning (the concat latent of background
    and continuation frames, its mask, the pose latent, the face pixels) and latent, and returns the
    same latent, bit for bit, in one prompt and in its chunk."""
    for chunk, node in zip(runs.chunks, [FIRST_SAMPLER, EXTENSION_SAMPLER, THIRD_SAMPLER], strict=True):
        mine = runs.digests(f"chunk-{chunk.index}", FIRST_SAMPLER if chunk.index == 1 else EXTENSION_SAMPLER)
        theirs = runs.digests("single", node)
        for part in ("pose_video_latent", "face_video_pixels", "concat_latent_image", "concat_mask"):
            assert any(part in name for name in mine), (part, sorted(mine))  # there to compare
        assert any(name.startswith("out.") for name in mine)
        differing = sorted(name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name))
        assert differing == [], f"window {chunk.first_window}: {differing}"


@needs_comfy
@pytest.mark.timeout(RUN_TIMEOUT_S + 300)
def test_a_slice_cut_one_frame_late_does_not_pass(runs: Runs) -> None:
    """The control: chunk 2 once more with its driving slice one frame late. At 64x64 the stand-ins
    carry the driving frames into the conditioning through the face crop only (the pose stand-in draws
    the same skeleton on every frame; the grown, 32-pixel-blockified stand-in mask covers the whole
    frame, so the background is black), so its face pixels and the latent sampled from them differ
    and nothing else does: the comparison above sees a 1-frame offset there, where the decoded frames
    barely move (module docstring)."""
    late = runs.digests("chunk-2-late", EXTENSION_SAMPLER)
    right = runs.digests("chunk-2", EXTENSION_SAMPLER)
    differing = sorted(name for name in right if late.get(name) != right[name])
    assert differing == ["in.positive.0.1.face_video_pixels", "out.0.samples"]
