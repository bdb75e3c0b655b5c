"""From the executed API graphs of one clip to the per-stage table: pure Python, no torch, no ComfyUI.

The benchmark records one ``NodeRun`` per node ComfyUI executed (start/end after a device sync,
peak memory, GPU busy/idle seconds sampled by NVML, sampler step times). This module decides
which stage each node belongs to and which generation window it serves, aggregates the runs
(median over windows, totals), derives per-backend clip totals from per-step comparisons, and
renders the markdown tables of bench/README.md.

A clip the worker runs as chunks (``worker.graph.chunks``) is one prompt per chunk; each run carries
its chunk's number and node ids repeat between chunks, so a chunk's per-window nodes are keyed
``"<chunk>/<node>"`` (``window_key``) and numbered with the clip's windows (``chunk_windows``).

The pinned graph ends in ``WanWorkerSaveChunk`` (raw RGB frames, and the next chunk's float32
motion frames): ComfyUI no longer encodes H.264. The worker does (``worker.chunk_media.
encode_frames``), on the CPU, while ComfyUI runs the next chunk; the benchmark times that encode
apart from the prompts (``EncodeRun``, ``render_encodes``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from worker.graph.api import is_link

ANIMATE_CLASS = "WanAnimateToVideo"
# The pinned workflow's windows use this repository's subclass (comfyui_nodes/wan_worker_nodes).
ANIMATE_CLASSES = (ANIMATE_CLASS, "WanAnimateToVideoOfficialMask")
SAMPLER_CLASS = "KSampler"

# Stage of each class of the pinned graph; a class not listed gets "other: <class>".
STAGE_OF_CLASS = {
    "UNETLoader": "load: models (file -> RAM)",
    "LoraLoaderModelOnly": "load: models (file -> RAM)",
    "StrictLoraLoaderModelOnly": "load: models (file -> RAM)",
    "ModelSamplingSD3": "load: models (file -> RAM)",
    "CLIPLoader": "load: models (file -> RAM)",
    "VAELoader": "load: models (file -> RAM)",
    "CLIPVisionLoader": "load: models (file -> RAM)",
    "OnnxDetectionModelLoader": "load: pose/SAM2 models",
    "OnnxDetectionModelLoaderChecked": "load: pose/SAM2 models",
    "DownloadAndLoadSAM2Model": "load: pose/SAM2 models",
    "LoadImage": "inputs: read avatar + driving video",
    "LoadVideo": "inputs: read avatar + driving video",
    "GetVideoComponents": "inputs: decode driving video",
    "ImageBatchReflectPad": "inputs: decode driving video",
    "ImageResizeKJv2": "preprocess: avatar resize",
    "CLIPVisionEncode": "encode: CLIP vision + text",
    "CLIPTextEncode": "encode: CLIP vision + text",
    "PoseAndFaceDetection": "preprocess: pose + face detection (ONNX)",
    "DrawViTPose": "preprocess: draw pose video",
    "Sam2Segmentation": "preprocess: SAM2 person mask",
    "Sam2SegmentationReleased": "preprocess: SAM2 person mask",
    "GrowMaskWithBlur": "preprocess: mask grow/blockify + background",
    "BlockifyMask": "preprocess: mask grow/blockify + background",
    "DrawMaskOnImage": "preprocess: mask grow/blockify + background",
    **dict.fromkeys(ANIMATE_CLASSES, "window: conditioning (WanAnimateToVideo, VAE encodes)"),
    SAMPLER_CLASS: "window: sampler (KSampler)",
    "TrimVideoLatent": "window: VAE decode + trims",
    "VAEDecode": "window: VAE decode + trims",
    "ImageFromBatch": "window: VAE decode + trims",
    "BatchImagesNode": "output: join windows' frames",
    "WanWorkerSaveChunk": "output: save raw frames (+ motion frames)",
    # A --workflow that still encodes inside ComfyUI (the pinned graph did before issue 10).
    "CreateVideo": "output: encode MP4 in ComfyUI (SaveVideo)",
    "SaveVideo": "output: encode MP4 in ComfyUI (SaveVideo)",
    # A continuing chunk's first window reads the previous chunk's last 5 decoded frames.
    "WanWorkerLoadMotionFrames": "inputs: read avatar + driving video",
}
STAGE_ORDER = [
    "load: models (file -> RAM)",
    "load: pose/SAM2 models",
    "inputs: read avatar + driving video",
    "inputs: decode driving video",
    "preprocess: avatar resize",
    "encode: CLIP vision + text",
    "preprocess: pose + face detection (ONNX)",
    "preprocess: draw pose video",
    "preprocess: SAM2 person mask",
    "preprocess: mask grow/blockify + background",
    "window: conditioning (WanAnimateToVideo, VAE encodes)",
    "window: sampler (KSampler)",
    "window: VAE decode + trims",
    "output: join windows' frames",
    "output: save raw frames (+ motion frames)",
    "output: encode MP4 in ComfyUI (SaveVideo)",
]


OUTPUT_STAGE = "output: join windows' frames"  # also the final cut to N frames, after the join


def stage_of(class_type: str) -> str:
    return STAGE_OF_CLASS.get(class_type, f"other: {class_type}")


def _links(inputs: Mapping[str, Any]) -> list[str]:
    return [value[0] for value in inputs.values() if is_link(value)]


def windows_of(graph: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Generation window (1-based) of every per-window node; clip-level nodes are absent.

    Window k's WanAnimateToVideo is the k-th in the chain (each extension depends on the
    previous window). A node belongs to the latest window it depends on; the collector that
    joins several windows, and everything after it, is clip-level.
    """
    memo: dict[str, int | None] = {}
    collectors: set[str] = set()

    def window(node_id: str) -> int | None:
        if node_id in memo:
            return memo[node_id]
        memo[node_id] = None  # cycle guard; ComfyUI rejects cycles anyway
        node = graph[node_id]
        parents = [p for p in _links(node["inputs"]) if p in graph]
        parent_windows = {w for w in (window(p) for p in parents) if w is not None}
        if any(p in collectors for p in parents) or (
            len(parent_windows) > 1 and node["class_type"] not in ANIMATE_CLASSES
        ):
            collectors.add(node_id)
            memo[node_id] = None
            return None
        result = max(parent_windows) if parent_windows else None
        if node["class_type"] in ANIMATE_CLASSES:
            result = (result or 0) + 1
        memo[node_id] = result
        return result

    return {node_id: w for node_id in graph if (w := window(node_id)) is not None}


