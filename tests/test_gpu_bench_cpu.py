"""The GPU benchmark (bench/gpu_bench.py) kept working without a GPU.

Always (CI): its own logic on the real pinned graph for a 10-second clip, built by the worker's
own Workflow code: which window and stage each node belongs to, the model files it must make,
the pack classes it stands in for, and the per-stage/per-backend arithmetic on a stand-in
execution of that graph.

With a ComfyUI checkout (``WAN_BENCH_COMFYUI=/path/to/ComfyUI``, and ``WAN_BENCH_PYTHON`` naming
a Python with torch and ComfyUI's requirements): the whole benchmark at toy size on the CPU,
through ComfyUI's own executor. CI cannot run that part: ComfyUI is not on PyPI (no package of
the pinned 0.33.0 exists there) and CI reaches no GitHub, so it is skipped with that reason.
"""

from __future__ import annotations

import json
import subprocess
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import pytest

from bench.gpu import plan, stages
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.workflow import Workflow, WorkflowParams

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / "workflows" / "wan22_animate_replace.json"
PACK_CLASSES = {
    "ImageResizeKJv2",
    "OnnxDetectionModelLoader",
    "PoseAndFaceDetection",
    "DrawViTPose",
    "DownloadAndLoadSAM2Model",
    "Sam2Segmentation",
    "GrowMaskWithBlur",
    "BlockifyMask",
    "DrawMaskOnImage",
}


def pinned_graph(frames: int) -> dict[str, Any]:
    workflow = Workflow.load(PINNED, env={})
    params = WorkflowParams(
        image="bench_avatar.png",
        driving_video="bench_driving.mp4",
        frames=frames,
        filename_prefix="gpu-bench/clip",
        seed=42,
        prompt="a person",
        negative_prompt="blurry",
    )
    return workflow.build(params)


@pytest.fixture(scope="module")
def clip_graph() -> dict[str, Any]:
    return pinned_graph(240)


def by_class(graph: dict[str, Any], class_type: str) -> list[str]:
    return [nid for nid, node in graph.items() if node["class_type"] == class_type]


def test_each_window_gets_its_own_conditioning_sampler_and_decode(clip_graph) -> None:
    windows = stages.windows_of(clip_graph)
    for class_type in ("WanAnimateToVideoOfficialMask", "KSampler", "VAEDecode", "TrimVideoLatent"):
        assert sorted(windows[nid] for nid in by_class(clip_graph, class_type)) == [1, 2, 3, 4], class_type
    for class_type in ("SaveVideo", "CreateVideo", "BatchImagesNode", "UNETLoader", "PoseAndFaceDetection"):
        assert all(nid not in windows for nid in by_class(clip_graph, class_type)), class_type
    # The final cut to N frames joins every window: clip-level; each window's own trim is not.
    trims = by_class(clip_graph, "ImageFromBatch")
    assert sorted(windows[nid] for nid in trims if nid in windows) == [2, 3, 4]


def test_a_single_window_clip_has_one_window(tmp_path) -> None:
    graph = pinned_graph(77)
    windows = stages.windows_of(graph)
    assert sorted(windows[nid] for nid in by_class(graph, "KSampler")) == [1]


def test_every_class_of_the_pinned_graph_has_a_stage(clip_graph) -> None:
    unnamed = {
        node["class_type"]
        for node in clip_graph.values()
        if stages.stage_of(node["class_type"]).startswith("other")
    }
    assert unnamed == set()
    assert set(stages.STAGE_OF_CLASS.values()) == set(stages.STAGE_ORDER)


def test_model_files_are_the_manifests_with_shape_true_builders(clip_graph) -> None:
    files = {(f.folder, f.name): f for f in plan.model_files(clip_graph)}
    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    core_folders = {"diffusion_models", "loras", "text_encoders", "vae", "clip_vision"}
    expected = {
        (entry["folder"], entry["filename"])
        for entry in manifest["files"]
        if entry["folder"] in core_folders and entry.get("variant", "fp8") == "fp8"
    }
    assert set(files) == expected
    builders = {name: f for (_, name), f in files.items()}
    assert builders["Wan2_2-Animate-14B_fp8_scaled_e4m3fn_KJ_v2.safetensors"].builder == "dit_fp8"
    lightx2v = builders["lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"]
    assert (lightx2v.lora_rank, lightx2v.lora_dtype) == (64, "bf16")
    relight = builders["wan2.2_animate_14B_relight_lora_bf16.safetensors"]
    assert (relight.lora_rank, relight.lora_dtype) == (128, "bf16")
    assert plan.builder_for("diffusion_models", "wan2.2_animate_14B_bf16.safetensors").builder == "dit_bf16"
    with pytest.raises(ValueError, match="no shape-true builder"):
        plan.builder_for("detection", "yolov10m.onnx")


def test_pack_classes_are_the_stand_ins_and_each_says_why(clip_graph) -> None:
    core = {node["class_type"] for node in clip_graph.values()} - PACK_CLASSES
    assert set(plan.stand_ins_needed(clip_graph, core)) == PACK_CLASSES
    assert set(plan.WHY_NOT_MEASURED) == PACK_CLASSES
    assert plan.stand_ins_needed(clip_graph, core | PACK_CLASSES) == []
    assert sorted(plan.tiny_text_encoder(clip_graph)) == sorted(
        by_class(clip_graph, "CLIPLoader") + by_class(clip_graph, "CLIPTextEncode")
    )


