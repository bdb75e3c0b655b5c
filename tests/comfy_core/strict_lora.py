"""Runs inside a real ComfyUI (the pinned checkout, CPU): our StrictLoraLoaderModelOnly on a toy
Wan2.2 Animate DiT (bench/gpu/weights.py, shape-true at toy size) with generated LoRA files:

* ``native``: ComfyUI's native names (``diffusion_model.blocks.N.<linear>.lora_down/up.weight``,
  ``.alpha``) on every block Linear: must patch N of N;
* ``bare``: the same tensors named ``blocks.N...`` (the layout users of the native loader report
  as "lora key not loaded"), ``peft``: ``base_model.model.blocks.N....lora_A/B.weight``
  (the original relight LoRA's PEFT names), ``partial``: ``native`` plus one
  ``diffusion_model.blocks.0.diff_m`` (the modulation delta early lightx2v files carried): must raise;
* the ``bare`` file through ComfyUI's own executor, for the ``execution_error`` event the worker
  receives; and through the core LoraLoaderModelOnly, which patches nothing and raises nothing.

Prints one JSON object. Used by tests/test_strict_lora.py.

    WAN_BENCH_PYTHON tests/comfy_core/strict_lora.py --comfy /path/to/ComfyUI
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.gpu.plan import ModelFile  # noqa: E402
from bench.gpu.runtime import ComfyRuntime  # noqa: E402
from bench.gpu.weights import Item, WeightFactory, write_safetensors  # noqa: E402

DIT = "toy_animate_dit.safetensors"
NATIVE_PREFIX = "diffusion_model."


def renamed(items: list[Item], rename: Any) -> list[Item]:
    return [(rename(name), shape, dtype, produce) for name, shape, dtype, produce in items]


def peft_name(name: str) -> str:
    name = "base_model.model." + name[len(NATIVE_PREFIX) :]
    return name.replace(".lora_down.weight", ".lora_A.weight").replace(".lora_up.weight", ".lora_B.weight")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfy", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="strict-lora-"))
    runtime = ComfyRuntime(args.comfy, cpu=True, work_dir=work)
    runtime.start()
    import comfy.lora
    import folder_paths
    import nodes
    import torch

    runtime.load_custom_node(REPO / "comfyui_nodes" / "wan_worker_nodes")
    strict_cls = nodes.NODE_CLASS_MAPPINGS["StrictLoraLoaderModelOnly"]
    models = work / "models"
    for folder in ("diffusion_models", "loras"):
        folder_paths.add_model_folder_path(folder, str(models / folder), is_default=True)

    factory = WeightFactory(args.comfy, torch.device("cpu"), tiny=True)
    factory.make(ModelFile("diffusion_models", DIT, "dit_bf16"), models)
    layout = factory.dit_layout()

    def zeros(name: str, like: str) -> Item:
        shape = layout[like][0]
        return (name, shape, torch.bfloat16, lambda: torch.zeros(shape, dtype=torch.bfloat16))

    # lightx2v's layout: lora_down/up + alpha on the block Linears, plus full-weight deltas of a
    # norm (.diff) and of a bias (.diff_b), which ComfyUI also loads.
    native = [
        *factory.lora(4, torch.bfloat16),
        zeros(NATIVE_PREFIX + "blocks.0.norm3.diff", "blocks.0.norm3.weight"),
        zeros(NATIVE_PREFIX + "blocks.0.self_attn.q.diff_b", "blocks.0.self_attn.q.bias"),
    ]
    diff_m = zeros(NATIVE_PREFIX + "blocks.0.diff_m", "blocks.0.modulation")
    files = {
        "native.safetensors": native,
        "bare.safetensors": renamed(native, lambda n: n[len(NATIVE_PREFIX) :]),
        "peft.safetensors": [
            item
            for item in renamed(native, peft_name)
            if item[0].endswith(("lora_A.weight", "lora_B.weight"))
        ],
        "partial.safetensors": [*native, diff_m],
    }
    for name, items in files.items():
        write_safetensors(models / "loras" / name, items)

    (model,) = nodes.UNETLoader().load_unet(DIT, "default")
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    out: dict[str, Any] = {
        "model_class": type(model.model).__name__,
        "key_map_maps_bare_blocks": any(k.startswith("blocks.") for k in key_map),
        "key_map_maps_peft": any(k.startswith("base_model.model.") for k in key_map),
        "files": {},
    }
    for name, items in files.items():
        node = strict_cls()
        record: dict[str, Any] = {"keys": len(items)}
        try:
            (patched,) = node.load_lora_model_only(model, name, 1.0)
        except Exception as exc:
            record.update(raised=type(exc).__name__, message=str(exc))
        else:
            report = node.key_report(model, name)
            record.update(
                raised=None,
                matched=report.matched,
                total=report.total,
                weights_patched=len(patched.patches) - len(model.patches),
                lora_modules=sum(1 for item in items if item[0].endswith(".lora_down.weight")),
                diff_patches=sum(1 for item in items if item[0].endswith((".diff", ".diff_b"))),
            )
        out["files"][name] = record

    (core_patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, "bare.safetensors", 1.0)
    out["core_bare_weights_patched"] = len(core_patched.patches) - len(model.patches)

    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": DIT, "weight_dtype": "default"}},
        "2": {
            "class_type": "StrictLoraLoaderModelOnly",
            "inputs": {"model": ["1", 0], "lora_name": "bare.safetensors", "strength_model": 1.0},
        },
    }
    runtime.server.begin(graph)
    runtime.executor.execute(graph, uuid.uuid4().hex, {"client_id": "strict-lora"}, ["2"])
    errors = [m[1] for m in runtime.executor.status_messages if m[0] == "execution_error"]
    out["executor"] = {
        "success": runtime.executor.success,
        "event": {
            k: errors[-1].get(k) for k in ("node_id", "node_type", "exception_type", "exception_message")
        }
        if errors
        else None,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
