"""Model files for the custom-node packs' loaders, made at run time (nothing downloaded, nothing committed).

* ``vitpose-l-wholebody.onnx``: ViTPose-L's architecture (ViT-L/16 on 256x192 crops, patch embedding
  padded by 2, 24 blocks of width 1024, the classic decoder: two 4x4 stride-2 deconvolutions to
  256 channels and a 1x1 convolution to 133 whole-body keypoints) with random weights, exported by
  ``torch.onnx``: input ``input`` [1, 3, 256, 192] float32, output ``heatmaps`` [1, 133, 64, 48],
  what WanAnimatePreprocess's ``ViTPose`` (models/onnx_models.py) feeds and decodes. 308.6 M
  parameters, 123 GFLOP per crop: the real model's cost.
* ``yolov10m.onnx``: **not YOLOv10m's architecture**: YOLOv8m's (C2f backbone at the m widths
  48-576 and depths YOLOv10m shares, SPPF, PAN neck, decoupled DFL heads on strides 8/16/32; 25.9 M
  parameters, 78.9 GFLOP at 640, the published YOLOv8m figures) ending in YOLOv10's NMS-free
  top-300 selection, random weights. Same signature as the real file: input ``images``
  [1, 3, 640, 640] float32 in 0..1, output ``output0`` [1, 300, 6] = x1, y1, x2, y2 (640-pixel
  coordinates), score, class, what the pack's ``Yolo.postprocess`` reads. YOLOv10m is 15.4 M
  parameters and 59.1 GFLOP (SCDown/C2fCIB/PSA blocks): this one does ~1.33x its arithmetic, so its
  time is an upper bound. Stated in the benchmark's notes.
* the SAM2 file: the keys, shapes and values of a model built by segment-anything-2's own
  ``load_model`` code from its own config (sam2.1_hiera_base_plus: Hiera b+, memory attention,
  memory encoder, SAM heads) with PyTorch's initialisation, written in the dtype and under the
  name (``-fp16`` for 2.1 at fp16/bf16) its loader reads, so the loader's strict
  ``load_state_dict`` accepts it and the tracking arithmetic is the real one.

``--tiny`` keeps the same inputs, outputs and code paths with narrow networks (and SAM2's tiny
config, selected by the graph override in plan.input_overrides).
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.gpu.plan import ModelFile


@dataclass(frozen=True)
class VitSize:
    dim: int
    depth: int
    heads: int
    mlp: int
    deconv: int


VITPOSE_L = VitSize(dim=1024, depth=24, heads=16, mlp=4096, deconv=256)
VITPOSE_TINY = VitSize(dim=64, depth=2, heads=2, mlp=128, deconv=32)
KEYPOINTS = 133  # COCO-WholeBody: 17 body + 6 feet + 68 face + 42 hands
POSE_INPUT = (256, 192)


class _Block(nn.Module):
    def __init__(self, size: VitSize) -> None:
        super().__init__()
        self.heads = size.heads
        self.norm1 = nn.LayerNorm(size.dim, eps=1e-6)
        self.qkv = nn.Linear(size.dim, 3 * size.dim)
        self.proj = nn.Linear(size.dim, size.dim)
        self.norm2 = nn.LayerNorm(size.dim, eps=1e-6)
        self.fc1 = nn.Linear(size.dim, size.mlp)
        self.fc2 = nn.Linear(size.mlp, size.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5, dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class ViTPose(nn.Module):
    """ViTPose (ViT backbone + classic heatmap decoder): [B, 3, 256, 192] -> [B, 133, 64, 48]."""

    def __init__(self, size: VitSize = VITPOSE_L) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, size.dim, kernel_size=16, stride=16, padding=2)
        self.grid = (POSE_INPUT[0] // 16, POSE_INPUT[1] // 16)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid[0] * self.grid[1], size.dim) * 0.02)
        self.blocks = nn.ModuleList(_Block(size) for _ in range(size.depth))
        self.norm = nn.LayerNorm(size.dim, eps=1e-6)
        self.head = nn.Sequential(
            nn.ConvTranspose2d(size.dim, size.deconv, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(size.deconv),
            nn.ReLU(),
            nn.ConvTranspose2d(size.deconv, size.deconv, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(size.deconv),
            nn.ReLU(),
            nn.Conv2d(size.deconv, KEYPOINTS, 1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(image)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        x = self.norm(x).transpose(1, 2).reshape(b, d, h, w)
        return self.head(x)


class _Conv(nn.Sequential):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())


class _C2f(nn.Module):
    def __init__(self, c1: int, c2: int, n: int, shortcut: bool = True) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = _Conv(c1, 2 * self.c)
        self.cv2 = _Conv((2 + n) * self.c, c2)
        self.m = nn.ModuleList(
            nn.Sequential(_Conv(self.c, self.c, 3), _Conv(self.c, self.c, 3)) for _ in range(n)
        )
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(y[-1] + m(y[-1]) if self.shortcut else m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class _SPPF(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = _Conv(c, c // 2)
        self.cv2 = _Conv(c * 2, c)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


YOLO_M = {"widths": (48, 96, 192, 384, 576), "depths": (2, 4, 4, 2)}
YOLO_TINY = {"widths": (8, 16, 16, 32, 32), "depths": (1, 1, 1, 1)}
YOLO_CLASSES = 80
YOLO_TOPK = 300
DFL_BINS = 16


class YoloLike(nn.Module):
    """YOLOv8m-style detector with YOLOv10's top-300 output: [B, 3, 640, 640] -> [B, 300, 6]."""

    def __init__(
        self, widths: tuple[int, ...] = YOLO_M["widths"], depths: tuple[int, ...] = YOLO_M["depths"]
    ) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        d0, d1, d2, d3 = depths
        self.stem = nn.Sequential(_Conv(3, w0, 3, 2), _Conv(w0, w1, 3, 2), _C2f(w1, w1, d0))
        self.p3 = nn.Sequential(_Conv(w1, w2, 3, 2), _C2f(w2, w2, d1))
        self.p4 = nn.Sequential(_Conv(w2, w3, 3, 2), _C2f(w3, w3, d2))
        self.p5 = nn.Sequential(_Conv(w3, w4, 3, 2), _C2f(w4, w4, d3), _SPPF(w4))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n4 = _C2f(w4 + w3, w3, d3, shortcut=False)
        self.n3 = _C2f(w3 + w2, w2, d3, shortcut=False)
        self.down3 = _Conv(w2, w2, 3, 2)
        self.o4 = _C2f(w2 + w3, w3, d3, shortcut=False)
        self.down4 = _Conv(w3, w3, 3, 2)
        self.o5 = _C2f(w3 + w4, w4, d3, shortcut=False)
        box_c, cls_c = max(16, w2 // 4, DFL_BINS * 4), max(w2, min(YOLO_CLASSES, 100))
        self.box = nn.ModuleList(
            nn.Sequential(_Conv(c, box_c, 3), _Conv(box_c, box_c, 3), nn.Conv2d(box_c, 4 * DFL_BINS, 1))
            for c in (w2, w3, w4)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(_Conv(c, cls_c, 3), _Conv(cls_c, cls_c, 3), nn.Conv2d(cls_c, YOLO_CLASSES, 1))
            for c in (w2, w3, w4)
        )
        self.strides = (8, 16, 32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(images))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        n4 = self.n4(torch.cat([self.up(p5), p4], 1))
        n3 = self.n3(torch.cat([self.up(n4), p3], 1))
        o4 = self.o4(torch.cat([self.down3(n3), n4], 1))
        o5 = self.o5(torch.cat([self.down4(o4), p5], 1))
        boxes, scores = [], []
        bins = torch.arange(DFL_BINS, dtype=images.dtype)
        for level, (feature, stride) in enumerate(zip((n3, o4, o5), self.strides, strict=True)):
            b, _, h, w = feature.shape
            dist = self.box[level](feature).reshape(b, 4, DFL_BINS, h * w).softmax(2)
            ltrb = (dist * bins.reshape(1, 1, DFL_BINS, 1)).sum(2) * stride  # [b, 4, h*w]
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=images.dtype), torch.arange(w, dtype=images.dtype), indexing="ij"
            )
            centre = torch.stack([xs.reshape(-1) + 0.5, ys.reshape(-1) + 0.5]) * stride  # [2, h*w]
            boxes.append(torch.cat([centre - ltrb[:, :2], centre + ltrb[:, 2:]], 1))
            scores.append(self.cls[level](feature).reshape(b, YOLO_CLASSES, h * w).sigmoid())
        box = torch.cat(boxes, 2).transpose(1, 2)  # [b, anchors, 4]
        score, label = torch.cat(scores, 2).transpose(1, 2).max(-1)  # [b, anchors]
        top, index = score.topk(YOLO_TOPK, dim=1)
        picked = torch.gather(box, 1, index.unsqueeze(-1).expand(-1, -1, 4))
        label = torch.gather(label, 1, index).to(images.dtype)
        return torch.cat([picked, top.unsqueeze(-1), label.unsqueeze(-1)], -1)