# ------------------------------------------------------------------ the arithmetic, on a stand-in run

SECONDS = {
    "KSampler": 72.0,
    "WanAnimateToVideoOfficialMask": 7.0,
    "VAEDecode": 4.5,
    "SaveVideo": 16.0,
    "UNETLoader": 0.5,
}


def stand_in_execution(graph: dict[str, Any], step_s: float = 12.0) -> list[stages.NodeRun]:
    """Every node once, in dependency order, with fixed durations; window 1's first step pays an upload."""
    order = TopologicalSorter(
        {nid: {str(v[0]) for v in node["inputs"].values() if isinstance(v, list) and len(v) == 2}
         for nid, node in graph.items()}
    ).static_order()  # fmt: skip
    now, runs, first_sampler = 0.0, [], True
    for nid in order:
        class_type = graph[nid]["class_type"]
        steps: list[float] = []
        seconds = SECONDS.get(class_type, 0.1)
        if class_type == "KSampler":
            steps = [step_s + (3.0 if first_sampler else 0.0)] + [step_s] * 5
            seconds, first_sampler = sum(steps), False
        idle = seconds if class_type == "SaveVideo" else 0.0
        peak = 8.0 if steps else 1.0
        stand_in = class_type in PACK_CLASSES
        runs.append(stages.NodeRun(nid, class_type, now, now + seconds, peak_allocated_gib=peak,
                                   gpu_idle_s=idle, steps=steps, stand_in=stand_in))  # fmt: skip
        now += seconds
    return runs


def test_stage_rows_from_a_stand_in_run(clip_graph) -> None:
    runs = stand_in_execution(clip_graph)
    rows = {row.stage: row for row in stages.aggregate(runs, stages.windows_of(clip_graph))}
    sampler = rows["window: sampler (KSampler)"]
    assert (sampler.nodes, sampler.windows, sampler.total_s) == (4, 4, 4 * 72.0 + 3.0)
    assert sampler.median_window_s == 72.0
    assert sampler.peak_allocated_gib == 8.0
    conditioning = rows["window: conditioning (WanAnimateToVideo, VAE encodes)"]
    assert (conditioning.windows, conditioning.median_window_s) == (4, 7.0)
    decode = rows["window: VAE decode + trims"]
    assert decode.windows == 4 and decode.nodes == 4 + 4 + 3  # decode + latent trim per window, 3 frame trims
    output = rows["output: join frames + encode MP4"]
    assert output.nodes == 4  # join, the final cut to N frames, CreateVideo, SaveVideo
    assert output.median_window_s is None and output.gpu_idle_s == 16.0
    assert rows["preprocess: pose + face detection (ONNX)"].stand_in
    assert not sampler.stand_in
    assert [row.stage for row in rows.values()] == [s for s in stages.STAGE_ORDER if s in rows]
    assert sum(row.total_s for row in rows.values()) == pytest.approx(runs[-1].end)
    assert stages.sampler_steps(runs) == [12.0] * 23  # window 1's first step (upload, LoRA merge) left out

    table = stages.render_table(list(rows.values()), windows=4)
    assert "| window: sampler (KSampler) | 4 | 72.0 | 291.0 | 8.0 / – | 0.0 |  |" in table
    assert "stand-in, not measured" in table


def test_backend_totals_reprice_only_the_sampler_steps() -> None:
    measured = stages.BackendResult("cudnn", 12.0, 23, measured_clip=True)
    flash = stages.BackendResult("flash", 17.0, 2, measured_clip=False)
    sage = stages.BackendResult("sage", 14.0, 2, measured_clip=False)
    totals = stages.clip_seconds_by_backend(370.0, "cudnn", 12.0, 24, [measured, flash, sage])
    assert totals == {"cudnn": 370.0, "flash": 370.0 + 24 * 5.0, "sage": 370.0 + 24 * 2.0}
    table = stages.render_backends([flash, measured, sage], totals, steps_per_window=6, windows=4)
    lines = table.splitlines()[2:]
    assert [line.split("|")[1].strip() for line in lines] == ["cudnn", "sage", "flash"]
    assert "| +42 % |" in lines[2] and "490.0 [D]" in lines[2]
    assert "whole clip measured (4 windows)" in lines[0]


# ------------------------------------------------------------------ with ComfyUI (never in CI)


@needs_comfy
@pytest.mark.timeout(900)
def test_whole_benchmark_at_toy_size_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "gpu_bench.py"), "--comfy", str(COMFY), "--tiny", "--cpu",
        "--frames", "20", "--steps", "1", "--backends", "cudnn", "--out", str(out),
        "--work", str(tmp_path / "work"), "--models", str(tmp_path / "models"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=880, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    clip = results["clip"]["result"]
    assert clip["windows"] == 1
    assert clip["output"]["frames"] == 20 and (clip["output"]["width"], clip["output"]["height"]) == (64, 64)
    stages_seen = {row["stage"] for row in clip["stages"]}
    assert "window: sampler (KSampler)" in stages_seen
    samplers = [run for run in clip["runs"] if run["class_type"] == "KSampler"]
    assert [len(run["steps"]) for run in samplers] == [1]
    assert "| window: sampler (KSampler) | 1 |" in (out / "table.md").read_text()
    assert results["info"]["attention"]["device"] == "cpu"
    assert "WAN22_Animate" in results["info"]["loaded_models"]  # ComfyUI detected the toy DiT as Wan Animate
