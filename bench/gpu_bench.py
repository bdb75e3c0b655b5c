#!/usr/bin/env python3
"""GPU seconds of one clip through the pinned workflow, per stage and per attention backend.

    python bench/gpu_bench.py --comfy /path/to/ComfyUI              # 10-s clip, 1280x720, 240 frames
    python bench/gpu_bench.py --comfy /path/to/ComfyUI --tiny --cpu # the same path at toy size, no GPU

ComfyUI is imported from --comfy (none of its code is here) and started in this process as its
main.py starts it. The graphs are the ones the worker submits for --frames: one prompt per chunk of
--chunk-windows windows (``worker.graph.chunks``; default the workflow's, 4: a 240-frame clip is one
prompt), each checked by ComfyUI's ``validate_prompt`` and run by its ``PromptExecutor`` in turn, a
continuing chunk reading the previous chunk's motion frames (bench/gpu/chunked.py). The pinned graph
ends in WanWorkerSaveChunk (raw frames): the H.264 encode is the worker's, on the CPU while ComfyUI
runs the next chunk; it is timed apart, per chunk, with the worker's own encode_frames
(bench/gpu/encode.py, in --worker-python) and not counted in the prompts' seconds. Model files
are shape-true random weights (bench/gpu/weights.py) written under the manifest's file names.
Classes of custom node packs that are not supplied with --custom-nodes (or --packs) run as
stand-ins of the right output shapes (bench/gpu/standins.py) and are marked as not measured. With
--packs the pinned packs run for real on model files made here (bench/gpu/pack_models.py: ViTPose-L
and a YOLO-class detector exported to ONNX with random weights, SAM2 built by the pack's own code),
and every node that executed is listed with its time; a node that did not execute fails the run.

Then, for every other attention backend available, window 1's sampler is run again for
--compare-steps steps (everything upstream comes from ComfyUI's cache) and its clip total is
derived from the measured clip. Results: OUT/results.json and OUT/table.md (OUT = --out or $OUT).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.gpu import plan, stages  # noqa: E402
from worker.graph.api import is_link, upstream  # noqa: E402

ATTENTION_NODE = REPO / "comfyui_nodes" / "wan_worker_attention"
GRAPH_NODES = REPO / "comfyui_nodes" / "wan_worker_nodes"  # the workflow's own classes
DEFAULT_WORKFLOW = REPO / "workflows" / "wan22_animate_replace.json"
BACKENDS = ("cudnn", "flash", "sage", "fa4", "fa3")
T0 = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfy", type=Path, required=True, help="a ComfyUI checkout (the pinned commit)")
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW)
    parser.add_argument(
        "--frames", type=int, help="driving video frames (default 240 = 10 s at 24 fps; tiny 100)"
    )
    parser.add_argument("--width", type=int, help="default 1280 (tiny 64)")
    parser.add_argument("--height", type=int, help="default 720 (tiny 64)")
    parser.add_argument(
        "--steps", type=int, help="sampler steps per window (default: the workflow's WAN_STEPS)"
    )
    parser.add_argument(
        "--chunk-windows",
        type=int,
        help="windows per prompt, as the worker's CHUNK_WINDOWS (default: the workflow's; 0: one prompt)",
    )
    parser.add_argument(
        "--worker-python",
        type=Path,
        default=Path(sys.executable),
        help="a Python with the worker's requirements (ffmpeg-python): it times the encode of each chunk",
    )
    parser.add_argument("--tiny", action="store_true", help="toy DiT and sizes; text encoder replaced")
    parser.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU")
    parser.add_argument(
        "--mode",
        choices=("clip", "compare", "both"),
        default="both",
        help="clip: the whole clip; compare: window 1 + per-backend sampler steps; both",
    )
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="attention backends compared on window 1 (those unavailable are skipped)",
    )
    parser.add_argument("--compare-steps", type=int, default=3)
    parser.add_argument(
        "--custom-nodes",
        type=Path,
        action="append",
        default=[],
        help="a custom node pack folder to load for real (repeatable)",
    )
    parser.add_argument(
        "--packs",
        type=Path,
        help="a folder holding the pinned packs (bench/gpu/pack_nodes.sh makes .gpu/packs): each is loaded",
    )
    parser.add_argument(
        "--preprocess-only",
        action="store_true",
        help="run only the preprocessing nodes (pose/face, pose drawing, SAM2, masks) and what they need",
    )
    parser.add_argument(
        "--onnx-provider",
        choices=("auto", "CUDAExecutionProvider", "CPUExecutionProvider"),
        default="auto",
        help="the ONNX loader's onnx_device (auto: CUDA if this onnxruntime has it and the run is on a GPU)",
    )
    parser.add_argument(
        "--models", type=Path, help="where the random model files go (default: /dev/shm if room)"
    )
    parser.add_argument("--fresh-models", action="store_true", help="rewrite model files even if present")
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "bench" / "results" / "gpu")
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/wan-gpu-bench-work"),
        help="ComfyUI's input/output/temp folders for the run",
    )
    parser.add_argument(
        "--budget-s", type=float, default=1e9, help="skip backend comparisons past this many seconds"
    )
    opts = parser.parse_args(argv)
    opts.frames = opts.frames or (100 if opts.tiny else 240)
    opts.width = opts.width or (64 if opts.tiny else 1280)
    opts.height = opts.height or (64 if opts.tiny else 720)
    if opts.preprocess_only:
        opts.mode = "clip"  # no sampler to compare backends on
    return opts


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", flush=True)


class Results:
    """results.json, rewritten after every record so a run cut short still leaves what it measured."""

    def __init__(self, out: Path) -> None:
        self.path = out / "results.json"
        self.data: dict[str, Any] = {"info": {}, "files": [], "clip": {}, "backends": [], "notes": []}

    def set(self, section: str, key: str, value: Any) -> None:
        self.data[section][key] = value
        self.save()

    def add(self, section: str, value: Any) -> None:
        self.data[section].append(value)
        self.save()

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def repo_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("BENCH_COMMIT", "unknown")


def default_models_dir(tiny: bool) -> Path:
    shm = Path("/dev/shm")
    need = 3e9 if tiny else 32e9  # DiT 17.3 + umt5 6.7 + LoRAs 2.2 + CLIP 1.3 + VAE 0.3 GB, and room to spare
    if shm.is_dir() and os.statvfs(shm).f_bavail * os.statvfs(shm).f_frsize > need:
        return shm / "wan-gpu-bench-models"
    return Path("/tmp/wan-gpu-bench-models")


def load_workflow(opts: argparse.Namespace) -> Any:
    from worker.config import workflow_overrides
    from worker.graph.workflow import Workflow

    overrides = workflow_overrides(os.environ)
    if opts.steps:
        overrides["WAN_STEPS"] = str(opts.steps)
    return Workflow.load(opts.workflow, overrides)


def bench_params(opts: argparse.Namespace, workflow: Any) -> Any:
    from worker.graph.workflow import WorkflowParams

    return WorkflowParams(
        image="bench_avatar.png",
        driving_video="bench_driving.mp4",
        frames=opts.frames,
        filename_prefix="gpu-bench/clip",
        seed=int(workflow.defaults.get("seed", 42)),
        prompt=str(workflow.defaults.get("prompt", "")),
        negative_prompt=str(workflow.defaults.get("negative_prompt", "")),
        width=opts.width,
        height=opts.height,
        fps=24.0,
    )


def build_graph(opts: argparse.Namespace) -> tuple[dict[str, Any], Any]:
    """The whole clip as one prompt (what the worker submits when the clip is one chunk)."""
    workflow = load_workflow(opts)
    return workflow.build(bench_params(opts, workflow)), workflow


def build_prompts(opts: argparse.Namespace) -> tuple[list[Any], Any]:
    """The prompts the worker submits for the clip: one per chunk (bench/gpu/chunked.py)."""
    from bench.gpu.chunked import chunk_prompts

    workflow = load_workflow(opts)
    return chunk_prompts(workflow, bench_params(opts, workflow), chunk_windows=opts.chunk_windows), workflow


def register_stand_ins(graph: dict[str, Any], tiny: bool, results: Results) -> set[str]:
    import nodes

    from bench.gpu.standins import PACK_STAND_INS, TINY_TEXT_STAND_INS

    used = set()
    for class_type, pack_class in plan.WRAPPED_PACK_CLASS.items():
        cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
        if cls is not None and getattr(cls, "WRAPS_PACK_CLASS", pack_class) != pack_class:
            raise SystemExit(f"{class_type} wraps {cls.WRAPS_PACK_CLASS}, the plan says {pack_class}")
    for class_type in plan.stand_ins_needed(graph, nodes.NODE_CLASS_MAPPINGS):
        if class_type not in PACK_STAND_INS:
            raise SystemExit(
                f"{class_type}: not in ComfyUI, not in a --custom-nodes pack, and no stand-in exists"
            )
        nodes.NODE_CLASS_MAPPINGS[class_type] = PACK_STAND_INS[class_type]
        used.add(class_type)
        results.add(
            "notes", f"{class_type}: stand-in ({plan.WHY_NOT_MEASURED.get(class_type, 'pack not loaded')})"
        )
    if tiny:
        for class_type, cls in TINY_TEXT_STAND_INS.items():
            nodes.NODE_CLASS_MAPPINGS[class_type] = cls
            used.add(class_type)
        results.add("notes", "--tiny: CLIPLoader/CLIPTextEncode replaced by random umt5-shaped conditioning")
    return plan.stand_in_nodes(graph, used)


def onnx_runtime_info() -> dict[str, Any]:
    try:
        import onnxruntime
    except ImportError as exc:
        return {"onnxruntime": None, "available_providers": [], "error": str(exc)}
    return {
        "onnxruntime": onnxruntime.__version__,
        "available_providers": list(onnxruntime.get_available_providers()),
        "cpu_threads": os.cpu_count(),
    }


def override_inputs(
    graph: dict[str, Any],
    opts: argparse.Namespace,
    results: Results,
    stand_ins: set[str],
    *,
    note: bool = True,
) -> dict[str, Any]:
    """The graph inputs changed so the real pack nodes run here (plan.input_overrides), noted
    (``note``: once per clip, not per chunk)."""
    info = onnx_runtime_info()
    if note:
        results.set("info", "onnx", info)
    provider = opts.onnx_provider
    if provider == "auto":
        provider = plan.onnx_provider_for(info["available_providers"], cpu=opts.cpu)
    # --tiny --cpu with the real SAM2: one short window (plan.input_overrides says why)
    short = opts.tiny and opts.cpu and "Sam2Segmentation" not in stand_ins
    changes = plan.input_overrides(
        graph,
        cpu=opts.cpu,
        onnx_provider=provider,
        tiny=opts.tiny,
        tiny_frames=opts.frames if short else None,
    )
    for change in changes if note else ():
        results.add(
            "notes",
            f"node {change.node} {graph[change.node]['class_type']}.{change.input}: {change.old!r} -> "
            f"{change.new!r} ({change.why})",
        )
    if provider != "CUDAExecutionProvider" and not opts.cpu and note:
        results.add(
            "notes",
            f"ONNX detectors ran on {provider} (onnxruntime {info.get('onnxruntime')}, "
            f"{info.get('cpu_threads')} CPU threads), not CUDA as the product asks: onnxruntime-gpu "
            "(~250 MB) cannot travel to the GPU machine (64 MiB), its image has the CPU build. Their time "
            "is a CPU time, not the product's.",
        )
    return plan.apply_overrides(graph, changes)


def make_pack_models(opts: argparse.Namespace, graph: dict[str, Any], stand_ins: set[str],
                     models_dir: Path, results: Results) -> None:  # fmt: skip
    """The files the real pack loaders read: ONNX detectors, SAM2 (bench/gpu/pack_models.py)."""
    import folder_paths

    from bench.gpu import pack_models

    for spec in plan.pack_model_files(graph):
        pack_class = "DownloadAndLoadSAM2Model" if spec.builder == "sam2" else "OnnxDetectionModelLoader"
        if pack_class in stand_ins:
            continue
        if spec.folder == "sam2":  # the pack reads models_dir/sam2 directly, not through folder paths
            folder_paths.models_dir = str(models_dir)
        else:
            folder_paths.add_model_folder_path(spec.folder, str(models_dir / spec.folder), is_default=True)
        record = pack_models.make(spec, models_dir, tiny=opts.tiny, reuse=not opts.fresh_models)
        folder_paths.filename_list_cache.pop(spec.folder, None)
        record["dir"] = str(models_dir)
        results.add("files", record)
        log(f"pack model file {spec.folder}/{spec.name}: {record}")
    real_onnx = "OnnxDetectionModelLoader" not in stand_ins
    if real_onnx and any(spec.builder == "yolo_onnx" for spec in plan.pack_model_files(graph)):
        results.add(
            "notes",
            "yolov10m.onnx: YOLOv8m's architecture (78.9 GFLOP) with YOLOv10's top-300 output and the "
            "real file's input/output signature, random weights: ~1.33x YOLOv10m's 59.1 GFLOP, its time "
            "an upper bound; vitpose-l-wholebody.onnx: ViTPose-L's architecture (123 GFLOP), random "
            "weights; SAM2: the pack's own model code and config, PyTorch's initialisation.",
        )


def make_models(opts: argparse.Namespace, graph: dict[str, Any], device: Any, results: Results,
                stand_ins: set[str]) -> None:  # fmt: skip
    import folder_paths

    from bench.gpu.weights import WeightFactory

    models_dir = opts.models or default_models_dir(opts.tiny)
    make_pack_models(opts, graph, stand_ins, models_dir, results)
    factory = WeightFactory(opts.comfy, device, tiny=opts.tiny)
    for spec in plan.model_files(graph):
        folder_paths.add_model_folder_path(spec.folder, str(models_dir / spec.folder), is_default=True)
        if opts.tiny and spec.builder == "umt5_fp8":
            continue  # replaced by a stand-in
        record = factory.make(spec, models_dir, reuse=not opts.fresh_models)
        record["dir"] = str(models_dir)
        results.add("files", record)
        log(f"model file {spec.folder}/{spec.name}: {record}")


def make_inputs(opts: argparse.Namespace) -> None:
    import folder_paths

    from bench.gpu.media import make_avatar, make_driving_video

    input_dir = Path(folder_paths.get_input_directory())
    make_avatar(input_dir / "bench_avatar.png", *((96, 128) if opts.tiny else (768, 1024)))
    make_driving_video(
        input_dir / "bench_driving.mp4", frames=opts.frames, width=opts.width, height=opts.height
    )


def make_slices(prompts: list[Any], opts: argparse.Namespace) -> None:
    """Each chunk's driving slice (its frames of the clip, reflect-padded at the end), as the
    worker cuts it; none when the clip is one prompt (it reads the whole video)."""
    import folder_paths

    from bench.gpu.media import make_driving_video
    from worker.graph.chunks import slice_indices

    input_dir = Path(folder_paths.get_input_directory())
    for prompt in prompts:
        if prompt.chunked:
            indices = slice_indices(prompt.chunk, opts.frames)
            make_driving_video(input_dir / prompt.driving, frames=len(indices), width=opts.width,
                               height=opts.height, indices=indices)  # fmt: skip


def encode_chunk(saved: Any, chunk: Any, opts: argparse.Namespace) -> stages.EncodeRun:
    """The worker's encode of the chunk's raw frames (bench/gpu/encode.py), timed on its own."""
    raw = saved.frames_file
    command = [
        str(opts.worker_python), str(REPO / "bench" / "gpu" / "encode.py"), str(raw),
        str(raw.with_suffix(".mp4")), "--width", str(saved.width), "--height", str(saved.height),
        "--frames", str(saved.frames), "--fps", "24",
    ]  # fmt: skip
    answer: dict[str, Any]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO)
        lines = done.stdout.strip().splitlines()
        answer = json.loads(lines[-1]) if lines else {}
        if done.returncode != 0 and "error" not in answer:
            answer = {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return stages.EncodeRun(
        chunk=chunk.index,
        chunks=chunk.count,
        frames=saved.frames,
        raw_bytes=raw.stat().st_size,
        seconds=answer.get("seconds"),
        error=answer.get("error"),
    )


def saved_output(saved: list[Any], encodes: list[stages.EncodeRun]) -> dict[str, Any]:
    """The clip's frames as WanWorkerSaveChunk wrote them, chunk by chunk."""
    return {
        "kind": "frames",
        "frames": sum(s.frames for s in saved),
        "width": saved[0].width,
        "height": saved[0].height,
        "chunks": len(saved),
        "files": [s.frames_file.name for s in saved if s.frames_file],
        "motion_files": [s.motion_file.name for s in saved if s.motion_file],
        "motion_frames": [s.motion_frames for s in saved],
        "encoded": sum(1 for e in encodes if e.seconds is not None),
    }