def flops(module: nn.Module, example: torch.Tensor) -> float:
    """GFLOP of one forward pass (PyTorch's FLOP counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(example)
    return counter.get_total_flops() / 1e9


def export_onnx(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str
) -> None:
    """torch.onnx (TorchScript exporter, opset 17), fixed batch 1 as the pack feeds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(partial),
            input_names=[input_name],
            output_names=[output_name],
            opset_version=17,
            dynamo=False,
        )
    partial.replace(path)


def onnx_builder(spec: ModelFile, tiny: bool) -> tuple[nn.Module, torch.Tensor, str, str]:
    torch.manual_seed(1234)
    if spec.builder == "vitpose_onnx":
        net = ViTPose(VITPOSE_TINY if tiny else VITPOSE_L)
        # Random BatchNorm statistics keep the heatmaps finite and varied.
        return net, torch.rand(1, 3, *POSE_INPUT), "input", "heatmaps"
    if spec.builder == "yolo_onnx":
        sizes = YOLO_TINY if tiny else YOLO_M
        return YoloLike(sizes["widths"], sizes["depths"]), torch.rand(1, 3, 640, 640), "images", "output0"
    raise ValueError(spec.builder)


def onnx_signature(path: Path) -> dict[str, Any]:
    """Inputs and outputs (name, shape, type) as onnxruntime reads the file, as the pack's wrappers do."""
    try:
        import onnxruntime
    except ImportError:
        return {}
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def describe(args: Any) -> list[dict[str, Any]]:
        return [{"name": a.name, "shape": list(a.shape), "type": a.type} for a in args]

    return {"inputs": describe(session.get_inputs()), "outputs": describe(session.get_outputs())}


