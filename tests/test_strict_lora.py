"""A LoRA whose keys do not all patch the model fails loudly (comfyui_nodes/wan_worker_nodes/lora.py).

Always (CI): the key accounting of lora_keys.py on LoRA files written in the safetensors format at
test time, and the worker's mapping of the node's exception to WORKFLOW_INVALID.

With a ComfyUI checkout (``WAN_BENCH_COMFYUI`` + ``WAN_BENCH_PYTHON``, as tests/test_gpu_bench_cpu.py):
the node itself inside the pinned ComfyUI on a toy Wan2.2 Animate DiT (tests/comfy_core/strict_lora.py).
"""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.gpu.weights import Item, write_safetensors
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from tests.support.nodes import load_node_module
from worker.comfy_client import _generation_error
from worker.errors import ErrorCode

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "comfyui_nodes" / "wan_worker_nodes"
# As ComfyUI 0.33.0 reports it: the module ComfyUI's loader gave the package, then the class.
EXCEPTION_TYPE = "custom_nodes.wan_worker_nodes.lora_keys.LoraKeysNotMatchedError"


lora_keys = load_node_module("lora_keys.py")

# A Wan block's Linears and the model keys ComfyUI's model_lora_keys_unet maps them to (generic format).
MODULES = [f"blocks.{b}.{part}" for b in range(2) for part in ("self_attn.q", "cross_attn.k", "ffn.0")]
KEY_MAP = {f"diffusion_model.{m}": f"diffusion_model.{m}.weight" for m in MODULES}


def lora_items(prefix: str = "diffusion_model.", rank: int = 2) -> list[Item]:
    items: list[Item] = []
    for module in MODULES:
        base = prefix + module
        items.append((base + ".lora_down.weight", (rank, 8), torch.bfloat16, lambda: torch.ones(rank, 8)))
        items.append((base + ".lora_up.weight", (8, rank), torch.bfloat16, lambda: torch.ones(8, rank)))
        items.append((base + ".alpha", (), torch.float32, lambda: torch.tensor(float(rank))))
    return [(n, s, d, lambda p=p, d=d: p().to(d)) for n, s, d, p in items]