def window_key(node: str, chunk: int = 1) -> str:
    """A node run's key in a clip's windows map: its id in chunk 1 (or in a clip run as one
    prompt), ``"<chunk>/<id>"`` in later chunks, whose graphs reuse the first chunk's ids."""
    return node if chunk <= 1 else f"{chunk}/{node}"


def chunk_windows(
    graph: Mapping[str, Mapping[str, Any]], *, chunk: int = 1, first_window: int = 1
) -> dict[str, int]:
    """``windows_of`` one chunk's graph, keyed by ``window_key`` and numbered with the clip's
    windows (the chunk's first window is the clip's ``first_window``)."""
    return {window_key(node, chunk): w + first_window - 1 for node, w in windows_of(graph).items()}


@dataclass
class NodeRun:
    node: str
    class_type: str
    start: float
    end: float
    peak_allocated_gib: float | None = None  # torch allocator peak during the node
    peak_used_gib: float | None = None  # whole-device peak (NVML), what a second process would see
    gpu_busy_s: float | None = None  # NVML utilisation samples > 0, in seconds
    gpu_idle_s: float | None = None  # NVML utilisation samples == 0, in seconds
    steps: list[float] = field(default_factory=list)  # sampler step durations
    stand_in: bool = False  # a stand-in of this benchmark ran instead of the real node
    chunk: int = 1  # the prompt (worker.graph.chunks) it ran in, 1-based

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def key(self) -> str:
        return window_key(self.node, self.chunk)


@dataclass
class StageRow:
    stage: str
    nodes: int
    windows: int  # 0 for clip-level stages
    total_s: float
    median_window_s: float | None  # per-window stages: median over windows
    peak_allocated_gib: float | None
    peak_used_gib: float | None
    gpu_idle_s: float | None  # total over the stage
    stand_in: bool


