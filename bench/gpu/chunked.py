"""A clip as the worker runs it: one ComfyUI prompt per chunk (``worker.graph.chunks``), pure Python.

``Job._generate`` splits a clip of N frames into chunks of ``windows.chunk_windows`` windows
(``Workflow.chunks``) and submits, per chunk, ``Workflow.build(params, chunk=..., clip_frames=N,
motion_file=...)`` with ``params.frames`` = the frames the chunk adds and ``params.driving_video``
= the chunk's driving slice; a clip of one chunk is built without ``chunk`` (the whole clip's
graph). ``chunk_prompts`` builds the same graphs here. Between prompts, the previous chunk's
motion frames file (``WanWorkerSaveChunk``'s ``.motion.safetensors`` output) is copied into
ComfyUI's input folder under the name the next graph's ``WanWorkerLoadMotionFrames`` reads
(``hand_over``), as the worker uploads it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from worker.graph.chunks import Chunk
from worker.graph.workflow import Workflow, WorkflowParams

# What comfyui_nodes/wan_worker_nodes/chunk_io.py names its two files (FRAMES_SUFFIX, MOTION_SUFFIX).
FRAMES_SUFFIX = ".rgb"
MOTION_SUFFIX = ".motion.safetensors"


@dataclass(frozen=True)
class ChunkPrompt:
    chunk: Chunk
    graph: dict[str, Any]
    driving: str  # the ComfyUI input name of its driving video (the clip's, or its slice)
    motion: str | None  # the input name its WanWorkerLoadMotionFrames reads (a chunk that continues)

    @property
    def chunked(self) -> bool:
        return self.chunk.count > 1


def chunk_prompts(
    workflow: Workflow,
    params: WorkflowParams,
    *,
    chunk_windows: int | None = None,
    slice_name: Callable[[Chunk], str] = lambda c: f"gpu-bench/driving-{c.index:04d}.mp4",
    motion_name: Callable[[Chunk], str] = lambda c: f"gpu-bench/motion-{c.index:04d}.safetensors",
) -> list[ChunkPrompt]:
    """The prompts the worker submits for a clip of ``params.frames`` frames (``chunk_windows``:
    the worker's CHUNK_WINDOWS, None = the workflow's ``windows.chunk_windows``, 0 = one prompt)."""
    frames = params.frames
    chunks = workflow.chunks(frames, chunk_windows=chunk_windows)
    prompts = []
    for chunk in chunks:
        chunked = chunk.count > 1
        driving = slice_name(chunk) if chunked else params.driving_video
        motion = motion_name(chunk) if chunk.continues else None
        graph = workflow.build(
            replace(params, driving_video=driving, frames=chunk.frames),
            chunk=chunk if chunked else None,
            clip_frames=frames,
            motion_file=motion,
        )
        prompts.append(ChunkPrompt(chunk=chunk, graph=graph, driving=driving, motion=motion))
    return prompts


@dataclass(frozen=True)
class SavedChunk:
    """What a prompt's ``WanWorkerSaveChunk`` wrote (from its UI output) under ComfyUI's output folder."""

    frames_file: Path | None
    motion_file: Path | None
    width: int
    height: int
    frames: int
    motion_frames: int


def saved_chunk(ui: Mapping[str, Any], output_node: str, output_dir: Path) -> SavedChunk | None:
    """The files and ``wan_chunk`` report of the output node, or None if it saved none (a graph
    whose output node is another class, or one that did not run it)."""
    node = ui.get(output_node) or {}
    reports = node.get("wan_chunk") or []
    if not reports:
        return None
    paths = [output_dir / entry.get("subfolder", "") / entry["filename"] for entry in node.get("images", [])]
    frames = [p for p in paths if p.name.endswith(FRAMES_SUFFIX)]
    motion = [p for p in paths if p.name.endswith(MOTION_SUFFIX)]
    report = reports[0]
    return SavedChunk(
        frames_file=frames[0] if frames else None,
        motion_file=motion[0] if motion else None,
        width=int(report["width"]),
        height=int(report["height"]),
        frames=int(report["frames"]),
        motion_frames=int(report.get("motion_frames", 0)),
    )


def reads_motion(prompt: ChunkPrompt) -> bool:
    """Its graph reads the previous chunk's motion frames (not so a --preprocess-only subgraph)."""
    return prompt.motion is not None and any(
        value == prompt.motion for node in prompt.graph.values() for value in node["inputs"].values()
    )


def hand_over(previous: SavedChunk | None, motion_name: str, input_dir: Path) -> Path:
    """Copies the previous chunk's motion frames into ComfyUI's input folder as ``motion_name``,
    where the next chunk's ``WanWorkerLoadMotionFrames`` reads them (the worker uploads them)."""
    if previous is None or previous.motion_file is None:
        raise SystemExit(f"{motion_name}: the prompt continues, but the one before it saved no motion frames")
    dest = input_dir / motion_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(previous.motion_file, dest)
    return dest
