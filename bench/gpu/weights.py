"""Shape-true random model files: the key names, shapes and dtypes of the real files, random values.

Each layout is read from ComfyUI's own model classes built on the meta device (nothing is
allocated, nothing downloaded), so ComfyUI's loaders detect and load these files as they do the
real ones and the arithmetic per step is the real model's. The values are random with a sane
scale (activations stay finite through 40 blocks); image quality is meaningless.

Files are streamed tensor by tensor (safetensors' own writers need every tensor in memory at
once: 17 GB for the DiT), generated on the GPU when there is one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.gpu.plan import ModelFile

Producer = Callable[[], torch.Tensor]
Item = tuple[str, tuple[int, ...], torch.dtype, Producer]

SAFETENSORS_DTYPE = {
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float32: "F32",
    torch.uint8: "U8",
    torch.int64: "I64",
    torch.float8_e4m3fn: "F8_E4M3",
}
DIT_FULL = {"dim": 5120, "ffn_dim": 13824, "num_heads": 40, "num_layers": 40}
DIT_TINY = {"dim": 256, "ffn_dim": 512, "num_heads": 2, "num_layers": 5}  # 5: one face-adapter block


class WeightFactory:
    def __init__(self, comfy_dir: Path, device: torch.device, *, tiny: bool, seed: int = 1234) -> None:
        self.comfy_dir = comfy_dir
        self.device = device
        self.tiny = tiny
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    # ------------------------------------------------------------------ values
    def random(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Producer:
        def produce() -> torch.Tensor:
            if len(shape) <= 1 and (name.endswith("weight") or name.endswith("gamma")):
                return torch.ones(shape, dtype=dtype, device=self.device)  # norms
            if len(shape) <= 1 and name.endswith("bias"):
                return torch.zeros(shape, dtype=dtype, device=self.device)
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else max(1, math.prod(shape))
            std = fan_in**-0.5 if len(shape) > 1 else 0.02
            values = torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)
            return (values * std).to(dtype)

        return produce

    def fp8_scaled(self, name: str, shape: tuple[int, ...]) -> list[Item]:
        """ComfyUI's "scaled fp8" layout: e4m3fn weight + fp32 per-tensor scale_weight."""
        scale: dict[str, torch.Tensor] = {}

        def weight() -> torch.Tensor:
            values = torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)
            values *= math.prod(shape[1:]) ** -0.5
            scale["s"] = (values.abs().amax() / 448.0).reshape(1).float()
            return (values / scale["s"]).to(torch.float8_e4m3fn)

        base = name[: -len(".weight")]
        return [
            (name, shape, torch.float8_e4m3fn, weight),
            (base + ".scale_weight", (1,), torch.float32, lambda: scale.pop("s")),
        ]

    # ------------------------------------------------------------------ layouts
    def meta_layout(
        self, build: Callable[[], torch.nn.Module]
    ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        import comfy.memory_management

        # With DynamicVRAM on, comfy.ops layers defer creating weights: build with it off to see every key.
        was = comfy.memory_management.aimdo_enabled
        comfy.memory_management.aimdo_enabled = False
        try:
            with torch.device("meta"):
                module = build()
        finally:
            comfy.memory_management.aimdo_enabled = was
        return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}

    def dit_config(self) -> dict[str, Any]:
        size = DIT_TINY if self.tiny else DIT_FULL
        return dict(
            model_type="animate", patch_size=(1, 2, 2), text_len=512, in_dim=36, freq_dim=256, text_dim=4096,
            out_dim=16, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6,
            image_model="wan2.1", **size,
        )  # fmt: skip

    def dit_layout(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        import comfy.ldm.wan.model_animate as animate
        import comfy.ops

        ops = comfy.ops.disable_weight_init
        return self.meta_layout(
            lambda: animate.AnimateWanModel(**self.dit_config(), dtype=torch.bfloat16, operations=ops)
        )

    @staticmethod
    def is_block_linear(key: str, shape: tuple[int, ...]) -> bool:
        return (
            key.startswith("blocks.")
            and key.endswith(".weight")
            and len(shape) == 2
            and any(part in key for part in (".self_attn.", ".cross_attn.", ".ffn."))
        )

    def dit(self, fp8: bool) -> list[Item]:
        import comfy.ldm.wan.model_animate as animate
        import comfy.ops

        # The motion encoder's Blur kernels are buffers with fixed values: build that small part for real.
        generator = animate.Generator(
            style_dim=512,
            motion_dim=20,
            device="cpu",
            dtype=torch.float32,
            operations=comfy.ops.disable_weight_init,
        )
        buffers = {"motion_encoder." + k: v for k, v in generator.named_buffers()}
        items: list[Item] = []
        for key, (shape, _) in self.dit_layout().items():
            if key in buffers:
                value = buffers[key]
                items.append((key, tuple(value.shape), torch.bfloat16, lambda v=value: v.to(torch.bfloat16)))
            elif fp8 and self.is_block_linear(key, shape):
                items += self.fp8_scaled(key, shape)
            else:
                items.append((key, shape, torch.bfloat16, self.random(key, shape, torch.bfloat16)))
        if fp8:
            # An empty marker: ComfyUI then runs the fp8 matmul path. Which marker the published v2 file
            # carries is not known (shared/GPU_TIMING.md): a 2-element one means full-precision matmuls.
            items.append(
                (
                    "scaled_fp8",
                    (0,),
                    torch.float8_e4m3fn,
                    lambda: torch.zeros((0,), dtype=torch.float8_e4m3fn, device=self.device),
                )
            )
        return items

    def lora(self, rank: int, dtype: torch.dtype) -> list[Item]:
        """A LoRA on every Linear of the DiT blocks (lightx2v's layout; ComfyUI merges it once)."""
        items: list[Item] = []
        for key, (shape, _) in self.dit_layout().items():
            if not self.is_block_linear(key, shape):
                continue
            base = "diffusion_model." + key[: -len(".weight")]
            out_features, in_features = shape
            down, up = (rank, in_features), (out_features, rank)
            items.append((base + ".lora_down.weight", down, dtype, self.random("x.w", down, dtype)))
            items.append((base + ".lora_up.weight", up, dtype, self.random("x.w", up, dtype)))
            items.append((base + ".alpha", (), torch.float32, lambda r=rank: torch.tensor(float(r))))
        return items

    def umt5(self) -> list[Item]:
        """umt5-xxl as umt5_xxl_fp8_e4m3fn_scaled: encoder Linears fp8 + scale, a sentencepiece model."""
        import comfy.ops
        import comfy.text_encoders.t5 as t5

        config = json.loads((self.comfy_dir / "comfy" / "text_encoders" / "umt5_config_xxl.json").read_text())
        layout = self.meta_layout(lambda: t5.T5(config, torch.bfloat16, None, comfy.ops.disable_weight_init))
        items: list[Item] = []
        for key, (shape, _) in layout.items():
            if (
                key.startswith("encoder.block.")
                and key.endswith(".weight")
                and len(shape) == 2
                and "relative_attention_bias" not in key
            ):
                items += self.fp8_scaled(key, shape)
            else:
                items.append((key, shape, torch.bfloat16, self.random(key, shape, torch.bfloat16)))
        items.append(
            (
                "scaled_fp8",
                (0,),
                torch.float8_e4m3fn,
                lambda: torch.zeros((0,), dtype=torch.float8_e4m3fn, device=self.device),
            )
        )
        model = small_sentencepiece_model()
        items.append(("spiece_model", tuple(model.shape), torch.uint8, lambda: model))
        return items

    def clip_vision_h(self) -> list[Item]:
        import comfy.clip_model
        import comfy.ops

        config = json.loads((self.comfy_dir / "comfy" / "clip_vision_config_h.json").read_text())
        layout = self.meta_layout(
            lambda: comfy.clip_model.CLIPVisionModelProjection(
                config, torch.float16, None, comfy.ops.disable_weight_init
            )
        )
        items: list[Item] = []
        for key, (shape, dtype) in layout.items():
            if dtype in (torch.int64, torch.int32):
                items.append((key, shape, torch.int64, lambda s=shape: torch.arange(math.prod(s)).reshape(s)))
            else:
                items.append((key, shape, torch.float16, self.random(key, shape, torch.float16)))
        return items

    def wan_vae(self) -> list[Item]:
        import comfy.ldm.wan.vae as wan_vae

        # ComfyUI reads the VAE's width from the file: --tiny uses a narrow one (96 is Wan 2.1's).
        layout = self.meta_layout(
            lambda: wan_vae.WanVAE(
                dim=16 if self.tiny else 96,
                z_dim=16,
                dim_mult=[1, 2, 4, 4],
                num_res_blocks=2,
                attn_scales=[],
                temperal_downsample=[False, True, True],
                image_channels=3,
                conv_out_channels=3,
                dropout=0.0,
            )
        )
        return [
            (k, shape, torch.bfloat16, self.random(k, shape, torch.bfloat16))
            for k, (shape, _) in layout.items()
        ]

    def items_for(self, spec: ModelFile) -> list[Item]:
        if spec.builder in ("dit_fp8", "dit_bf16"):
            return self.dit(spec.builder == "dit_fp8")
        if spec.builder == "lora":
            return self.lora(
                spec.lora_rank or 64, torch.float16 if spec.lora_dtype == "fp16" else torch.bfloat16
            )
        if spec.builder == "umt5_fp8":
            return self.umt5()
        if spec.builder == "clip_vision_h":
            return self.clip_vision_h()
        if spec.builder == "wan_vae":
            return self.wan_vae()
        raise ValueError(spec.builder)

    # ------------------------------------------------------------------ files
    def make(self, spec: ModelFile, models_dir: Path, *, reuse: bool = True) -> dict[str, Any]:
        path = models_dir / spec.folder / spec.name
        if reuse and path.is_file():
            return {"file": spec.name, "reused": True, "GB": round(path.stat().st_size / 1e9, 3)}
        started = time.perf_counter()
        size = write_safetensors(path, self.items_for(spec))
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        seconds = time.perf_counter() - started
        logging.info("wrote %s: %.2f GB in %.1f s", path, size / 1e9, seconds)
        return {"file": spec.name, "GB": round(size / 1e9, 3), "write_s": round(seconds, 1)}


def write_safetensors(path: Path, items: list[Item]) -> int:
    """Streams the tensors into a .safetensors file (header first); returns the data size in bytes."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape, dtype, _ in items:
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPE[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for name, shape, dtype, produce in items:
            tensor = produce()
            if tensor.dtype != dtype or tuple(tensor.shape) != tuple(shape):
                raise AssertionError(
                    f"{name}: made {tensor.dtype}{tuple(tensor.shape)}, expected {dtype}{shape}"
                )
            out.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy())
    os.replace(partial, path)
    return offset


def small_sentencepiece_model() -> torch.Tensor:
    """A 48-piece sentencepiece model in umt5's id layout (pad 0, eos 1, unk 2): ids index the real
    embedding, and the encoder always runs on 512 padded tokens, so the cost is the real one."""
    import io

    import sentencepiece

    sentence = (
        "a person moving naturally in the scene consistent identity and clothing natural lighting high "
    )
    words = (
        sentence + "quality video blurry low distorted face deformed hands extra limbs flicker watermark"
    ).split(" ")
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(400)]
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buffer,
        vocab_size=48,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        model_type="unigram",
        minloglevel=2,
    )
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).clone()