def make_onnx(spec: ModelFile, models_dir: Path, *, tiny: bool, reuse: bool = True) -> dict[str, Any]:
    path = models_dir / spec.folder / spec.name
    net, example, input_name, output_name = onnx_builder(spec, tiny)
    record: dict[str, Any] = {
        "file": spec.name,
        "builder": spec.builder,
        "params_M": round(sum(p.numel() for p in net.parameters()) / 1e6, 1),
        "gflop_per_call": round(flops(net.eval(), example), 1),
    }
    if reuse and path.is_file():
        return {**record, "reused": True, "GB": round(path.stat().st_size / 1e9, 3), **onnx_signature(path)}
    started = time.perf_counter()
    export_onnx(net, example, path, input_name, output_name)
    record.update(onnx_signature(path))
    return {
        **record,
        "GB": round(path.stat().st_size / 1e9, 3),
        "write_s": round(time.perf_counter() - started, 1),
    }


# ------------------------------------------------------------------ SAM2, from the pack's own code

SAM2_CONFIGS = {"base_plus": "sam2.1_hiera_b+.yaml", "large": "sam2.1_hiera_l.yaml",
                "small": "sam2.1_hiera_s.yaml", "tiny": "sam2.1_hiera_t.yaml"}  # fmt: skip


class _Captured(Exception):
    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__("state captured")
        self.state = state


def sam2_pack_module(name: str) -> Any:
    """The pack's ``load_model`` module, as ComfyUI imported it (module names are folder paths)."""
    for module_name, module in list(sys.modules.items()):
        if not module_name.endswith(".load_model"):
            continue
        if all(hasattr(module, a) for a in ("load_model", "load_torch_file", "SAM2VideoPredictor")):
            return module
    raise RuntimeError(f"{name}: the segment-anything-2 pack is not loaded (--packs / --custom-nodes)")


@contextlib.contextmanager
def _capture_state(cls: type) -> Iterator[None]:
    def capture(self: nn.Module, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        raise _Captured({k: v.detach().clone() for k, v in self.state_dict().items()})

    cls.load_state_dict = capture  # type: ignore[method-assign]
    try:
        yield
    finally:
        del cls.load_state_dict


def sam2_state(model_name: str) -> dict[str, torch.Tensor]:
    """The state dict of the model the pack's loader builds for ``model_name`` (video segmentor)."""
    module = sam2_pack_module(model_name)
    size = next(key for key in SAM2_CONFIGS if key in model_name)
    config = Path(module.__file__).parent / "sam2_configs" / SAM2_CONFIGS[size]
    original = module.load_torch_file
    module.load_torch_file = lambda *_args, **_kwargs: {}
    try:
        with _capture_state(module.SAM2VideoPredictor):
            module.load_model("unused", str(config), "video", torch.float32, torch.device("cpu"))
    except _Captured as captured:
        return captured.state
    finally:
        module.load_torch_file = original
    raise RuntimeError("segment-anything-2's load_model did not load a state dict")


def make_sam2(spec: ModelFile, models_dir: Path, *, reuse: bool = True) -> dict[str, Any]:
    from bench.gpu.weights import write_safetensors

    path = models_dir / spec.folder / spec.name
    if reuse and path.is_file():
        return {
            "file": spec.name,
            "builder": spec.builder,
            "reused": True,
            "GB": round(path.stat().st_size / 1e9, 3),
        }
    started = time.perf_counter()
    dtype = torch.float16 if spec.name.endswith("-fp16.safetensors") else torch.float32
    state = sam2_state(spec.name)
    items = [
        (
            key,
            tuple(value.shape),
            dtype if value.is_floating_point() else value.dtype,
            lambda v=value: v.to(dtype) if v.is_floating_point() else v,
        )
        for key, value in state.items()
    ]
    size = write_safetensors(path, items)
    params = sum(math.prod(v.shape) for v in state.values())
    logging.info("wrote %s: %d tensors, %.1f M values", path, len(state), params / 1e6)
    return {
        "file": spec.name,
        "builder": spec.builder,
        "tensors": len(state),
        "params_M": round(params / 1e6, 1),
        "GB": round(size / 1e9, 3),
        "write_s": round(time.perf_counter() - started, 1),
    }


def make(spec: ModelFile, models_dir: Path, *, tiny: bool, reuse: bool = True) -> dict[str, Any]:
    if spec.builder == "sam2":
        return make_sam2(spec, models_dir, reuse=reuse)
    return make_onnx(spec, models_dir, tiny=tiny, reuse=reuse)