def output_frames(out_dir: Path) -> dict[str, Any]:
    """A workflow whose output node writes an MP4 (SaveVideo): the newest one's frames."""
    import av

    videos = sorted((out_dir / "output").rglob("*.mp4"), key=lambda p: p.stat().st_mtime)
    if not videos:
        return {"file": None}
    with av.open(str(videos[-1])) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"file": videos[-1].name, "frames": frames, "width": stream.width, "height": stream.height,
                "fps": float(stream.average_rate or 0)}  # fmt: skip


def loaded_models() -> list[str]:
    """The model classes ComfyUI detected and loaded (WAN22_Animate for the DiT)."""
    import comfy.model_management as mm

    return sorted({type(getattr(m.model, "model", m.model)).__name__ for m in mm.current_loaded_models})


def first_window_sampler(graph: dict[str, Any]) -> str:
    windows = stages.windows_of(graph)
    samplers = [nid for nid, node in graph.items() if node["class_type"] == stages.SAMPLER_CLASS]
    return min(samplers, key=lambda nid: windows.get(nid, 10**6))


def preprocessing_subgraph(graph: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing nodes (stages.PREPROCESS_STAGES) and every node they depend on."""
    targets = [
        nid for nid, node in graph.items() if stages.stage_of(node["class_type"]) in stages.PREPROCESS_STAGES
    ]
    keep: set[str] = set()
    for nid in targets:
        keep |= upstream(graph, nid)
    return {nid: graph[nid] for nid in graph if nid in keep}


def run_clip(
    runtime: Any, prompts: list[Any], workflow: Any, opts: argparse.Namespace, results: Results
) -> dict[str, Any]:
    """The clip's prompts in turn, as the worker submits them; per chunk, the worker's encode of
    its frames, timed apart (it overlaps the next chunk's prompt in a job)."""
    import folder_paths

    from bench.gpu import chunked

    input_dir = Path(folder_paths.get_input_directory())
    output_dir = Path(folder_paths.get_output_directory())
    windows: dict[str, int] = {}
    for prompt in prompts:
        first = max(prompt.chunk.first_window, 1)
        windows.update(stages.chunk_windows(prompt.graph, chunk=prompt.chunk.index, first_window=first))
    n_windows = max(windows.values(), default=0)
    nodes_total = sum(len(prompt.graph) for prompt in prompts)
    log(f"clip: {opts.frames} frames, {n_windows} windows, {len(prompts)} prompt(s), {nodes_total} nodes")
    progress: list[dict[str, Any]] = []

    def on_node(run: stages.NodeRun) -> None:
        progress.append({"chunk": run.chunk, "node": run.node, "class_type": run.class_type,
                         "s": round(run.seconds, 3), "stand_in": run.stand_in})  # fmt: skip
        results.set("clip", "progress", progress)
        log(f"node {run.key} {run.class_type}: {run.seconds:.2f} s{' (stand-in)' if run.stand_in else ''}")

    runs: list[stages.NodeRun] = []
    walls: list[float] = []
    chunk_rows: list[dict[str, Any]] = []
    saved_chunks: list[Any] = []
    encodes: list[stages.EncodeRun] = []
    missing: list[str] = []
    previous = None
    runtime.server.on_node = on_node
    try:
        for prompt in prompts:
            if chunked.reads_motion(prompt):
                chunked.hand_over(previous, prompt.motion, input_dir)
            runtime.server.chunk = prompt.chunk.index
            # A graph without an output node (--preprocess-only) runs its sinks, unvalidated.
            sinks = None
            if opts.preprocess_only:
                used = {str(v[0]) for n in prompt.graph.values() for v in n["inputs"].values() if is_link(v)}
                sinks = [nid for nid in prompt.graph if nid not in used]
            chunk_runs, wall = runtime.run(prompt.graph, outputs=sinks)
            cached = list(runtime.server.cached)
            runs += chunk_runs
            walls.append(wall)
            missing += [
                stages.window_key(nid, prompt.chunk.index)
                for nid in stages.not_executed(prompt.graph, chunk_runs, cached)
            ]
            saved = chunked.saved_chunk(runtime.ui_outputs(), workflow.output_node, output_dir)
            row = {**prompt.chunk.as_dict(), "wall_s": round(wall, 2), "nodes": len(prompt.graph),
                   "executed": len(chunk_runs), "cached": len(cached)}  # fmt: skip
            if saved is not None and saved.frames_file is not None:
                saved_chunks.append(saved)
                encode = encode_chunk(saved, prompt.chunk, opts)
                encodes.append(encode)
                row.update(saved_frames=saved.frames, motion_frames=saved.motion_frames,
                           encode=asdict(encode))  # fmt: skip
                how = (
                    f"{encode.seconds:.2f} s"
                    if encode.seconds is not None
                    else f"not measured ({encode.error})"
                )
                log(f"chunk {prompt.chunk.index}/{prompt.chunk.count}: prompt {wall:.1f} s, {saved.frames} "
                    f"frames; the worker's H.264 encode of them (CPU, apart): {how}")  # fmt: skip
            chunk_rows.append(row)
            results.set("clip", "chunks", chunk_rows)
            previous = saved
    finally:
        runtime.server.on_node = None
        runtime.server.chunk = 1
    results.set("info", "loaded_models", loaded_models())
    rows = stages.aggregate(runs, windows)
    steps = stages.sampler_steps(runs)
    samplers = [r for r in runs if r.class_type == stages.SAMPLER_CLASS]
    later = [r.seconds for r in samplers[1:]]
    upload = samplers[0].seconds - statistics.median(later) if later else None
    loads = sum(row.total_s for row in rows if row.stage.startswith("load:"))
    wall = sum(walls)
    critical = stages.critical_path_s(walls, encodes) if len(encodes) == len(prompts) else None
    clip = {
        "frames": opts.frames,
        "windows": n_windows,
        "prompts": len(prompts),
        "steps_per_window": len(samplers[0].steps) if samplers else 0,
        "gpu_seconds": round(wall, 2),
        "gpu_seconds_warm_worker_derived": round(wall - loads - (upload or 0.0), 2),
        "first_sampler_extra_s": round(upload, 2) if upload is not None else None,
        "median_step_s": round(statistics.median(steps), 3) if steps else None,
        "prompt_seconds": [round(w, 2) for w in walls],
        "chunks": chunk_rows,
        "encodes": [asdict(e) for e in encodes],
        "job_seconds_with_encodes_derived": round(critical, 2) if critical is not None else None,
        "stages": [asdict(row) for row in rows],
        "runs": [asdict(run) for run in runs],
        "output": saved_output(saved_chunks, encodes) if saved_chunks else output_frames(opts.work),
        "not_executed": missing,
        "stand_in_nodes": sorted({r.key for r in runs if r.stand_in}, key=lambda n: (len(n), n)),
        "nodes_total": nodes_total,
    }
    results.set("clip", "result", clip)
    table = stages.render_table(rows, windows=n_windows)
    log("per stage:\n" + table)
    if encodes:
        log("per chunk:\n" + stages.render_encodes(encodes, walls[: len(encodes)]))
    log("every node run:\n" + stages.render_nodes(runs))
    return clip


def compare_backends(runtime: Any, node: Any, graph: dict[str, Any], opts: argparse.Namespace,
                     results: Results, clip: dict[str, Any] | None,
                     ) -> list[stages.BackendResult]:  # fmt: skip
    """Window 1's sampler again, for --compare-steps steps, with each backend (inputs from the cache)."""
    sampler = first_window_sampler(graph)
    sub = {nid: json.loads(json.dumps(graph[nid])) for nid in upstream(graph, sampler)}
    sub[sampler]["inputs"]["steps"] = opts.compare_steps
    compared: list[stages.BackendResult] = []
    clip_backend = node.STATE.get("backend")
    if clip and clip.get("median_step_s"):
        compared.append(
            stages.BackendResult(
                str(clip_backend),
                clip["median_step_s"],
                len(stages.sampler_steps([stages.NodeRun(**r) for r in clip["runs"]])),
                measured_clip=True,
            )
        )
    else:  # load the models and compute window 1's inputs once, untimed
        log("compare: warm-up (loads models, window 1 conditioning)")
        sub[sampler]["inputs"]["steps"] = 1
        runtime.run(sub, outputs=[sampler])
        sub[sampler]["inputs"]["steps"] = opts.compare_steps
    requested = [b.strip() for b in opts.backends.split(",") if b.strip()]
    for index, backend in enumerate(requested, start=1):
        if backend == clip_backend and clip:
            continue
        if time.perf_counter() - T0 > opts.budget_s:
            results.add("notes", f"backend {backend}: skipped, past --budget-s")
            continue
        with attention_backend(node, backend) as state:
            if state is None:
                results.add("notes", f"backend {backend}: not measured ({attention_backend.why_not})")
                continue
            sub[sampler]["inputs"]["seed"] = 1000 + index  # a new seed: only the sampler re-runs
            runs, _ = runtime.run(sub, outputs=[sampler])
            sampler_runs = [r for r in runs if r.class_type == stages.SAMPLER_CLASS]
            steps = [s for r in sampler_runs for s in r.steps]
            timed = steps[1:] if len(steps) > 2 else steps
            peaks = [r.peak_allocated_gib for r in sampler_runs if r.peak_allocated_gib is not None]
            result = stages.BackendResult(
                state["backend"],
                round(statistics.median(timed), 3),
                len(timed),
                False,
                peak_allocated_gib=max(peaks) if peaks else None,
                probe=probe_text(state, state["backend"]),
            )
            log(f"compare {backend}: {result} ({state['reason']})")
            results.add("backends", {**asdict(result), "state": state, "all_steps": steps})
            compared.append(result)
    return compared


def probe_text(state: dict[str, Any], backend: str) -> str:
    """The node's probe of this backend (numerics vs math attention), as a table cell."""
    for probe in state.get("probes") or []:
        if probe.get("backend") == backend and probe.get("max_abs_err") is not None:
            return f"max abs err {probe['max_abs_err']:.4f}, min cos {probe['min_cosine']:.6f}"
    return "–"


class attention_backend:
    """Applies one backend through the custom node (sage by binding ComfyUI's sage function into the
    Wan model modules, which is what --use-sage-attention does at start); restores afterwards."""

    why_not = ""  # why the last backend asked for could not be applied

    def __init__(self, node: Any, backend: str) -> None:
        self.node, self.backend = node, backend
        self.saved_state = dict(node.STATE)
        self.rebound: list[tuple[Any, Any]] = []

    def __enter__(self) -> dict[str, Any] | None:
        if self.backend != "sage":
            state = self.node.setup({"ATTENTION_BACKEND": self.backend})
            if state["backend"] != self.backend:
                log(f"compare {self.backend}: unavailable ({state['reason']})")
                attention_backend.why_not = state["reason"]
                return None
            return state
        import comfy.ldm.modules.attention as attention
        import comfy.ldm.wan.model
        import comfy.ldm.wan.model_animate

        if not getattr(attention, "SAGE_ATTENTION_IS_AVAILABLE", False):
            log("compare sage: unavailable (sageattention does not import)")
            attention_backend.why_not = "sageattention does not import"
            return None
        problem = sage_kernel_problem()
        if problem:  # ComfyUI would log the error and silently run PyTorch attention instead
            log(f"compare sage: its kernel fails here ({problem})")
            attention_backend.why_not = f"its kernel fails here ({problem})"
            return None
        self.node.setup({"ATTENTION_BACKEND": "auto"})
        for module in (comfy.ldm.wan.model, comfy.ldm.wan.model_animate):
            self.rebound.append((module, module.optimized_attention))
            module.optimized_attention = attention.attention_sage
        import sageattention

        version = getattr(sageattention, "__version__", "?")
        return {
            "requested": "sage",
            "backend": "sage",
            "reason": f"sageattention {version}, bound as at start",
        }

    def __exit__(self, *exc: Any) -> None:
        for module, function in self.rebound:
            module.optimized_attention = function
        self.node.setup({"ATTENTION_BACKEND": self.saved_state.get("requested", "auto")})


def sage_kernel_problem() -> str | None:
    """One small sage call at Wan's head size on the GPU; the error text if it fails."""
    import torch
    from sageattention import sageattn

    try:
        q = torch.randn((1, 40, 1024, 128), device="cuda", dtype=torch.float16)
        sageattn(q, q, q, tensor_layout="HND", is_causal=False)
        torch.cuda.synchronize()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    results = Results(opts.out)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bench.gpu.runtime import ComfyRuntime, set_env_defaults

    set_env_defaults()
    runtime = ComfyRuntime(opts.comfy, cpu=opts.cpu, work_dir=opts.work)
    runtime.start()
    import comfy.model_management as mm
    import torch

    node = runtime.load_custom_node(ATTENTION_NODE)
    runtime.load_custom_node(GRAPH_NODES)
    if opts.packs:
        opts.custom_nodes += [opts.packs / name for name in plan.PACK_FOLDERS]
    for folder in opts.custom_nodes:
        runtime.load_custom_node(folder)
    prompts, workflow = build_prompts(opts)
    graph = prompts[0].graph  # the first chunk's: every class and model file of the clip
    results.set("info", "date", datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    results.set("info", "commit", repo_commit())
    results.set("info", "device", torch.cuda.get_device_name(runtime.device) if runtime.cuda else "cpu")
    results.set("info", "torch", torch.__version__)
    results.set("info", "comfyui", __import__("comfyui_version").__version__)
    results.set("info", "workflow", f"{workflow.path.name} sha256 {workflow.sha256[:12]}")
    results.set("info", "attention", dict(node.STATE))
    results.set("info", "opts", {k: str(v) for k, v in vars(opts).items()})
    log(
        f"ComfyUI {results.data['info']['comfyui']} on {results.data['info']['device']}, "
        f"attention {node.STATE}"
    )
    if opts.steps:
        results.add(
            "notes",
            f"--steps {opts.steps}: the sampler ran {opts.steps} step(s) per window (WAN_STEPS); sampler and "
            "clip totals are this run's, not the pinned recipe's",
        )
    if len(prompts) > 1:
        results.add(
            "notes",
            f"{len(prompts)} prompts (chunks of {[len(p.chunk.windows) for p in prompts]} windows, as the "
            "worker submits them): each continuing chunk reads the previous chunk's motion frames; model "
            "loaders and text encodes of later chunks come from ComfyUI's cache (the worker's ComfyUI keeps "
            "it between prompts too)",
        )
    runtime.server.stand_ins = register_stand_ins(graph, opts.tiny, results)
    prompts = [
        replace(p, graph=override_inputs(p.graph, opts, results, runtime.server.stand_ins, note=i == 0))
        for i, p in enumerate(prompts)
    ]
    graph = prompts[0].graph
    if opts.preprocess_only:
        prompts = [replace(p, graph=preprocessing_subgraph(p.graph)) for p in prompts]
        graph = prompts[0].graph
        results.add("notes", f"--preprocess-only: {len(graph)} nodes (preprocessing and what it needs)")
    make_inputs(opts)
    make_slices(prompts, opts)
    device = mm.get_torch_device() if runtime.cuda else torch.device("cpu")
    make_models(opts, graph, device, results, runtime.server.stand_ins)

    clip = run_clip(runtime, prompts, workflow, opts, results) if opts.mode in ("clip", "both") else None
    compared: list[stages.BackendResult] = []
    if opts.mode in ("compare", "both"):
        compared = compare_backends(runtime, node, graph, opts, results, clip)
    report = [f"# {results.data['info']['device']} · {opts.width}x{opts.height} · {opts.frames} frames · "
              f"{len(prompts)} prompt(s)"]  # fmt: skip
    if clip:
        rows = [stages.StageRow(**row) for row in clip["stages"]]
        report += [stages.render_table(rows, windows=clip["windows"]), "",
                   f"GPU seconds per clip [M]: {clip['gpu_seconds']:.1f} (the prompts; warm worker [D]: "
                   f"{clip['gpu_seconds_warm_worker_derived']:.1f}); output: {clip['output']}"]  # fmt: skip
        encodes = [stages.EncodeRun(**e) for e in clip["encodes"]]
        if encodes:
            job = clip["job_seconds_with_encodes_derived"]
            report += [
                "",
                "Per chunk: the prompt, and the worker's H.264 encode of its frames (worker.chunk_media."
                "encode_frames, CPU, timed apart; in a job it runs while ComfyUI runs the next chunk):",
                "",
                stages.render_encodes(encodes, clip["prompt_seconds"][: len(encodes)]),
                "",
                f"Job seconds to the last chunk's MP4 [D]: {'–' if job is None else f'{job:.1f}'} (the "
                "prompts + each encode past the next prompt + the last chunk's encode)",
            ]
        runs = [stages.NodeRun(**r) for r in clip["runs"]]
        missing = clip["not_executed"]
        cached = sum(row["cached"] for row in clip["chunks"])
        report += ["", f"Nodes executed: {len(runs)} of {clip['nodes_total']}"
                   f"{f' ({cached} from the cache of an earlier prompt)' if cached else ''}; "
                   f"not executed: {missing or 'none'}; "
                   f"stand-ins: {clip['stand_in_nodes'] or 'none'}", "",
                   "Preprocessing, per node:", "",
                   stages.render_nodes(runs, only_stages=stages.PREPROCESS_STAGES), "",
                   "Every node, in execution order:", "", stages.render_nodes(runs)]  # fmt: skip
    if compared:
        steps_per_window = clip["steps_per_window"] if clip else opts.compare_steps
        totals = {}
        if clip:
            totals = stages.clip_seconds_by_backend(
                clip["gpu_seconds"],
                compared[0].backend,
                compared[0].median_step_s,
                clip["steps_per_window"] * clip["windows"],
                compared,
            )
        report += [
            "",
            stages.render_backends(compared, totals, steps_per_window, clip["windows"] if clip else 1),
        ]
    report += ["", *results.data["notes"]]
    text = "\n".join(report)
    (opts.out / "table.md").write_text(text + "\n")
    print("\n" + text, flush=True)
    log("done")
    if clip and clip["not_executed"]:
        log(f"FAILED: nodes not executed: {clip['not_executed']}")
        return 3
    return 0


def exit_without_teardown(code: int) -> None:
    """Exit with ``code`` once the output is flushed, skipping interpreter teardown: ComfyUI's
    native extensions can crash in it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(main())
