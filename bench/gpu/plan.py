"""What a graph needs before the benchmark can run it: pure Python, no torch, no ComfyUI.

* the model files its loader nodes name, and which shape-true random file stands for each;
* the classes that are not core ComfyUI and that this benchmark replaces with stand-ins when
  their pack is not loaded, with the reason each cannot be measured here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# (class_type, input) -> ComfyUI models folder
LOADER_INPUTS = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("StrictLoraLoaderModelOnly", "lora_name"): "loras",  # comfyui_nodes/wan_worker_nodes/lora.py
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
}


@dataclass(frozen=True)
class ModelFile:
    folder: str
    name: str
    builder: str  # dit_fp8 | dit_bf16 | lora | umt5_fp8 | wan_vae | clip_vision_h
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
    "OnnxDetectionModelLoader": "pack WanAnimatePreprocess; ONNX models",
    "PoseAndFaceDetection": (
        "YOLOv10m + ViTPose-L run in onnxruntime-gpu (a ~250 MB wheel, over the 64 MiB that can travel to "
        "the GPU machine); no shape-true ONNX graph can be made without their model code"
    ),
    "DrawViTPose": "pack WanAnimatePreprocess (CPU drawing of the pose skeletons)",
    "DownloadAndLoadSAM2Model": "pack segment-anything-2",
    "Sam2Segmentation": "pack segment-anything-2 (SAM2.1 base+ video tracking)",
    "ImageResizeKJv2": "pack KJNodes",
    "GrowMaskWithBlur": "pack KJNodes (CPU mask dilation)",
    "BlockifyMask": "pack KJNodes",
    "DrawMaskOnImage": "pack KJNodes",
}


# This repository's guard nodes (comfyui_nodes/wan_worker_nodes) run a pack class at run time
# (their WRAPS_PACK_CLASS): that class must exist, real or stand-in, for them to run.
WRAPPED_PACK_CLASS = {
    "OnnxDetectionModelLoaderChecked": "OnnxDetectionModelLoader",
    "Sam2SegmentationReleased": "Sam2Segmentation",
}


def stand_ins_needed(graph: Mapping[str, Mapping[str, Any]], known_classes: Iterable[str]) -> list[str]:
    """Classes of the graph, and pack classes its guard nodes run, that ComfyUI (core + the packs
    loaded) does not know, sorted."""
    known = set(known_classes)
    classes = {node["class_type"] for node in graph.values()}
    classes |= {WRAPPED_PACK_CLASS[c] for c in classes if c in WRAPPED_PACK_CLASS}
    return sorted(classes - known)


def tiny_text_encoder(graph: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Nodes replaced in --tiny runs: umt5-xxl has one fixed size (5.7 B parameters)."""
    return [nid for nid, node in graph.items() if node["class_type"] in ("CLIPLoader", "CLIPTextEncode")]
