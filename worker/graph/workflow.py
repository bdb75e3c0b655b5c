"""Workflow binding: a pinned API-format graph plus a bindings file, turned into the
exact graph submitted for one job.

``workflows/NAME.json`` is a ComfyUI API graph; ``workflows/NAME.bindings.json`` maps each
job parameter to the node inputs it sets and names the one output node::

    {"inputs": {"image": [{"node": "1", "input": "image"}], ...},
     "defaults": {"seed": 42, "prompt": "...", "negative_prompt": "..."},
     "output": {"node": "7"},
     "settings": {"steps": {"value": 6, "env": "WAN_STEPS", "targets": [{"node": "31", "input": "steps"}]}},
     "windows": {...},            # optional: per-length expansion, see worker.graph.windows
     "chunks": {"frames": 48}}    # optional, workflows without windows: frames per prompt

``output.kind`` says what the output node writes: ``"video"`` (an MP4, e.g. core SaveVideo; the
default) or ``"frames"`` (``WanWorkerSaveChunk``'s raw frames, which the worker encodes). A job
is run as chunks (``worker.graph.chunks``: one prompt per ``windows.chunk_windows`` windows, or per
``chunks.frames`` frames) only with ``"frames"``.

``settings`` are deployment-level values (not job parameters): set into the graph at load,
each overridable by the environment variable it names (the value is parsed as the type of
the default). ``Workflow.load`` takes the overrides as raw strings by variable name (the worker's
``Settings.workflow_overrides``: every ``WAN_*`` variable) and refuses a name that is none of
its settings. A setting with ``"model_role"`` instead of ``value``/``env`` (the diffusion model)
takes the file name that ``models/manifest.json`` gives that role for the model variant
(``MODEL_VARIANT``): one setting chooses the model and the files it needs. They are part of
``Workflow.sha256``.

Switching workflows is the ``WORKFLOW`` environment variable, no code.
``python -m worker.graph print --frames N`` prints the exact graph the worker would submit for a
driving video of N frames.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from worker.contract import OUTPUT
from worker.errors import ErrorCode, WorkerError
from worker.graph.chunks import Chunk, plan_frame_chunks, plan_window_chunks
from worker.graph.windows import Window, WindowSpec, check_spec, expand_windows, plan_windows
from worker.models import ManifestError, load_manifest

PARAMETERS = (
    "image",
    "driving_video",
    "seed",
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "fps",
    "frames",
    "filename_prefix",
)
OUTPUT_KINDS = ("video", "frames")
NO_OVERRIDES: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Binding:
    node: str
    input: str


@dataclass(frozen=True)
class WorkflowParams:
    """Everything a job sets in the graph."""

    image: str
    driving_video: str
    frames: int
    filename_prefix: str
    seed: int
    prompt: str
    negative_prompt: str
    width: int = OUTPUT.width
    height: int = OUTPUT.height
    fps: float = float(OUTPUT.fps)

    def value(self, name: str) -> Any:
        return getattr(self, name)


@dataclass(frozen=True)
class Workflow:
    name: str
    path: Path
    sha256: str
    graph: dict[str, Any]
    bindings: dict[str, tuple[Binding, ...]]
    output_node: str
    defaults: dict[str, Any] = field(default_factory=dict)
    windows: WindowSpec | None = None  # parsed and checked against the graph at load
    settings: dict[str, Any] = field(default_factory=dict)
    output_kind: str = "video"
    chunk_frames: int = 0  # workflows without windows: frames per prompt (0: one prompt)

    @classmethod
    def load(
        cls, path: Path, overrides: Mapping[str, str] = NO_OVERRIDES, *, model_variant: str | None = None
    ) -> Workflow:
        """``overrides``: raw setting values by environment variable name (``WAN_STEPS``: ``"4"``);
        ``model_variant``: the manifest variant whose files ``model_role`` settings name (None: the
        manifest's default)."""
        bindings_path = path.with_suffix(".bindings.json")
        try:
            graph_bytes = path.read_bytes()
            bindings_bytes = bindings_path.read_bytes()
            graph = json.loads(graph_bytes)
            spec = json.loads(bindings_bytes)
        except (OSError, json.JSONDecodeError) as exc:
            raise _invalid(f"cannot read workflow {path.name}: {exc}") from exc
        settings = _apply_settings(
            graph, spec.get("settings", {}), overrides, workflow=path.name, model_variant=model_variant
        )
        digest_input = graph_bytes + b"\0" + bindings_bytes
        if settings:
            digest_input += b"\0" + json.dumps(settings, sort_keys=True).encode()
        bindings = _parse_bindings(spec)
        output_node = str(spec.get("output", {}).get("node", ""))
        output_kind = str(spec.get("output", {}).get("kind", "video"))
        chunk_frames = _chunk_frames(spec.get("chunks"))
        _check(path.name, graph, bindings, output_node, output_kind)
        windows = None
        if spec.get("windows") is not None:
            windows = check_spec(graph, spec["windows"])
            if windows.chunk_windows and output_kind != "frames":
                raise _invalid(
                    "windows.chunk_windows needs output.kind 'frames' (chunks are encoded by the worker)"
                )
        if chunk_frames and (windows is not None or output_kind != "frames"):
            raise _invalid("chunks.frames is for workflows without windows whose output.kind is 'frames'")
        return cls(
            name=path.stem,
            path=path,
            sha256=hashlib.sha256(digest_input).hexdigest(),
            graph=graph,
            bindings=bindings,
            output_node=output_node,
            defaults=dict(spec.get("defaults", {})),
            windows=windows,
            settings=settings,
            output_kind=output_kind,
            chunk_frames=chunk_frames,
        )

    def example_params(
        self, frames: int, *, seed: int | None = None, filename_prefix: str = "wan-worker/example"
    ) -> WorkflowParams:
        """Parameters for ``frames`` with placeholder inputs and this workflow's defaults: what the
        CLIs print and check, and what the worker checks at start."""
        return WorkflowParams(
            image="avatar.png",
            driving_video="driving.mp4",
            frames=frames,
            filename_prefix=filename_prefix,
            seed=seed if seed is not None else int(self.defaults.get("seed", 42)),
            prompt=str(self.defaults.get("prompt", "")),
            negative_prompt=str(self.defaults.get("negative_prompt", "")),
        )

    def chunks(self, frames: int, *, chunk_windows: int | None = None) -> list[Chunk]:
        """The chunks a clip of ``frames`` frames is generated in (one when not chunked).
        ``chunk_windows`` overrides ``windows.chunk_windows`` (0: the whole clip in one prompt)."""
        if self.windows is not None:
            per_chunk = self.windows.chunk_windows if chunk_windows is None else chunk_windows
            windows = len(self.window_plan(frames))
            if self.output_kind != "frames" or per_chunk <= 0:
                per_chunk = windows
            return plan_window_chunks(
                frames,
                chunk_windows=per_chunk,
                window_frames=self.windows.window_frames,
                motion_frames=self.windows.motion_frames,
                last_window=self.windows.last_window,
            )
        return plan_frame_chunks(frames, chunk_frames=self.chunk_frames or frames)

    def window_plan(self, frames: int) -> list[Window]:
        """The clip's windows (``worker.graph.windows.plan_windows``); [] without windows."""
        if self.windows is None:
            return []
        return plan_windows(
            frames,
            window_frames=self.windows.window_frames,
            motion_frames=self.windows.motion_frames,
            last_window=self.windows.last_window,
        )

    def build(
        self,
        params: WorkflowParams,
        *,
        chunk: Chunk | None = None,
        clip_frames: int | None = None,
        motion_file: str | None = None,
    ) -> dict[str, Any]:
        """The API graph for one job: bound values set, then expanded for its length. For one
        ``chunk`` of a chunked clip of ``clip_frames`` frames, ``params.frames`` is what the
        chunk adds and ``motion_file`` the previous chunk's frames (when it continues)."""
        graph = copy.deepcopy(self.graph)
        for name, targets in self.bindings.items():
            value = params.value(name)
            for target in targets:
                graph[target.node]["inputs"][target.input] = value
        if self.windows is not None:
            if chunk is not None and chunk.count > 1:
                graph = expand_windows(
                    graph,
                    self.windows,
                    frames=clip_frames or params.frames,
                    chunk=chunk,
                    motion_file=motion_file,
                )
            else:
                graph = expand_windows(graph, self.windows, frames=params.frames)
        return graph


def _check(
    name: str, graph: Any, bindings: Mapping[str, tuple[Binding, ...]], output_node: str, output_kind: str
) -> None:
    if not isinstance(graph, dict) or not graph:
        raise _invalid(f"{name} is not an API-format graph (an object of nodes)")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node or "inputs" not in node:
            raise _invalid(f"node {node_id} of {name} has no class_type/inputs")
    if output_node not in graph:
        raise _invalid(f"output node {output_node!r} is not in {name}")
    for parameter, targets in bindings.items():
        for target in targets:
            node = graph.get(target.node)
            if node is None:
                raise _invalid(f"binding {parameter!r} points at missing node {target.node}")
            # A binding may only set an input the node already has: a misspelled input
            # name would be silently ignored by ComfyUI.
            if target.input not in node["inputs"]:
                raise _invalid(
                    f"binding {parameter!r} sets unknown input {target.input!r} of node "
                    f"{target.node} ({node['class_type']})"
                )
    for required in ("image", "driving_video", "frames", "filename_prefix"):
        if not bindings.get(required):
            raise _invalid(f"{name}: parameter {required!r} is bound to no node")
    if output_kind not in OUTPUT_KINDS:
        raise _invalid(f"output.kind must be one of {OUTPUT_KINDS}, not {output_kind!r}")


def _chunk_frames(raw: Any) -> int:
    if raw is None:
        return 0
    try:
        frames = int(raw["frames"])
    except (TypeError, KeyError, ValueError) as exc:
        raise _invalid("bindings 'chunks' must be {\"frames\": N}") from exc
    if frames < 1:
        raise _invalid("chunks.frames must be at least 1")
    return frames


def _parse_bindings(spec: dict[str, Any]) -> dict[str, tuple[Binding, ...]]:
    raw = spec.get("inputs")
    if not isinstance(raw, dict):
        raise _invalid("bindings file has no 'inputs' object")
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise _invalid(f"bindings name unknown parameters {unknown}; known: {list(PARAMETERS)}")
    bindings: dict[str, tuple[Binding, ...]] = {}
    for name, targets in raw.items():
        try:
            bindings[name] = tuple(Binding(node=str(t["node"]), input=str(t["input"])) for t in targets)
        except (TypeError, KeyError) as exc:
            raise _invalid(f"binding {name!r} must be a list of {{node, input}}") from exc
    return bindings


def _apply_settings(
    graph: dict[str, Any],
    raw: Any,
    overrides: Mapping[str, str],
    *,
    workflow: str,
    model_variant: str | None,
) -> dict[str, Any]:
    """Set each deployment setting (its default, its override, or its model file) into the graph."""
    if not isinstance(raw, dict):
        raise _invalid("bindings 'settings' must be an object")
    if not isinstance(graph, dict):
        return {}  # not an API graph: _check says so
    entries: dict[str, tuple[Any, str | None, list[Binding]]] = {}
    for name, entry in raw.items():
        try:
            targets = [Binding(node=str(t["node"]), input=str(t["input"])) for t in entry["targets"]]
            if "model_role" in entry:
                entries[name] = (_model_file(str(entry["model_role"]), model_variant), None, targets)
                continue
            variable = entry.get("env")
            entries[name] = (entry["value"], str(variable) if variable else None, targets)
        except (TypeError, KeyError, AttributeError) as exc:
            raise _invalid(
                f"setting {name!r} must be {{value, env, targets: [{{node, input}}]}} "
                "or {model_role, targets: [{node, input}]}"
            ) from exc
    known = sorted(variable for _, variable, _ in entries.values() if variable)
    # A misspelled variable (WAN_STEP) would otherwise change nothing without a word.
    unknown = sorted(name for name, text in overrides.items() if text.strip() and name not in known)
    if unknown:
        raise WorkerError(
            ErrorCode.CONFIG_INVALID,
            f"{', '.join(unknown)}: not a setting of workflow {workflow}, whose settings are "
            f"{', '.join(known) or 'none'}",
            details={"unknown": unknown, "settings": known},
        )
    values: dict[str, Any] = {}
    for name, (value, variable, targets) in entries.items():
        override = overrides.get(variable, "").strip() if variable else ""
        if override:
            value = _parse_like(value, override, variable=str(variable), setting=name)
        for target in targets:
            node = graph.get(target.node)
            if node is None or target.input not in node.get("inputs", {}):
                raise _invalid(f"setting {name!r} targets missing input {target.node}.{target.input}")
            node["inputs"][target.input] = value
        values[name] = value
    return values


def _model_file(role: str, variant: str | None) -> str:
    """The file name the manifest gives ``role`` in ``variant``."""
    try:
        return load_manifest().filename_for(role, variant)
    except ManifestError as exc:
        raise WorkerError(ErrorCode.CONFIG_INVALID, f"model variant {variant!r}: {exc}") from exc


def _parse_like(default: Any, text: str, *, variable: str, setting: str) -> Any:
    if isinstance(default, bool) or not isinstance(default, int | float | str):
        raise _invalid(f"setting {setting!r}: only int, float and string values can be overridden")
    try:
        return type(default)(text)
    except ValueError:
        noun = "an integer" if isinstance(default, int) else "a number"
        raise WorkerError(
            ErrorCode.CONFIG_INVALID,
            f"{variable} (workflow setting {setting!r}) must be {noun}, not {text!r}",
        ) from None


def _invalid(message: str) -> WorkerError:
    return WorkerError(ErrorCode.WORKFLOW_INVALID, message)
