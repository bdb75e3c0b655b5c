"""The GPU benchmark (bench/gpu_bench.py) kept working without a GPU.

Always (CI): its own logic on the real pinned graph for a 10-second clip, built by the worker's
own Workflow code: which window and stage each node belongs to, the model files it must make,
the pack classes it stands in for, and the per-stage/per-backend arithmetic on a stand-in
execution of that graph; for a longer clip, the prompts the worker submits per chunk
(bench/gpu/chunked.py), their windows numbered across the clip, and the worker's encode of a
chunk's raw frames (bench/gpu/encode.py), which left the prompt with WanWorkerSaveChunk.

With a ComfyUI checkout (``WAN_BENCH_COMFYUI=/path/to/ComfyUI``, and ``WAN_BENCH_PYTHON`` naming
a Python with torch and ComfyUI's requirements): the whole benchmark at toy size on the CPU,
through ComfyUI's own executor. CI cannot run that part: ComfyUI is not on PyPI (no package of
the pinned 0.33.0 exists there) and CI reaches no GitHub, so it is skipped with that reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any

import pytest

from bench.gpu import chunked, plan, stages
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.graph.workflow import Workflow, WorkflowParams

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


def pinned_params(frames: int) -> WorkflowParams:
    return WorkflowParams(
        image="bench_avatar.png",
        driving_video="bench_driving.mp4",
        frames=frames,
        filename_prefix="gpu-bench/clip",
        seed=42,
        prompt="a person",
        negative_prompt="blurry",
    )


def pinned_graph(frames: int) -> dict[str, Any]:
    return Workflow.load(PINNED).build(pinned_params(frames))


@pytest.fixture(scope="module")
def clip_graph() -> dict[str, Any]:
    return pinned_graph(240)


def by_class(graph: dict[str, Any], class_type: str) -> list[str]:
    return [nid for nid, node in graph.items() if node["class_type"] == class_type]


def test_each_window_gets_its_own_conditioning_sampler_and_decode(clip_graph) -> None:
    windows = stages.windows_of(clip_graph)
    for class_type in ("WanAnimateToVideoOfficialMask", "KSampler", "VAEDecode", "TrimVideoLatent"):
        assert sorted(windows[nid] for nid in by_class(clip_graph, class_type)) == [1, 2, 3, 4], class_type
    for class_type in ("WanWorkerSaveChunk", "BatchImagesNode", "UNETLoader", "PoseAndFaceDetection"):
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
    "WanWorkerSaveChunk": 0.4,  # raw frames to a file: no encode in the prompt any more
    "UNETLoader": 0.5,
}


def stand_in_execution(
    graph: dict[str, Any], step_s: float = 12.0, *, chunk: int = 1, start: float = 0.0
) -> list[stages.NodeRun]:
    """Every node once, in dependency order, with fixed durations; window 1's first step pays an upload."""
    order = TopologicalSorter(
        {nid: {str(v[0]) for v in node["inputs"].values() if isinstance(v, list) and len(v) == 2}
         for nid, node in graph.items()}
    ).static_order()  # fmt: skip
    now, runs, first_sampler = start, [], chunk == 1
    for nid in order:
        class_type = graph[nid]["class_type"]
        steps: list[float] = []
        seconds = SECONDS.get(class_type, 0.1)
        if class_type == "KSampler":
            steps = [step_s + (3.0 if first_sampler else 0.0)] + [step_s] * 5
            seconds, first_sampler = sum(steps), False
        idle = seconds if class_type == "WanWorkerSaveChunk" else 0.0
        peak = 8.0 if steps else 1.0
        stand_in = class_type in PACK_CLASSES
        runs.append(stages.NodeRun(nid, class_type, now, now + seconds, peak_allocated_gib=peak,
                                   gpu_idle_s=idle, steps=steps, stand_in=stand_in, chunk=chunk))  # fmt: skip
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
    join = rows["output: join windows' frames"]
    assert join.nodes == 2 and join.median_window_s is None  # the join, the final cut to N frames
    save = rows["output: save raw frames (+ motion frames)"]
    assert (save.nodes, save.gpu_idle_s) == (1, 0.4) and save.total_s == pytest.approx(0.4)
    assert "output: encode MP4 in ComfyUI (SaveVideo)" not in rows  # the worker encodes now
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


def test_backend_table_shows_each_backends_peak_memory_and_probe() -> None:
    fa4 = stages.BackendResult(
        "fa4", 9.0, 2, False, peak_allocated_gib=8.4, probe="max abs err 0.0012, min cos 1.0"
    )
    cudnn = stages.BackendResult("cudnn", 12.0, 2, False)
    lines = stages.render_backends([cudnn, fa4], {}, steps_per_window=6, windows=1).splitlines()
    assert lines[0].endswith("| peak GiB allocated | probe vs math attention |")
    assert lines[2].startswith("| fa4 | 9.00 |") and lines[2].endswith(
        "| 8.4 | max abs err 0.0012, min cos 1.0 |"
    )
    assert lines[3].endswith("| – | – |")


