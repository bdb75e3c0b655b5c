"""Sam2SegmentationReleased (comfyui_nodes/wan_worker_nodes/sam2.py) without ComfyUI: the pack's
node is a stand-in that keeps its tracking state on its instance as the pinned one does
(``self.inference_state = model.init_state(...)``). The real pack node, through ComfyUI's own
executor: tests/test_guard_nodes_comfy.py."""

from __future__ import annotations

import gc
import importlib.util
import sys
import types
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch

NODE_FILE = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "wan_worker_nodes" / "sam2.py"


@pytest.fixture
def sam2(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("wan_worker_nodes_sam2_under_test", NODE_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tracking_state(frames: int) -> dict[str, Any]:
    """The keys of SAM2VideoPredictor.init_state that hold tensors, at a small size."""
    images = torch.zeros(frames, 3, 64, 64)
    return {
        "images": images,
        "num_frames": frames,
        "cached_features": {frames - 1: (images[-1:], {"backbone_fpn": [torch.ones(1, 8, 16, 16)]})},
        "output_dict": {
            "cond_frame_outputs": {0: {"maskmem_features": torch.ones(1, 4, 8, 8)}},
            "non_cond_frame_outputs": {
                i: {"maskmem_features": torch.ones(1, 4, 8, 8)} for i in range(1, frames)
            },
        },
    }


class PackSegmentation:
    """Stand-in for the pack's Sam2Segmentation: the state stays on the instance after segment()."""

    FUNCTION = "segment"
    instances: list[Any] = []  # noqa: RUF012 - a record of the instances made, per test

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sam2_model": ("SAM2MODEL",), "image": ("IMAGE",)}}

    def segment(self, image: torch.Tensor, sam2_model: dict[str, Any], fail: bool = False) -> tuple[Any, ...]:
        PackSegmentation.instances.append(self)
        self.inference_state = tracking_state(image.shape[0])
        if fail:
            raise RuntimeError("CUDA out of memory")
        return (torch.zeros(image.shape[0], 8, 8),)


class ImagePredictor:
    def __init__(self) -> None:
        self.features: torch.Tensor | None = torch.ones(4)

    def reset_predictor(self) -> None:
        self.features = None


@pytest.fixture
def comfy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """ComfyUI's registry holding the pack's class, and model_management recording cache empties."""
    calls: list[str] = []
    nodes = types.ModuleType("nodes")
    nodes.NODE_CLASS_MAPPINGS = {"Sam2Segmentation": PackSegmentation}
    comfy_pkg = types.ModuleType("comfy")
    mm = types.ModuleType("comfy.model_management")
    mm.soft_empty_cache = lambda: calls.append("soft_empty_cache")
    comfy_pkg.model_management = mm
    for name, module in {"nodes": nodes, "comfy": comfy_pkg, "comfy.model_management": mm}.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(PackSegmentation, "instances", [])
    return calls


def test_release_empties_and_drops_the_state(sam2: types.ModuleType) -> None:
    node = types.SimpleNamespace(inference_state=tracking_state(5))
    state = node.inference_state
    frames = weakref.ref(state["images"])
    assert sam2.release_tracking_state(node) == 5 * 3 * 64 * 64 * 4 + 8 * 16 * 16 * 4 + 5 * 4 * 8 * 8 * 4
    assert not hasattr(node, "inference_state")
    assert state == {}  # a reference held elsewhere (a traceback) keeps nothing either
    gc.collect()
    assert frames() is None
    assert sam2.release_tracking_state(node) == 0  # nothing to release: no error


def test_tensor_bytes_counts_each_storage_once(sam2: types.ModuleType) -> None:
    base = torch.zeros(10, 10)
    assert sam2.tensor_bytes({"a": base, "b": [base[1:], (base[0],)], "c": 3}) == 400


def test_the_node_runs_the_pack_node_and_leaves_nothing(sam2: types.ModuleType, comfy: list[str]) -> None:
    ours = sam2.Sam2SegmentationReleased()
    assert ours.INPUT_TYPES() == PackSegmentation.INPUT_TYPES()
    predictor = ImagePredictor()
    (mask,) = ours.segment(image=torch.zeros(4, 8, 8, 3), sam2_model={"model": predictor})
    assert mask.shape == (4, 8, 8)
    (pack_node,) = PackSegmentation.instances
    assert not hasattr(pack_node, "inference_state") and vars(ours) == {}
    assert predictor.features is None  # an image predictor's features are reset too
    assert comfy == ["soft_empty_cache"]


def test_the_state_is_released_when_the_pack_node_raises(sam2: types.ModuleType, comfy: list[str]) -> None:
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        sam2.Sam2SegmentationReleased().segment(image=torch.zeros(2, 8, 8, 3), sam2_model={}, fail=True)
    (pack_node,) = PackSegmentation.instances
    assert not hasattr(pack_node, "inference_state")
    assert comfy == ["soft_empty_cache"]


def test_each_run_gets_a_fresh_pack_instance(sam2: types.ModuleType, comfy: list[str]) -> None:
    ours = sam2.Sam2SegmentationReleased()
    for _ in range(2):
        ours.segment(image=torch.zeros(1, 8, 8, 3), sam2_model={})
    first, second = PackSegmentation.instances
    assert first is not second


def test_a_missing_pack_is_named(sam2: types.ModuleType, comfy: list[str]) -> None:
    sys.modules["nodes"].NODE_CLASS_MAPPINGS = {}
    with pytest.raises(
        RuntimeError, match="runs the pack node Sam2Segmentation, which ComfyUI has not loaded"
    ):
        sam2.Sam2SegmentationReleased.INPUT_TYPES()