def _max(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _sum(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def aggregate(runs: list[NodeRun], windows: Mapping[str, int]) -> list[StageRow]:
    by_stage: dict[str, list[NodeRun]] = {}
    for run in runs:
        stage = stage_of(run.class_type)
        if stage.startswith("window:") and run.key not in windows:
            stage = OUTPUT_STAGE  # e.g. the final cut to N frames, after all windows are joined
        by_stage.setdefault(stage, []).append(run)
    rows = []
    order = STAGE_ORDER + sorted(set(by_stage) - set(STAGE_ORDER))
    for stage in order:
        stage_runs = by_stage.get(stage)
        if not stage_runs:
            continue
        per_window: dict[int, float] = {}
        for run in stage_runs:
            if stage.startswith("window:") and run.key in windows:
                per_window[windows[run.key]] = per_window.get(windows[run.key], 0.0) + run.seconds
        rows.append(
            StageRow(
                stage=stage,
                nodes=len(stage_runs),
                windows=len(per_window),
                total_s=sum(r.seconds for r in stage_runs),
                median_window_s=statistics.median(per_window.values()) if per_window else None,
                peak_allocated_gib=_max(r.peak_allocated_gib for r in stage_runs),
                peak_used_gib=_max(r.peak_used_gib for r in stage_runs),
                gpu_idle_s=_sum(r.gpu_idle_s for r in stage_runs),
                stand_in=any(r.stand_in for r in stage_runs),
            )
        )
    return rows


def sampler_steps(runs: list[NodeRun]) -> list[float]:
    """Every sampler step of the clip, window 1's first step (weight upload, LoRA merge) left out."""
    steps: list[float] = []
    for index, run in enumerate(r for r in runs if r.class_type == SAMPLER_CLASS):
        steps.extend(run.steps[1:] if index == 0 else run.steps)
    return steps


@dataclass
class BackendResult:
    backend: str
    median_step_s: float
    steps_timed: int
    measured_clip: bool  # the whole clip ran with this backend (else derived from the steps)
    peak_allocated_gib: float | None = None  # torch allocator peak during its sampler run
    probe: str = "–"  # the attention node's probe of it: numerics against math attention


def clip_seconds_by_backend(
    clip_total_s: float,
    clip_backend: str,
    clip_step_s: float,
    steps_per_clip: int,
    comparisons: list[BackendResult],
) -> dict[str, float]:
    """Clip total for each backend: the measured clip with its sampler steps re-priced.

    Only the sampler's attention differs between backends (the conditioning, decode and
    preprocessing do not use the Wan DiT), so each other backend's clip is the measured
    clip + steps_per_clip x (its median step - the measured backend's median step).
    """
    totals = {clip_backend: clip_total_s}
    for result in comparisons:
        if result.backend == clip_backend:
            continue
        totals[result.backend] = clip_total_s + steps_per_clip * (result.median_step_s - clip_step_s)
    return totals


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_table(rows: list[StageRow], *, windows: int) -> str:
    lines = [
        f"| stage | nodes | s / window (median of {windows}) | s / clip | peak GPU mem allocated / "
        "device used (GiB) | GPU idle s / clip | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        note = "stand-in, not measured (see below)" if row.stand_in else ""
        lines.append(
            f"| {row.stage} | {row.nodes} | {_fmt(row.median_window_s)} | {_fmt(row.total_s)} | "
            f"{_fmt(row.peak_allocated_gib)} / {_fmt(row.peak_used_gib)} | {_fmt(row.gpu_idle_s)} | {note} |"
        )
    return "\n".join(lines)


def render_backends(
    results: list[BackendResult], clip_totals: Mapping[str, float], steps_per_window: int, windows: int
) -> str:
    best = min(r.median_step_s for r in results) if results else None
    lines = [
        f"| attention backend | s / step (median) | sampler s / window ({steps_per_window} steps) "
        "| vs best | GPU s / clip | how | peak GiB allocated | probe vs math attention |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in sorted(results, key=lambda r: r.median_step_s):
        vs = f"+{(r.median_step_s / best - 1) * 100:.0f} %" if best else "–"
        how = (
            f"whole clip measured ({windows} windows)"
            if r.measured_clip
            else f"{r.steps_timed} steps measured"
        )
        clip = clip_totals.get(r.backend)
        lines.append(
            f"| {r.backend} | {r.median_step_s:.2f} | {r.median_step_s * steps_per_window:.1f} | {vs} | "
            f"{_fmt(clip)}{'' if r.measured_clip else ' [D]'} | {how} | "
            f"{_fmt(r.peak_allocated_gib)} | {r.probe} |"
        )
    return "\n".join(lines)


PREPROCESS_STAGES = (
    "load: pose/SAM2 models",
    "preprocess: pose + face detection (ONNX)",
    "preprocess: draw pose video",
    "preprocess: SAM2 person mask",
    "preprocess: mask grow/blockify + background",
)


def not_executed(
    graph: Mapping[str, Mapping[str, Any]], runs: Iterable[NodeRun], cached: Iterable[str] = ()
) -> list[str]:
    """Node ids of one prompt's graph that no run recorded and ComfyUI did not answer from its
    cache (``cached``: a later chunk's model loaders and text encodes, identical to the first's)."""
    done = {run.node for run in runs} | set(cached)
    return sorted((nid for nid in graph if nid not in done), key=lambda nid: (len(nid), nid))


def render_nodes(runs: Iterable[NodeRun], *, only_stages: Iterable[str] | None = None) -> str:
    """Every node run, in execution order: id, class, stage, seconds, real or stand-in."""
    wanted = set(only_stages) if only_stages is not None else None
    lines = ["| node | class | stage | s | ran as |", "|---:|---|---|---:|---|"]
    for run in runs:
        stage = stage_of(run.class_type)
        if wanted is not None and stage not in wanted:
            continue
        how = "stand-in, not measured" if run.stand_in else "real"
        lines.append(f"| {run.key} | {run.class_type} | {stage} | {run.seconds:.2f} | {how} |")
    return "\n".join(lines)


@dataclass
class EncodeRun:
    """The worker's H.264 encode of one chunk's raw frames (``worker.chunk_media.encode_frames``),
    timed on its own, on the CPU: in a job it runs while ComfyUI runs the next chunk's prompt."""

    chunk: int
    chunks: int
    frames: int
    raw_bytes: int
    seconds: float | None  # None: not measured (``error`` says why)
    error: str | None = None

    @property
    def overlaps(self) -> str:
        if self.chunk < self.chunks:
            return f"chunk {self.chunk + 1}'s prompt"
        return "nothing: the last chunk, the job waits for it"


def critical_path_s(prompt_walls: list[float], encodes: list[EncodeRun]) -> float | None:
    """The job's seconds from the first prompt to the last chunk's MP4 when chunk k's encode runs
    while chunk k + 1's prompt does (``Job._generate``): every prompt, what each encode runs past
    the next prompt, and the last chunk's encode, which nothing overlaps. None if one is unmeasured."""
    if len(encodes) != len(prompt_walls) or any(e.seconds is None for e in encodes):
        return None
    total = sum(prompt_walls)
    for index, encode in enumerate(encodes):
        following = prompt_walls[index + 1] if index + 1 < len(prompt_walls) else 0.0
        total += max(0.0, (encode.seconds or 0.0) - following)
    return total


def render_encodes(encodes: list[EncodeRun], prompt_walls: list[float]) -> str:
    """Per chunk: its prompt, its raw frames and the worker's encode of them, and what that overlaps."""
    lines = [
        "| chunk | frames | prompt s (ComfyUI) | raw RGB MB | worker H.264 encode s (CPU) | runs during |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for encode, wall in zip(encodes, prompt_walls, strict=True):
        seconds = _fmt(encode.seconds, 2) if encode.seconds is not None else f"– ({encode.error})"
        lines.append(
            f"| {encode.chunk} | {encode.frames} | {wall:.1f} | {encode.raw_bytes / 1e6:.1f} | {seconds} | "
            f"{encode.overlaps} |"
        )
    return "\n".join(lines)