def safetensors_keys(path: Path) -> list[str]:
    """Tensor names from a safetensors header (8-byte little-endian length, then JSON)."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return [k for k in header if k != "__metadata__"]


def read_like_comfy(tensors: Mapping[str, Any], key_map: Mapping[str, str]) -> None:
    """The reads comfy.lora.load_lora makes for the plain LoRA format: for each mapped prefix, alpha
    when present, then up/down when both are present (absent keys are probed with ``in``/``get``)."""
    for prefix in key_map:
        if f"{prefix}.alpha" in tensors:
            tensors[f"{prefix}.alpha"]
        if f"{prefix}.lora_up.weight" in tensors:
            tensors[f"{prefix}.lora_up.weight"], tensors[f"{prefix}.lora_down.weight"]
        tensors.get(f"{prefix}.diff")


def report_for(path: Path) -> Any:
    keys = safetensors_keys(path)
    recorder = lora_keys.KeyReadRecorder({k: None for k in keys})
    read_like_comfy(recorder, KEY_MAP)
    return lora_keys.lora_key_report(path.name, recorder.keys(), recorder.read)


def test_a_lora_in_comfyuis_names_matches_every_key(tmp_path: Path) -> None:
    path = tmp_path / "native.safetensors"
    write_safetensors(path, lora_items())
    report = report_for(path)
    assert (report.matched, report.total, report.ok) == (18, 18, True)
    lora_keys.require_all_keys(report)  # does not raise


def test_bare_block_keys_match_nothing_and_raise_naming_the_file_and_count(tmp_path: Path) -> None:
    path = tmp_path / "wan2.2_animate_14B_relight_lora_bf16.safetensors"
    write_safetensors(path, lora_items(prefix=""))
    report = report_for(path)
    assert (report.matched, report.total, report.ok) == (0, 18, False)
    with pytest.raises(lora_keys.LoraKeysNotMatchedError) as raised:
        lora_keys.require_all_keys(report)
    first, examples, _ = str(raised.value).split("\n")
    assert first.startswith("LoRA 'wan2.2_animate_14B_relight_lora_bf16.safetensors': 0 of 18 keys matched")
    assert examples.startswith("Unmatched keys: blocks.0.cross_attn.k.alpha, ")
    assert "(+13 more)" in examples
    assert type(raised.value).__name__ == lora_keys.ERROR_NAME


def test_one_unmatched_key_is_enough_to_refuse(tmp_path: Path) -> None:
    path = tmp_path / "partial.safetensors"
    extra: Item = ("diffusion_model.blocks.0.diff_m", (6, 8), torch.float32, lambda: torch.zeros(6, 8))
    write_safetensors(path, [*lora_items(), extra])
    report = report_for(path)
    assert (report.matched, report.total, report.unmatched) == (18, 19, ("diffusion_model.blocks.0.diff_m",))
    assert "18 of 19 keys matched" in report.message()


def test_an_empty_lora_is_refused() -> None:
    report = lora_keys.lora_key_report("empty.safetensors", [], [])
    assert not report.ok
    assert report.message().startswith("LoRA 'empty.safetensors': 0 of 0 keys matched")


def test_the_recorder_counts_reads_not_probes() -> None:
    recorder = lora_keys.KeyReadRecorder({"a": 1, "b": 2, "c": 3})
    assert "a" in recorder and list(recorder.keys()) == ["a", "b", "c"]
    assert recorder["b"] == 2 and recorder.get("c") == 3 and recorder.get("missing") is None
    with pytest.raises(KeyError):
        recorder["gone"]
    assert recorder.read == {"b", "c"}


def event_for(message: str, exception_type: str = EXCEPTION_TYPE) -> dict[str, Any]:
    return {
        "node_id": "22",
        "node_type": "StrictLoraLoaderModelOnly",
        "exception_type": exception_type,
        "exception_message": message + "\n",
    }


def test_the_worker_maps_the_node_error_to_workflow_invalid_with_the_counts() -> None:
    report = lora_keys.lora_key_report("relight.safetensors", ["blocks.0.x.alpha", "y.alpha"], ["y.alpha"])
    error = _generation_error(event_for(report.message()), "prompt-1")
    assert error.code is ErrorCode.WORKFLOW_INVALID
    assert error.refresh_worker is False
    assert error.message.startswith("LoRA 'relight.safetensors': 1 of 2 keys matched the model")
    assert "node 22" in error.message and "models/manifest.json" in error.message
    assert error.details["lora_name"] == "relight.safetensors"
    assert (error.details["keys_matched"], error.details["keys_total"]) == (1, 2)
    assert "blocks.0.x.alpha" in error.details["exception_message"]


def test_other_node_errors_stay_generation_failed() -> None:
    error = _generation_error(event_for("LoRA 'x': 0 of 1 keys matched", "builtins.KeyError"), "p")
    assert error.code is ErrorCode.GENERATION_FAILED


# ------------------------------------------------------------------ with ComfyUI (never in CI)


@needs_comfy
@pytest.mark.timeout(600)
def test_the_node_in_the_pinned_comfyui_on_a_toy_wan_animate_model() -> None:
    command = [COMFY_PYTHON, str(REPO / "tests" / "comfy_core" / "strict_lora.py"), "--comfy", str(COMFY)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=580, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["model_class"] == "WAN22_Animate"
    assert not out["key_map_maps_bare_blocks"] and not out["key_map_maps_peft"]
    files = out["files"]

    native = files["native.safetensors"]
    assert native["raised"] is None
    assert native["matched"] == native["total"] == native["keys"]
    # every LoRA module and every .diff/.diff_b delta patched one model weight
    assert native["weights_patched"] == native["lora_modules"] + native["diff_patches"] > 0

    for name in ("bare.safetensors", "peft.safetensors"):
        assert files[name]["raised"] == "LoraKeysNotMatchedError"
        assert files[name]["message"].startswith(f"LoRA '{name}': 0 of {files[name]['keys']} keys matched")
    partial = files["partial.safetensors"]
    assert partial["raised"] == "LoraKeysNotMatchedError"
    assert f"{partial['keys'] - 1} of {partial['keys']} keys matched" in partial["message"]
    assert "Unmatched keys: diffusion_model.blocks.0.diff_m." in partial["message"]

    assert out["core_bare_weights_patched"] == 0  # what the core node does: nothing, and no error

    executor = out["executor"]
    assert executor["success"] is False
    error = _generation_error(executor["event"], "prompt-1")
    assert error.code is ErrorCode.WORKFLOW_INVALID
    assert (error.details["lora_name"], error.details["keys_matched"]) == ("bare.safetensors", 0)
    assert error.details["keys_total"] == files["bare.safetensors"]["keys"]