# ------------------------------------------------------------------ chunks: the worker's prompts


def bench_prompts(frames: int, chunk_windows: int | None = None) -> list[chunked.ChunkPrompt]:
    workflow = Workflow.load(PINNED)
    return chunked.chunk_prompts(workflow, pinned_params(frames), chunk_windows=chunk_windows)


def test_a_ten_second_clip_is_one_prompt_the_whole_clips_graph() -> None:
    (prompt,) = bench_prompts(240)
    assert not prompt.chunked and prompt.motion is None
    assert prompt.driving == "bench_driving.mp4"
    assert prompt.graph == pinned_graph(240)
    assert not chunked.reads_motion(prompt)
    assert bench_prompts(600, chunk_windows=0)[0].graph == pinned_graph(600)  # CHUNK_WINDOWS=0


def test_a_long_clip_is_one_prompt_per_chunk_continuing_from_the_one_before() -> None:
    prompts = bench_prompts(600)  # 9 windows, 4 a prompt (the pinned windows.chunk_windows)
    assert [len(p.chunk.windows) for p in prompts] == [4, 4, 1]
    assert [p.chunk.frames for p in prompts] == [293, 288, 19]
    assert [p.driving for p in prompts] == [f"gpu-bench/driving-000{i}.mp4" for i in (1, 2, 3)]
    assert [p.motion for p in prompts] == [None, "gpu-bench/motion-0002.safetensors",
                                           "gpu-bench/motion-0003.safetensors"]  # fmt: skip
    assert [chunked.reads_motion(p) for p in prompts] == [False, True, True]
    for prompt in prompts:
        graph = prompt.graph
        assert graph["5"]["inputs"]["file"] == prompt.driving
        assert graph["51"]["inputs"]["length"] == prompt.chunk.frames
        assert ("motion" in graph["53"]["inputs"]) == (not prompt.chunk.last)
        loads = by_class(graph, "WanWorkerLoadMotionFrames")
        assert [graph[n]["inputs"]["file"] for n in loads] == ([prompt.motion] if prompt.motion else [])
    windows: dict[str, int] = {}
    for prompt in prompts:
        windows.update(stages.chunk_windows(prompt.graph, chunk=prompt.chunk.index,
                                            first_window=prompt.chunk.first_window))  # fmt: skip
    sampler_windows = sorted(
        windows[stages.window_key(nid, p.chunk.index)]
        for p in prompts
        for nid in by_class(p.graph, "KSampler")
    )
    assert sampler_windows == list(range(1, 10))
    # A stand-in execution of the three prompts: one sampler row over the clip's 9 windows.
    runs, now = [], 0.0
    for prompt in prompts:
        chunk_runs = stand_in_execution(prompt.graph, chunk=prompt.chunk.index, start=now)
        runs += chunk_runs
        now = chunk_runs[-1].end
    rows = {row.stage: row for row in stages.aggregate(runs, windows)}
    sampler = rows["window: sampler (KSampler)"]
    assert (sampler.nodes, sampler.windows, sampler.median_window_s) == (9, 9, 72.0)
    assert rows["output: save raw frames (+ motion frames)"].nodes == 3
    assert "| 2/41 | KSampler |" in stages.render_nodes(runs)


def test_nodes_from_the_cache_of_an_earlier_prompt_are_not_missing() -> None:
    prompts = bench_prompts(600)
    graph = prompts[1].graph
    loaders = by_class(graph, "UNETLoader") + by_class(graph, "VAELoader")
    runs = [r for r in stand_in_execution(graph, chunk=2) if r.node not in loaders]
    assert stages.not_executed(graph, runs) == sorted(loaders, key=lambda n: (len(n), n))
    assert stages.not_executed(graph, runs, cached=loaders) == []


def test_a_saved_chunk_is_read_from_the_ui_output_and_handed_to_the_next(tmp_path) -> None:
    output = tmp_path / "output"
    (output / "gpu-bench").mkdir(parents=True)
    (output / "gpu-bench" / "clip_00001_.rgb").write_bytes(b"\0" * 64 * 64 * 3 * 2)
    (output / "gpu-bench" / "clip_00001_.motion.safetensors").write_bytes(b"motion")
    ui = {"53": {"images": [{"filename": "clip_00001_.rgb", "subfolder": "gpu-bench", "type": "output"},
                            {"filename": "clip_00001_.motion.safetensors", "subfolder": "gpu-bench",
                             "type": "output"}],
                 "wan_chunk": [{"width": 64, "height": 64, "frames": 2, "motion_frames": 5}]}}  # fmt: skip
    saved = chunked.saved_chunk(ui, "53", output)
    assert saved is not None
    assert saved.frames_file == output / "gpu-bench" / "clip_00001_.rgb"
    assert (saved.frames, saved.width, saved.height, saved.motion_frames) == (2, 64, 64, 5)
    assert chunked.saved_chunk({"53": {"images": []}}, "53", output) is None  # e.g. SaveVideo's output
    dest = chunked.hand_over(saved, "gpu-bench/motion-0002.safetensors", tmp_path / "input")
    assert dest.read_bytes() == b"motion"
    last = chunked.SavedChunk(saved.frames_file, None, 64, 64, 2, 0)
    with pytest.raises(SystemExit, match="saved no motion frames"):
        chunked.hand_over(last, "gpu-bench/motion-0003.safetensors", tmp_path / "input")


