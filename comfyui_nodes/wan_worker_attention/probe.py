"""Reads, from inside a running ComfyUI, the facts the backend choice depends on, and applies it."""

from __future__ import annotations

import importlib
import logging
from typing import Any

from .selection import Choice, Facts

# SDPBackend member for each of our names.
SDPA_MEMBERS = {
    "flash": "FLASH_ATTENTION",
    "cudnn": "CUDNN_ATTENTION",
    "efficient": "EFFICIENT_ATTENTION",
    "math": "MATH",
}


def read_facts() -> Facts:
    import comfy.ldm.modules.attention as comfy_attention
    import comfy.model_management as mm
    import comfy.ops
    import torch

    device = mm.get_torch_device()
    cuda = getattr(device, "type", None) == "cuda" and torch.cuda.is_available()
    capability = tuple(torch.cuda.get_device_capability(device)) if cuda else None
    return Facts(
        cuda=cuda,
        capability=capability,  # type: ignore[arg-type]
        sdpa_priority_settable=isinstance(getattr(comfy.ops, "SDPA_BACKEND_PRIORITY", None), list),
        sdpa_backends=frozenset(sdpa_kernels_that_run(torch, device) if cuda else ()),
        comfy_attention=getattr(comfy_attention.optimized_attention, "__name__", "unknown"),
        sage_error=import_error("sageattention"),
    )


def import_error(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except Exception as exc:  # any failure (missing CUDA libraries too) means "not usable"
        return f"{type(exc).__name__}: {exc}"
    return None


def sdpa_kernels_that_run(torch: Any, device: Any) -> list[str]:
    """SDPA kernels that run a small fp16 attention at Wan's head size (128) on this GPU.

    Whether PyTorch *has* a kernel says little (flash needs sm_80+, cuDNN's fused attention a recent
    cuDNN): one call each, restricted to that kernel, is the reliable test.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn((1, 2, 256, 128), device=device, dtype=torch.float16)
    usable = []
    for name, member in SDPA_MEMBERS.items():
        backend = getattr(SDPBackend, member, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel([backend]):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            torch.cuda.synchronize(device)
        except RuntimeError as exc:
            logging.debug("wan_worker_attention: SDPA %s kernel unusable: %s", name, exc)
            continue
        usable.append(name)
    return usable


def apply(choice: Choice) -> None:
    """Puts the chosen order into ComfyUI's SDPA priority list, which its wrapper reads at every call.

    The list is reordered in place: it already holds every SDPBackend member ComfyUI uses.
    """
    import comfy.ops

    priority = getattr(comfy.ops, "SDPA_BACKEND_PRIORITY", None)
    if choice.sdpa_order is None or not isinstance(priority, list):
        return
    by_name = {member.name: member for member in priority}
    wanted = [by_name[SDPA_MEMBERS[name]] for name in choice.sdpa_order if SDPA_MEMBERS[name] in by_name]
    priority[:] = wanted + [member for member in priority if member not in wanted]


def current_order() -> list[str] | None:
    import comfy.ops

    priority = getattr(comfy.ops, "SDPA_BACKEND_PRIORITY", None)
    if not isinstance(priority, list):
        return None
    names = {member: name for name, member in SDPA_MEMBERS.items()}
    return [names.get(member.name, member.name) for member in priority]
