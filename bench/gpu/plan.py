"""What a graph needs before the benchmark can run it: pure Python, no torch, no ComfyUI.

* the model files its loader nodes name, and which shape-true random file stands for each;
* the classes that are not core ComfyUI and that this benchmark replaces with stand-ins when
  their pack is not loaded, with the reason each cannot be measured here;
* when the packs are loaded (--packs): the model files their loaders read (ONNX detectors, SAM2)
  and the graph inputs the benchmark must change on the machine it runs on (``input_overrides``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.models import LOADER_FOLDERS

# The loaders whose files have a shape-true builder here (the packs' loaders are --packs' business).
SHAPE_TRUE_FOLDERS = frozenset({"diffusion_models", "loras", "text_encoders", "vae", "clip_vision"})
LOADER_INPUTS = {key: folder for key, folder in LOADER_FOLDERS.items() if folder in SHAPE_TRUE_FOLDERS}


@dataclass(frozen=True)
class ModelFile:
    folder: str
    name: str
    # dit_fp8 | dit_bf16 | lora | umt5_fp8 | wan_vae | clip_vision_h | vitpose_onnx | yolo_onnx | sam2
    builder: str
    lora_rank: int | None = None
    lora_dtype: str | None = None  # bf16 | fp16


def builder_for(folder: str, name: str) -> ModelFile:
    lower = name.lower()
    if folder == "diffusion_models":
        return ModelFile(folder, name, "dit_fp8" if "fp8" in lower else "dit_bf16")
    if folder == "loras":
        # lightx2v: rank 64 bf16 on every Linear of the 40 blocks (738 MB). The relight LoRA's key
        # layout was not seen: 1.44 GB of 16-bit weights matches rank 128 on the same Linears, used as
        # its stand-in (in ComfyUI's native key names, which StrictLoraLoaderModelOnly requires).
        rank = 64 if "rank64" in lower else 128
        return ModelFile(
            folder, name, "lora", lora_rank=rank, lora_dtype="fp16" if "fp16" in lower else "bf16"
        )
    if folder == "text_encoders":
        return ModelFile(folder, name, "umt5_fp8")
    if folder == "vae":
        return ModelFile(folder, name, "wan_vae")
    if folder == "clip_vision":
        return ModelFile(folder, name, "clip_vision_h")
    raise ValueError(f"no shape-true builder for {folder}/{name}")


def model_files(graph: Mapping[str, Mapping[str, Any]]) -> list[ModelFile]:
    """Every model file the graph's core loader nodes name, once each, in graph order."""
    seen: dict[tuple[str, str], ModelFile] = {}
    for node in graph.values():
        for (class_type, input_name), folder in LOADER_INPUTS.items():
            if node["class_type"] == class_type:
                name = node["inputs"].get(input_name)
                if isinstance(name, str) and (folder, name) not in seen:
                    seen[(folder, name)] = builder_for(folder, name)
    return list(seen.values())


# Classes of the custom node packs the pinned graph uses, and why this benchmark cannot run the
# real thing on the GPU machine when the pack is not supplied (--custom-nodes).
WHY_NOT_MEASURED = {
    "OnnxDetectionModelLoader": "pack WanAnimatePreprocess not loaded (--packs); ONNX models",
    "PoseAndFaceDetection": (
        "pack WanAnimatePreprocess not loaded (--packs): YOLOv10m + ViTPose-L in onnxruntime"
    ),
    "DrawViTPose": "pack WanAnimatePreprocess (CPU drawing of the pose skeletons)",
    "DownloadAndLoadSAM2Model": "pack segment-anything-2",
    "Sam2Segmentation": "pack segment-anything-2 (SAM2.1 base+ video tracking)",
    "ImageResizeKJv2": "pack KJNodes",
    "GrowMaskWithBlur": "pack KJNodes (CPU mask dilation)",
    "BlockifyMask": "pack KJNodes",
    "DrawMaskOnImage": "pack KJNodes",
}


# This repository's classes (comfyui_nodes/wan_worker_nodes) that run a pack's class inside
# (their WRAPS_PACK_CLASS): the pack class must exist, real or stand-in, for them to run.
WRAPPED_PACK_CLASS = {
    "OnnxDetectionModelLoaderChecked": "OnnxDetectionModelLoader",
    "Sam2SegmentationReleased": "Sam2Segmentation",
}
# The pack folders --packs loads (docker/custom_nodes.txt pins their commits; pack_nodes.sh packs them).
PACK_FOLDERS = ("ComfyUI-WanAnimatePreprocess", "ComfyUI-segment-anything-2", "ComfyUI-KJNodes")


def pack_class_of(class_type: str) -> str:
    return WRAPPED_PACK_CLASS.get(class_type, class_type)


