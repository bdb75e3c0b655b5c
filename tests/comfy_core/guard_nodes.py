"""Runs inside a real ComfyUI (the pinned checkout, CPU) with the pinned packs copied into a temp
folder: our guard nodes around the real pack nodes. Prints one JSON object (see the keys below);
used by tests/test_guard_nodes_comfy.py.

* SAM2: the pack's ``Sam2Segmentation`` and our ``Sam2SegmentationReleased`` track a 3-frame video
  through ComfyUI's own executor with the pack's SAM2.1 tiny model (random weights of the real
  shapes, made with the pack's own model code). What each leaves behind: the tracking state
  ``init_state`` returned (recorded when it is created) and the node instance ComfyUI caches.
* ONNX: our ``OnnxDetectionModelLoaderChecked`` runs the pack's loader with the real onnxruntime
  on one-node models; CUDA asked for on this CPU machine is allowed, and refused once the node
  is told there is a GPU (the silent fallback), at load and at the pack's per-run ``reinit``.

    WAN_BENCH_PYTHON tests/comfy_core/guard_nodes.py --comfy /path/to/ComfyUI --sam2-pack DIR --wap-pack DIR
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.gpu.runtime import ComfyRuntime  # noqa: E402

SAM2_FILE = "sam2.1_hiera_tiny.safetensors"
CONFIG = "sam2.1_hiera_t.yaml"
FRAMES = 3


def copy_pack(source: Path, custom_nodes: Path, name: str) -> Path:
    target = custom_nodes / name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    return target


def tiny_sam2_weights(pack_module: str, pack_dir: Path, dest: Path) -> int:
    """The pack's own load_model builds SAM2.1 tiny with its init weights; saved as the file it loads."""
    import torch
    from safetensors.torch import save_file

    loader = sys.modules[f"{pack_module}.load_model"]
    original_file, original_load = loader.load_torch_file, torch.nn.Module.load_state_dict
    loader.load_torch_file = lambda path: {}
    torch.nn.Module.load_state_dict = lambda self, sd, *a, **k: None  # type: ignore[method-assign]
    try:
        model = loader.load_model(
            "unused", str(pack_dir / "sam2_configs" / CONFIG), "video", torch.float32, torch.device("cpu")
        )
    finally:
        loader.load_torch_file, torch.nn.Module.load_state_dict = original_file, original_load
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dest))
    return sum(v.numel() for v in state.values())


def sam2_graph(segmenter: str) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": FRAMES, "color": 8421504},
        },
        "2": {"class_type": "PrimitiveString", "inputs": {"value": '[{"x": 32, "y": 24}]'}},
        "3": {
            "class_type": "DownloadAndLoadSAM2Model",
            "inputs": {"model": SAM2_FILE, "segmentor": "video", "device": "cpu", "precision": "fp32"},
        },
        "4": {
            "class_type": segmenter,
            "inputs": {
                "sam2_model": ["3", 0],
                "image": ["1", 0],
                "keep_model_loaded": True,
                "coordinates_positive": ["2", 0],
                "individual_objects": False,
            },
        },
    }