def test_the_workers_encode_overlaps_the_next_chunk_but_not_the_last() -> None:
    encodes = [stages.EncodeRun(i, 3, 293, 293 * 2764800, s) for i, s in ((1, 10.0), (2, 120.0), (3, 5.0))]
    assert [e.overlaps for e in encodes] == [
        "chunk 2's prompt",
        "chunk 3's prompt",
        "nothing: the last chunk, the job waits for it",
    ]
    # 250 s of prompts; chunk 2's encode runs 70 s past chunk 3's 50-s prompt; chunk 3's, 5 s, after all.
    assert stages.critical_path_s([100.0, 100.0, 50.0], encodes) == 325.0
    unmeasured = stages.EncodeRun(1, 1, 20, 245760, None, error="no ffmpeg binary on this machine")
    assert stages.critical_path_s([10.0], [unmeasured]) is None
    table = stages.render_encodes(encodes, [100.0, 100.0, 50.0]).splitlines()
    assert table[2] == "| 1 | 293 | 100.0 | 810.1 | 10.00 | chunk 2's prompt |"
    assert "– (no ffmpeg binary on this machine)" in stages.render_encodes([unmeasured], [10.0])


def test_the_workers_encode_of_raw_frames_is_timed(tmp_path) -> None:
    raw = tmp_path / "clip_00001_.rgb"
    raw.write_bytes(bytes(range(256)) * (16 * 16 * 3 * 3 // 256))  # 3 frames of 16x16
    command = [sys.executable, str(REPO / "bench" / "gpu" / "encode.py"), str(raw), str(tmp_path / "c.mp4"),
               "--width", "16", "--height", "16", "--frames", "3"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["frames"] == 3 and answer["seconds"] > 0
    assert answer["bytes"] == (tmp_path / "c.mp4").stat().st_size > 0
    command[-1] = "4"  # the file holds 3: encode_frames refuses it, the benchmark reports why
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode != 0 and "expected 4 frames" in done.stderr


# ------------------------------------------------------------------ with ComfyUI (never in CI)


@needs_comfy
@pytest.mark.timeout(900)
def test_whole_benchmark_at_toy_size_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "gpu_bench.py"), "--comfy", str(COMFY), "--tiny", "--cpu",
        "--frames", "20", "--steps", "1", "--backends", "cudnn", "--out", str(out),
        "--work", str(tmp_path / "work"), "--models", str(tmp_path / "models"),
        "--worker-python", sys.executable,  # this Python has the worker's requirements (ffmpeg-python)
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=880, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    clip = results["clip"]["result"]
    assert (clip["windows"], clip["prompts"]) == (1, 1)
    output = clip["output"]
    assert (output["kind"], output["frames"], output["width"], output["height"]) == ("frames", 20, 64, 64)
    assert output["motion_files"] == []  # one chunk: no chunk follows it
    stages_seen = {row["stage"] for row in clip["stages"]}
    assert {"window: sampler (KSampler)", "output: save raw frames (+ motion frames)"} <= stages_seen
    assert not any("SaveVideo" in stage for stage in stages_seen)
    # The worker's encode of the chunk's frames, timed apart: the job waits for it (no chunk follows).
    (encode,) = clip["encodes"]
    assert encode["error"] is None and encode["seconds"] > 0 and encode["frames"] == 20
    assert encode["raw_bytes"] == 20 * 64 * 64 * 3
    assert clip["job_seconds_with_encodes_derived"] == pytest.approx(
        clip["gpu_seconds"] + encode["seconds"], abs=0.02
    )
    samplers = [run for run in clip["runs"] if run["class_type"] == "KSampler"]
    assert [len(run["steps"]) for run in samplers] == [1]
    table = (out / "table.md").read_text()
    assert "| window: sampler (KSampler) | 1 |" in table
    assert "| 1 | 20 |" in table and "| nothing: the last chunk, the job waits for it |" in table
    assert results["info"]["attention"]["device"] == "cpu"
    assert "WAN22_Animate" in results["info"]["loaded_models"]  # ComfyUI detected the toy DiT as Wan Animate