def classes_needed(graph: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The graph's classes and the pack classes its wrapper classes run."""
    classes = {node["class_type"] for node in graph.values()}
    return classes | {WRAPPED_PACK_CLASS[c] for c in classes if c in WRAPPED_PACK_CLASS}


def stand_ins_needed(graph: Mapping[str, Mapping[str, Any]], known_classes: Iterable[str]) -> list[str]:
    """Classes the graph needs (wrapped pack classes included) that ComfyUI (core + the packs
    loaded) does not know, sorted."""
    return sorted(classes_needed(graph) - set(known_classes))


def stand_in_nodes(graph: Mapping[str, Mapping[str, Any]], stand_ins: Iterable[str]) -> set[str]:
    """Classes whose time is a stand-in's: the stand-ins and the wrappers that run one."""
    used = set(stand_ins)
    return used | {w for w, pack in WRAPPED_PACK_CLASS.items() if pack in used}


# (pack class, input) -> (models folder, builder) of the files the pack loaders read.
PACK_LOADER_INPUTS = {
    ("OnnxDetectionModelLoader", "vitpose_model"): ("detection", "vitpose_onnx"),
    ("OnnxDetectionModelLoader", "yolo_model"): ("detection", "yolo_onnx"),
    ("DownloadAndLoadSAM2Model", "model"): ("sam2", "sam2"),
}


def sam2_file(model: str, precision: str) -> str:
    """The file DownloadAndLoadSAM2Model reads (pack nodes.py): a 2.1 model at fp16/bf16 loads
    '<name>-fp16.safetensors' from models/sam2 (worker/graph/comfy_checks.py applies the same rule)."""
    if precision != "fp32" and "2.1" in model:
        stem, _, extension = model.rpartition(".")
        return f"{stem}-fp16.{extension}"
    return model


def pack_model_files(graph: Mapping[str, Mapping[str, Any]]) -> list[ModelFile]:
    """Every file the graph's pack loaders (or the wrappers running them) read, once each."""
    seen: dict[tuple[str, str], ModelFile] = {}
    for node in graph.values():
        inputs = node["inputs"]
        for (class_type, input_name), (folder, builder) in PACK_LOADER_INPUTS.items():
            name = inputs.get(input_name)
            if pack_class_of(node["class_type"]) != class_type or not isinstance(name, str):
                continue
            if builder == "sam2":
                name = sam2_file(name, str(inputs.get("precision", "fp16")))
            seen.setdefault((folder, name), ModelFile(folder, name, builder))
    return list(seen.values())


@dataclass(frozen=True)
class Override:
    node: str
    input: str
    old: Any
    new: Any
    why: str


SAM2_TINY = "sam2.1_hiera_tiny.safetensors"


ANIMATE_CLASSES = ("WanAnimateToVideo", "WanAnimateToVideoOfficialMask")
PAD_CLASS = "ImageBatchReflectPad"


def tiny_window(frames: int) -> int:
    """The shortest Wan length (4k + 1) that holds ``frames``."""
    return 4 * ((max(frames, 1) + 2) // 4) + 1


def input_overrides(
    graph: Mapping[str, Mapping[str, Any]],
    *,
    cpu: bool,
    onnx_provider: str,
    tiny: bool,
    tiny_frames: int | None = None,
) -> list[Override]:
    """Inputs the benchmark changes so the real pack nodes run on this machine, each with why.

    * SAM2 on a CPU run: device cpu at fp32 (the pack refuses fp16/bf16 on the CPU);
    * SAM2 in --tiny: the tiny config (same code path, Hiera-T);
    * the ONNX loader: the execution provider this onnxruntime has (CUDA unless it is a CPU build);
    * ``tiny_frames`` (--tiny with the real packs on a CPU, one window): the window and the padded
      driving video cut to the clip's frames rounded up to 4k + 1. SAM2's memory attention costs
      ~0.5 TFLOP a frame at 1024x1024 whatever the config: 77 frames would take half an hour on
      two CPU cores.
    """
    changes: list[Override] = []
    animate = [nid for nid, node in graph.items() if node["class_type"] in ANIMATE_CLASSES]
    window = tiny_window(tiny_frames) if tiny_frames else None
    if window is not None and len(animate) != 1:
        raise ValueError(f"tiny_frames needs a one-window graph, this one has {len(animate)} windows")
    for node_id, node in graph.items():
        pack_class, inputs = pack_class_of(node["class_type"]), node["inputs"]
        wanted: dict[str, tuple[Any, str]] = {}
        if window is not None and node["class_type"] in (*ANIMATE_CLASSES, PAD_CLASS):
            wanted["length"] = (window, f"--tiny on a CPU: a {window}-frame window (SAM2 cost)")
        if pack_class == "DownloadAndLoadSAM2Model":
            if cpu:
                wanted["device"] = ("cpu", "CPU run")
                wanted["precision"] = ("fp32", "the pack refuses fp16/bf16 on the CPU")
            if tiny:
                wanted["model"] = (SAM2_TINY, "--tiny: SAM2.1 Hiera-T instead of base+")
        if pack_class == "OnnxDetectionModelLoader":
            wanted["onnx_device"] = (onnx_provider, f"the onnxruntime here runs {onnx_provider}")
        for name, (value, why) in wanted.items():
            if inputs.get(name) != value:
                changes.append(Override(node_id, name, inputs.get(name), value, why))
    return changes


def apply_overrides(graph: Mapping[str, Mapping[str, Any]], changes: Iterable[Override]) -> dict[str, Any]:
    result = json.loads(json.dumps(graph))
    for change in changes:
        result[change.node]["inputs"][change.input] = change.new
    return result


def onnx_provider_for(available: Iterable[str], *, cpu: bool) -> str:
    """CUDA when this onnxruntime has it and the run is on the GPU; else the CPU."""
    cuda = "CUDAExecutionProvider"
    return cuda if not cpu and cuda in set(available) else "CPUExecutionProvider"


def tiny_text_encoder(graph: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Nodes replaced in --tiny runs: umt5-xxl has one fixed size (5.7 B parameters)."""
    return [nid for nid, node in graph.items() if node["class_type"] in ("CLIPLoader", "CLIPTextEncode")]
