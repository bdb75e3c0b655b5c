"""``Sam2SegmentationReleased``: segment-anything-2's ``Sam2Segmentation``, leaving nothing behind.

The pack's node (c59676b0, nodes.py) keeps its video tracking state on the node instance:
``self.inference_state = model.init_state(...)``, a dict holding the whole driving video resized
to 1024x1024 float32 on the CPU (``images``), every frame's tracking outputs (mask memories,
object pointers) on ``storage_device`` (the GPU) and the last frame's backbone features
(``cached_features``, GPU). It only resets that dict at its *next* run (``reset_state`` keeps the
frames), and ComfyUI keeps node instances between prompts (``caches.objects``), so a 10-second
clip left ~3 GB of RAM plus GPU memory behind until the next job. The SAM2 model itself is the
loader's cached output and is not touched; ``keep_model_loaded`` still decides where it lives.

This node runs the pack's own class, looked up in ComfyUI's registry, on a fresh instance each
time, and afterwards (also when it raises) empties and drops that instance's tracking state,
resets an image predictor's features (``single_image`` segmentor: ``set_image`` keeps them on the
model) and asks ComfyUI to return the freed GPU memory (``soft_empty_cache``). Same inputs and
outputs as the pack's node.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

NODE_ID = "Sam2SegmentationReleased"
PACK_CLASS = "Sam2Segmentation"
STATE_ATTRIBUTE = "inference_state"
LOG_PREFIX = "wan_worker_nodes.sam2:"


def tensor_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of the distinct tensor storages reachable through dicts, lists and tuples."""
    seen = set() if seen is None else seen
    if hasattr(value, "untyped_storage") and hasattr(value, "element_size"):
        storage = value.untyped_storage()
        key = storage.data_ptr()
        if key in seen:
            return 0
        seen.add(key)
        return int(storage.nbytes())
    children: Iterable[Any] = ()
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list | tuple):
        children = value
    return sum(tensor_bytes(child, seen) for child in children)


def release_tracking_state(node: Any) -> int:
    """Empties and removes ``node.inference_state``; returns the tensor bytes it referenced.

    The dict is cleared, not only detached: anything else still holding it (a traceback, a
    caller) then holds an empty dict, not the video."""
    state = vars(node).pop(STATE_ATTRIBUTE, None)
    if not isinstance(state, dict):
        return 0
    held = tensor_bytes(state)
    state.clear()
    return held


def release_predictor(sam2_model: Any) -> None:
    """An image predictor keeps the last image's features (``set_image``) until reset."""
    model = sam2_model.get("model") if isinstance(sam2_model, dict) else None
    reset = getattr(model, "reset_predictor", None)
    if callable(reset):
        reset()


def pack_class(name: str) -> Any:
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(name)
    if cls is None:
        raise RuntimeError(f"{NODE_ID} runs the pack node {name}, which ComfyUI has not loaded")
    return cls


def empty_device_cache() -> None:
    import comfy.model_management as mm

    mm.soft_empty_cache()


class Sam2SegmentationReleased:
    WRAPS_PACK_CLASS = PACK_CLASS
    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("mask",)
    FUNCTION = "segment"
    CATEGORY = "SAM2"
    DESCRIPTION = (
        "Sam2Segmentation that releases its tracking state (the video at 1024x1024, per-frame "
        "outputs, features) after every run instead of keeping it until the next one."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return pack_class(PACK_CLASS).INPUT_TYPES()

    def segment(self, **inputs: Any) -> tuple[Any, ...]:
        pack = pack_class(PACK_CLASS)
        node = pack()
        try:
            return getattr(node, pack.FUNCTION)(**inputs)
        finally:
            held = release_tracking_state(node)
            release_predictor(inputs.get("sam2_model"))
            del node
            empty_device_cache()
            logging.info("%s released the tracking state (%.1f MiB of tensors)", LOG_PREFIX, held / 2**20)