def run_sam2(runtime: ComfyRuntime, segmenter: str, predictor_cls: Any, tensor_bytes: Any) -> dict[str, Any]:
    created: list[dict[str, Any]] = []
    images: list[weakref.ref[Any]] = []
    original = predictor_cls.init_state

    def recording_init_state(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = original(self, *args, **kwargs)
        created.append(state)
        images.append(weakref.ref(state["images"]))
        return state

    predictor_cls.init_state = recording_init_state
    try:
        runtime.run(sam2_graph(segmenter), outputs=["4"])
    finally:
        predictor_cls.init_state = original
    gc.collect()
    (state,) = created
    cached = asyncio.run(runtime.executor.caches.objects.get("4"))
    kept = getattr(cached, "inference_state", None)
    frames = state.get("images")
    return {
        "node_instance_cached": cached is not None and type(cached).__name__ == segmenter,
        "instance_keeps_state": kept is not None,
        "instance_state_is_the_tracking_state": kept is state,
        "state_keys": sorted(state),
        "frames_shape": list(frames.shape) if frames is not None else None,
        "frames_dtype": str(frames.dtype) if frames is not None else None,
        "tracked_frames": len(state.get("output_dict", {}).get("non_cond_frame_outputs", {}))
        + len(state.get("output_dict", {}).get("cond_frame_outputs", {})),
        "state_tensor_bytes": tensor_bytes(state),
        "frames_tensor_alive": images[0]() is not None,
    }


def run_onnx(runtime: ComfyRuntime, node_module: Any, detection: Path, rules: Any) -> dict[str, Any]:
    (detection / "tiny.onnx").write_bytes(rules.tiny_model())
    onnx = node_module.onnx
    out: dict[str, Any] = {"probe": {k: v for k, v in onnx.STATE.items() if k != "sessions"}}
    graph = {
        "1": {
            "class_type": "OnnxDetectionModelLoaderChecked",
            "inputs": {
                "vitpose_model": "tiny.onnx",
                "yolo_model": "tiny.onnx",
                "onnx_device": "CPUExecutionProvider",
            },
        }
    }
    runtime.run(graph, outputs=["1"])
    out["cpu_asked"] = dict(onnx.STATE["sessions"])
    graph["1"]["inputs"]["onnx_device"] = "CUDAExecutionProvider"
    runtime.run(graph, outputs=["1"])  # no GPU here: the CPU is all there is, allowed
    out["cuda_asked_no_gpu"] = dict(onnx.STATE["sessions"])
    model = asyncio.run(runtime.executor.caches.outputs.get("1"))
    onnx.STATE["gpu"] = True  # as on a GPU machine whose onnxruntime cannot create a CUDA session
    try:
        graph["1"]["inputs"]["yolo_model"] = "tiny-2.onnx"  # a new input: ComfyUI runs the loader again
        (detection / "tiny-2.onnx").write_bytes(rules.tiny_model())
        runtime.run(graph, outputs=["1"])
        out["cuda_asked_gpu_load"] = "ran"
    except SystemExit as exc:
        out["cuda_asked_gpu_load"] = str(exc)
    pose = _first_model(model)
    try:
        pose["yolo"].cleanup()
        pose["yolo"].reinit()  # what PoseAndFaceDetection does at every run
        out["cuda_asked_gpu_reinit"] = "ran"
    except RuntimeError as exc:
        out["cuda_asked_gpu_reinit"] = str(exc)
    return out


def _first_model(cached: Any) -> dict[str, Any]:
    """The POSEMODEL dict from ComfyUI's output cache entry (its layout differs between versions)."""
    stack = [cached]
    while stack:
        item = stack.pop()
        if isinstance(item, dict) and "yolo" in item:
            return item
        if isinstance(item, list | tuple):
            stack.extend(item)
        elif hasattr(item, "outputs"):
            stack.append(item.outputs)
    raise SystemExit(f"no POSEMODEL in the cached outputs: {type(cached)}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfy", type=Path, required=True)
    parser.add_argument("--sam2-pack", type=Path, required=True)
    parser.add_argument("--wap-pack", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="guard-nodes-"))
    custom = work / "custom_nodes"
    custom.mkdir()
    sam2_dir = copy_pack(args.sam2_pack, custom, "ComfyUI-segment-anything-2")
    wap_dir = copy_pack(args.wap_pack, custom, "ComfyUI-WanAnimatePreprocess")
    runtime = ComfyRuntime(args.comfy, cpu=True, work_dir=work)
    runtime.start()
    import folder_paths

    folder_paths.models_dir = str(work / "models")  # the packs read models/sam2 and models/detection from it
    detection = work / "models" / "detection"
    detection.mkdir(parents=True)
    sam2_module = runtime.load_custom_node(sam2_dir).__name__
    runtime.load_custom_node(wap_dir)
    ours = runtime.load_custom_node(REPO / "comfyui_nodes" / "wan_worker_nodes")
    sam2_node, rules = ours.sam2, ours.onnx_providers

    report: dict[str, Any] = {
        "weights": tiny_sam2_weights(sam2_module, sam2_dir, work / "models" / "sam2" / SAM2_FILE)
    }
    predictor = sys.modules[f"{sam2_module}.sam2.sam2_video_predictor"].SAM2VideoPredictor
    report["pack"] = run_sam2(runtime, "Sam2Segmentation", predictor, sam2_node.tensor_bytes)
    report["ours"] = run_sam2(runtime, "Sam2SegmentationReleased", predictor, sam2_node.tensor_bytes)
    report["onnx"] = run_onnx(runtime, ours, detection, rules)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
