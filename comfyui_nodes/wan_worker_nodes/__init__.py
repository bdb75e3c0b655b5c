"""wan_worker_nodes: this repository's own ComfyUI graph nodes, each built on the pinned node
it corrects or guards (never a copy of it). ComfyUI imports this folder from custom_nodes/.

| class | module | what |
|---|---|---|
| ``WanAnimateToVideoOfficialMask`` | animate.py | core WanAnimateToVideo, official mask layout |
| ``Sam2SegmentationReleased`` | sam2.py | pack Sam2Segmentation; tracking state released after each run |
| ``OnnxDetectionModelLoaderChecked`` | onnx.py | pack ONNX loader; CUDA lost on a GPU is an error |
| ``ImageBatchReflectPad`` | reflect_pad.py | driving frames reflect-padded to what the windows cover |
| ``StrictLoraLoaderModelOnly`` | lora.py | core LoraLoaderModelOnly; every LoRA key must patch the model |
| ``WanWorkerSaveChunk`` | chunk_io.py | a chunk's raw RGB frames; float32 frames for the next chunk |
| ``WanWorkerLoadMotionFrames`` | chunk_io.py | those frames, read back in the next chunk's prompt |

Their ``/object_info`` entries, for the worker's graph checks, are declared in catalogue.json
beside this file and merged into workflows/object_info_pinned.json by
``python -m worker.graph extract-catalogue``.
"""

from __future__ import annotations

from typing import Any

from .animate import NODE_ID as ANIMATE_NODE_ID
from .animate import WanAnimateToVideoOfficialMask
from .chunk_io import LOAD_NODE_ID as LOAD_MOTION_NODE_ID
from .chunk_io import SAVE_NODE_ID as SAVE_CHUNK_NODE_ID
from .chunk_io import WanWorkerLoadMotionFrames, WanWorkerSaveChunk
from .lora import DISPLAY_NAME as LORA_DISPLAY_NAME
from .lora import NODE_ID as LORA_NODE_ID
from .lora import StrictLoraLoaderModelOnly
from .onnx import NODE_ID as ONNX_NODE_ID
from .onnx import OnnxDetectionModelLoaderChecked
from .onnx import register_route as register_onnx_route
from .onnx import setup as setup_onnx
from .reflect_pad import NODE_ID as REFLECT_PAD_NODE_ID
from .reflect_pad import ImageBatchReflectPad
from .sam2 import NODE_ID as SAM2_NODE_ID
from .sam2 import Sam2SegmentationReleased

NODE_CLASS_MAPPINGS: dict[str, Any] = {
    ANIMATE_NODE_ID: WanAnimateToVideoOfficialMask,
    SAM2_NODE_ID: Sam2SegmentationReleased,
    ONNX_NODE_ID: OnnxDetectionModelLoaderChecked,
    REFLECT_PAD_NODE_ID: ImageBatchReflectPad,
    LORA_NODE_ID: StrictLoraLoaderModelOnly,
    SAVE_CHUNK_NODE_ID: WanWorkerSaveChunk,
    LOAD_MOTION_NODE_ID: WanWorkerLoadMotionFrames,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    ANIMATE_NODE_ID: "WanAnimateToVideo (official mask layout)",
    SAM2_NODE_ID: "Sam2Segmentation (state released after each run)",
    ONNX_NODE_ID: "ONNX Detection Model Loader (CUDA checked)",
    REFLECT_PAD_NODE_ID: "Image batch reflect-pad (Wan Animate conditioning)",
    LORA_NODE_ID: LORA_DISPLAY_NAME,
    SAVE_CHUNK_NODE_ID: "Save chunk (raw frames + motion frames)",
    LOAD_MOTION_NODE_ID: "Load motion frames (chunk continuation)",
}

# GET /wan_worker/onnx: what ONNX Runtime can do in this process (onnx.py).
setup_onnx()
register_onnx_route()
