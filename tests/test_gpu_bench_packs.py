"""The GPU benchmark with the real custom-node packs (bench/gpu_bench.py --packs).

Always (CI): which model files the pack loaders read, the inputs the benchmark changes to run them
on a given machine, the repository's wrapper classes and the pack classes they run, the "every
node executed" check, and (with torch) the ONNX stand-in networks' input/output signature.

With a ComfyUI checkout and the packs (``WAN_BENCH_COMFYUI``, ``WAN_BENCH_PYTHON`` with torch,
onnxruntime, opencv and matplotlib, and ``WAN_BENCH_PACKS`` = the folder ``bash
bench/gpu/pack_nodes.sh`` fills, .gpu/packs): the whole pinned graph at toy size on the CPU with the
pack nodes running for real. CI has neither ComfyUI 0.33.0 (not on PyPI) nor GitHub, so it skips it.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bench.gpu import plan, stages
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON
from tests.test_gpu_bench_cpu import pinned_graph

REPO = Path(__file__).resolve().parents[1]
PINNED = REPO / "workflows" / "wan22_animate_replace.json"
REPO_NODES = REPO / "comfyui_nodes" / "wan_worker_nodes"
PREPROCESS_CLASSES = {
    "PoseAndFaceDetection",
    "DrawViTPose",
    "Sam2SegmentationReleased",
    "GrowMaskWithBlur",
    "BlockifyMask",
    "DrawMaskOnImage",
}


@pytest.fixture(scope="module")
def clip_graph() -> dict[str, Any]:
    return pinned_graph(240)


def node_of(graph: dict[str, Any], pack_class: str) -> str:
    (node_id,) = [nid for nid, node in graph.items() if plan.pack_class_of(node["class_type"]) == pack_class]
    return node_id


def test_pack_loaders_read_the_manifests_files(clip_graph) -> None:
    files = {(f.folder, f.name): f.builder for f in plan.pack_model_files(clip_graph)}
    assert files == {
        ("detection", "vitpose-l-wholebody.onnx"): "vitpose_onnx",
        ("detection", "yolov10m.onnx"): "yolo_onnx",
        ("sam2", "sam2.1_hiera_base_plus-fp16.safetensors"): "sam2",  # SAM2.1 at fp16 reads the -fp16 file
    }
    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    installed = {(e["folder"], e["filename"]) for e in manifest["files"]}
    assert set(files) <= installed


def test_sam2_file_rule_is_the_graph_checks() -> None:
    from worker.graph.comfy_checks import _sam2_file

    for model in ("sam2.1_hiera_base_plus.safetensors", "sam2_hiera_large.safetensors"):
        for precision in ("fp16", "bf16", "fp32"):
            assert plan.sam2_file(model, precision) == _sam2_file(model, {"precision": precision})
    assert plan.sam2_file("sam2.1_hiera_tiny.safetensors", "fp32") == "sam2.1_hiera_tiny.safetensors"


def test_on_the_gpu_machine_only_the_onnx_provider_changes(clip_graph) -> None:
    # The GPU image has the CPU build of onnxruntime: the checked loader must be asked for the CPU.
    changes = plan.input_overrides(clip_graph, cpu=False, onnx_provider="CPUExecutionProvider", tiny=False)
    onnx = node_of(clip_graph, "OnnxDetectionModelLoader")
    assert [(c.node, c.input, c.old, c.new) for c in changes] == [
        (onnx, "onnx_device", "CUDAExecutionProvider", "CPUExecutionProvider")
    ]
    assert (
        plan.input_overrides(clip_graph, cpu=False, onnx_provider="CUDAExecutionProvider", tiny=False) == []
    )
    changed = plan.apply_overrides(clip_graph, changes)
    assert changed[onnx]["inputs"]["onnx_device"] == "CPUExecutionProvider"
    assert clip_graph[onnx]["inputs"]["onnx_device"] == "CUDAExecutionProvider"  # the original is untouched


def test_onnx_provider_follows_what_onnxruntime_has() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert plan.onnx_provider_for(both, cpu=False) == "CUDAExecutionProvider"
    assert plan.onnx_provider_for(both, cpu=True) == "CPUExecutionProvider"
    assert plan.onnx_provider_for(["CPUExecutionProvider"], cpu=False) == "CPUExecutionProvider"


def test_a_tiny_cpu_run_uses_sam2_tiny_at_fp32_and_one_short_window() -> None:
    graph = pinned_graph(6)
    changes = plan.input_overrides(
        graph, cpu=True, onnx_provider="CPUExecutionProvider", tiny=True, tiny_frames=6
    )
    changed = plan.apply_overrides(graph, changes)
    sam2 = changed[node_of(graph, "DownloadAndLoadSAM2Model")]["inputs"]
    assert (sam2["device"], sam2["precision"], sam2["model"]) == ("cpu", "fp32", plan.SAM2_TINY)
    assert {(f.folder, f.name) for f in plan.pack_model_files(changed) if f.builder == "sam2"} == {
        ("sam2", "sam2.1_hiera_tiny.safetensors")  # fp32: no -fp16 suffix
    }
    lengths = {
        node["class_type"]: node["inputs"]["length"]
        for node in changed.values()
        if node["class_type"] in (*plan.ANIMATE_CLASSES, plan.PAD_CLASS)
    }
    assert lengths == {"WanAnimateToVideoOfficialMask": 9, "ImageBatchReflectPad": 9}
    assert all(c.why for c in changes)
    with pytest.raises(ValueError, match="one-window"):
        plan.input_overrides(pinned_graph(240), cpu=True, onnx_provider="x", tiny=True, tiny_frames=6)


def test_wan_lengths_for_tiny_windows() -> None:
    assert [plan.tiny_window(f) for f in (1, 2, 5, 6, 9, 10, 77)] == [1, 5, 5, 9, 9, 13, 77]


def _constant(path: Path, name: str) -> str:
    for statement in ast.parse(path.read_text()).body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in statement.targets
        ):
            return ast.literal_eval(statement.value)
    raise AssertionError(f"{path.name} has no {name}")


def test_the_wrapper_map_is_the_repository_nodes() -> None:
    found = {
        _constant(REPO_NODES / module, "NODE_ID"): _constant(REPO_NODES / module, "PACK_CLASS")
        for module in ("sam2.py", "onnx.py")
    }
    assert found == plan.WRAPPED_PACK_CLASS


def test_wrappers_need_their_pack_class_and_inherit_a_stand_ins_mark(clip_graph) -> None:
    graph_classes = {node["class_type"] for node in clip_graph.values()}
    assert set(plan.WRAPPED_PACK_CLASS) <= graph_classes
    # ComfyUI with the repo's classes but no packs: the wrapped pack classes are missing too.
    repo_and_core = graph_classes - set(plan.WHY_NOT_MEASURED)
    needed = set(plan.stand_ins_needed(clip_graph, repo_and_core))
    assert {"OnnxDetectionModelLoader", "Sam2Segmentation", "PoseAndFaceDetection"} <= needed
    assert needed <= set(plan.WHY_NOT_MEASURED)
    marked = plan.stand_in_nodes(clip_graph, needed)
    assert {"OnnxDetectionModelLoaderChecked", "Sam2SegmentationReleased"} <= marked
    assert plan.stand_in_nodes(clip_graph, {"DrawViTPose"}) == {"DrawViTPose"}


def test_pack_folders_are_pinned_in_the_image() -> None:
    pinned = {
        line.split()[0]
        for line in (REPO / "docker" / "custom_nodes.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert set(plan.PACK_FOLDERS) <= pinned
    script = (REPO / "bench" / "gpu" / "pack_nodes.sh").read_text()
    assert all(folder in script for folder in plan.PACK_FOLDERS)


def test_a_node_that_did_not_run_is_reported(clip_graph) -> None:
    runs = [stages.NodeRun(nid, node["class_type"], 0.0, 1.0) for nid, node in clip_graph.items()]
    assert stages.not_executed(clip_graph, runs) == []
    sam2 = node_of(clip_graph, "Sam2Segmentation")
    partial = [run for run in runs if run.node != sam2]
    assert stages.not_executed(clip_graph, partial) == [sam2]
    runs[0].stand_in = True
    table = stages.render_nodes(runs, only_stages=stages.PREPROCESS_STAGES)
    rows = table.splitlines()[2:]
    assert {row.split("|")[2].strip() for row in rows} == PREPROCESS_CLASSES | {
        "OnnxDetectionModelLoaderChecked",
        "DownloadAndLoadSAM2Model",
    }
    assert all(row.endswith("| real |") for row in rows)
    assert "stand-in, not measured" in stages.render_nodes(runs).splitlines()[2]


def test_preprocess_only_keeps_the_preprocessing_and_what_it_reads(clip_graph) -> None:
    from bench import gpu_bench

    sub = gpu_bench.preprocessing_subgraph(clip_graph)
    classes = {node["class_type"] for node in sub.values()}
    assert classes >= PREPROCESS_CLASSES
    assert classes - PREPROCESS_CLASSES == {
        "LoadVideo",
        "GetVideoComponents",
        "ImageBatchReflectPad",
        "OnnxDetectionModelLoaderChecked",
        "DownloadAndLoadSAM2Model",
    }
    assert plan.model_files(sub) == []  # no Wan model file is made for it
    assert {f.builder for f in plan.pack_model_files(sub)} == {"vitpose_onnx", "yolo_onnx", "sam2"}


# ------------------------------------------------------------------ the ONNX networks (torch)


def test_pose_network_has_the_pack_vitpose_signature() -> None:
    torch = pytest.importorskip("torch")
    from bench.gpu import pack_models

    net = pack_models.ViTPose(pack_models.VITPOSE_TINY).eval()
    with torch.no_grad():
        heatmaps = net(torch.rand(1, 3, *pack_models.POSE_INPUT))
    assert tuple(heatmaps.shape) == (1, pack_models.KEYPOINTS, 64, 48)  # 1/4 of 256x192
    assert torch.isfinite(heatmaps).all()


def test_detector_network_has_yolov10s_output_layout() -> None:
    torch = pytest.importorskip("torch")
    from bench.gpu import pack_models

    net = pack_models.YoloLike(**pack_models.YOLO_TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 640, 640))
    assert tuple(out.shape) == (1, pack_models.YOLO_TOPK, 6)  # x1, y1, x2, y2, score, class
    boxes, score, label = out[0, :, :4], out[0, :, 4], out[0, :, 5]
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert ((score >= 0) & (score <= 1)).all() and (score[:-1] >= score[1:]).all()  # top-k, sorted
    assert (label == label.round()).all() and ((label >= 0) & (label < pack_models.YOLO_CLASSES)).all()


# ------------------------------------------------------------------ with ComfyUI and the packs (never in CI)

PACKS = os.environ.get("WAN_BENCH_PACKS")


@pytest.mark.skipif(
    not (COMFY and PACKS),
    reason="needs WAN_BENCH_COMFYUI (ComfyUI 0.33.0), WAN_BENCH_PACKS (bash bench/gpu/pack_nodes.sh -> "
    ".gpu/packs) and WAN_BENCH_PYTHON: ComfyUI and the packs come from GitHub, which CI does not reach",
)
@pytest.mark.timeout(1500)
def test_real_pack_nodes_run_in_the_whole_graph_on_the_cpu(tmp_path) -> None:
    out = tmp_path / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "gpu_bench.py"), "--comfy", str(COMFY), "--packs", str(PACKS),
        "--tiny", "--cpu", "--frames", "6", "--steps", "1", "--mode", "clip", "--out", str(out),
        "--work", str(tmp_path / "work"), "--models", str(tmp_path / "models"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=1480, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    clip = results["clip"]["result"]
    # Every node ran; the only stand-ins are --tiny's text encoder (umt5-xxl has one, 5.7 B size).
    assert clip["not_executed"] == []
    text = {run["node"] for run in clip["runs"] if run["class_type"] in ("CLIPLoader", "CLIPTextEncode")}
    assert len(text) == 3 and clip["stand_in_nodes"] == sorted(text)
    ran = {run["class_type"] for run in clip["runs"]}
    assert PREPROCESS_CLASSES | {"OnnxDetectionModelLoaderChecked", "DownloadAndLoadSAM2Model"} <= ran
    assert "ImageResizeKJv2" in ran
    assert not any(run["stand_in"] for run in clip["runs"] if run["node"] not in text)
    assert clip["output"]["frames"] == 6
    files = {record["file"]: record for record in results["files"]}
    vitpose, yolo = files["vitpose-l-wholebody.onnx"], files["yolov10m.onnx"]
    assert [(i["name"], i["shape"]) for i in vitpose["inputs"]] == [("input", [1, 3, 256, 192])]
    assert [(o["name"], o["shape"]) for o in vitpose["outputs"]] == [("heatmaps", [1, 133, 64, 48])]
    assert [(i["name"], i["shape"]) for i in yolo["inputs"]] == [("images", [1, 3, 640, 640])]
    assert [(o["name"], o["shape"]) for o in yolo["outputs"]] == [("output0", [1, 300, 6])]
    assert files["sam2.1_hiera_tiny.safetensors"]["builder"] == "sam2"
    notes = "\n".join(results["notes"])
    assert "onnx_device" in notes and "sam2.1_hiera_tiny" in notes
    table = (out / "table.md").read_text()
    assert f"Nodes executed: 30 of 30; not executed: none; stand-ins: {sorted(text)}" in table
    assert "| Sam2SegmentationReleased | preprocess: SAM2 person mask |" in table
