"""Every static check of a graph before it reaches ComfyUI, and the workflow the worker (and
``python -m worker.preflight``) loads at start with each kind of graph it builds checked.

``check_graph`` returns a list of problems (empty when the graph is fine): ComfyUI's own
``POST /prompt`` checks and what the server lets through (``comfy_checks``), this repository's
rules for its graphs (``wan_rules``), and, when given, the output's exact frame count
(``frame_count``), its fps and the model files the manifest installs (``models/manifest.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.errors import ErrorCode, WorkerError
from worker.graph.catalogue import load_catalogue
from worker.graph.chunks import Chunk
from worker.graph.comfy_checks import ComfyChecks
from worker.graph.frame_count import FrameCountChecks
from worker.graph.wan_rules import ANIMATE_CLASSES, WanRules
from worker.graph.workflow import Workflow, WorkflowParams
from worker.models import MANIFEST_PATH, load_manifest

# The clip length whose chunks the start check builds: long enough for a second and a last chunk.
START_CHECK_FRAMES = 1000


def check_graph(
    graph: Mapping[str, Any],
    catalogue: Mapping[str, Any],
    *,
    installed_models: Mapping[str, set[str]] | None = None,
    frames: int | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    driving_frames: int | None = None,
) -> list[str]:
    """Problems that would make ComfyUI refuse ``graph`` or make the wrong video; [] if none.

    ``frames`` is the output's frame count, ``driving_frames`` the driving video's (default: the
    same; a chunk's slice holds more frames than the chunk adds)."""
    problems: list[str] = []
    comfy = ComfyChecks(graph, catalogue, problems)
    if not comfy.structure_ok():
        return problems
    comfy.check_nodes()
    acyclic = comfy.check_graph_shape()
    wan = WanRules(graph, problems)
    if any(node["class_type"] in ANIMATE_CLASSES for node in graph.values()):
        wan.check_replacement()
        wan.check_sizes(width, height)
        wan.check_loras()
        wan.check_pack_guards()
    wan.check_sam2()
    wan.check_fps(fps)
    if frames is not None and acyclic:
        FrameCountChecks(graph, problems).check_frame_count(
            frames, frames if driving_frames is None else driving_frames
        )
    if installed_models is not None:
        comfy.check_models(installed_models)
    return problems


@dataclass(frozen=True)
class CheckedWorkflow:
    """A workflow with what its graphs are checked against: the catalogue and the model files the
    manifest installs for the model variant."""

    workflow: Workflow
    catalogue: Mapping[str, Any]
    installed_models: Mapping[str, set[str]]

    def graph(
        self,
        params: WorkflowParams,
        *,
        chunk: Chunk | None = None,
        clip_frames: int | None = None,
        driving_frames: int | None = None,
        motion_file: str | None = None,
    ) -> dict[str, Any]:
        """The job's graph (or one chunk's), refused unless it passes the pinned stack's checks:
        ComfyUI's own validation misses unknown input names, window lengths, replacement wiring, fps."""
        graph = self.workflow.build(params, chunk=chunk, clip_frames=clip_frames, motion_file=motion_file)
        problems = check_graph(
            graph,
            self.catalogue,
            installed_models=self.installed_models,
            frames=params.frames,
            fps=params.fps,
            width=params.width,
            height=params.height,
            driving_frames=driving_frames,
        )
        if problems:
            raise WorkerError(
                ErrorCode.WORKFLOW_INVALID,
                f"the {self.workflow.name} graph for {params.frames} frames fails its checks: {problems[0]}",
                details={"problems": problems[:20], "frames": params.frames},
            )
        return graph


def load_checked_workflow(
    path: Path, overrides: Mapping[str, str], *, model_variant: str, chunk_windows: int | None
) -> CheckedWorkflow:
    """The workflow at ``path`` with its setting ``overrides``, refused (``WORKFLOW_INVALID``, or
    ``CONFIG_INVALID`` for a setting or a model file of another variant) unless every kind of graph
    it builds passes: one short clip, one of two windows, and a long clip's second and last chunks
    of ``chunk_windows`` windows (the continuation wiring). No network, no ComfyUI."""
    checked = CheckedWorkflow(
        workflow=Workflow.load(path, overrides, model_variant=model_variant),
        catalogue=load_catalogue(),
        installed_models=load_manifest().installed(model_variant),
    )
    workflow = checked.workflow
    chunks = workflow.chunks(START_CHECK_FRAMES, chunk_windows=chunk_windows)
    checks: list[tuple[int, Chunk | None]] = [(1, None), (150, None)]
    checks += [(START_CHECK_FRAMES, chunk) for chunk in {chunks[1], chunks[-1]}] if len(chunks) > 1 else []
    for frames, chunk in checks:
        params = workflow.example_params(
            chunk.frames if chunk else frames, filename_prefix="wan-worker/start-check"
        )
        try:
            checked.graph(
                params,
                chunk=chunk,
                clip_frames=frames,
                driving_frames=chunk.slice_frames if chunk else frames,
                motion_file="wan-worker/start-check/motion.safetensors"
                if chunk and chunk.continues
                else None,
            )
        except WorkerError as exc:
            if not any("model manifest" in p for p in exc.details.get("problems", [])):
                raise
            installs = {folder: sorted(names) for folder, names in checked.installed_models.items()}
            raise WorkerError(
                ErrorCode.CONFIG_INVALID,
                f"{exc.message}. MODEL_VARIANT={model_variant} installs only the files of "
                f"{MANIFEST_PATH.name} for that variant, and the workflow names a model file that is "
                "not one of them: name it through a model_role setting or add it to the manifest",
                details={**exc.details, "model_variant": model_variant, "manifest_installs": installs},
            ) from exc
    return checked
