"""Reads, from inside a running ComfyUI, the facts the backend choice depends on, probes the backends
on the workflow's attention shape (accuracy.py), and applies the choice."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from . import accuracy, kernels
from .selection import KERNEL_BACKENDS, Choice, Facts, Probe

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
        device_name=torch.cuda.get_device_name(device) if cuda else None,
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


# What each backend's probe already found in this process (a later setup() does not run it again).
PROBED: dict[str, Probe] = {}
# The kernel functions loaded by their probes, for apply().
LOADED: dict[str, accuracy.Attend] = {}


def make_prober(shape: accuracy.Shape = accuracy.WAN_WINDOW) -> Callable[[str], Probe]:
    """probe(backend): loads it, runs it on ``shape`` on ComfyUI's device, compares it with math
    attention; once per backend and process. Never raises: any failure is the probe's result."""

    def probe(backend: str) -> Probe:
        if backend not in PROBED:
            try:
                PROBED[backend] = _probe(backend, shape)
            except Exception as exc:  # a probe must never stop ComfyUI
                PROBED[backend] = Probe(
                    backend, False, "shape", f"the probe failed: {type(exc).__name__}: {exc}"
                )
            finally:
                _release_memory()
            result = PROBED[backend]
            logging.log(
                logging.INFO if result.ok else logging.WARNING,
                "wan_worker_attention: probe %s: %s",
                backend,
                result.summary(),
            )
        return PROBED[backend]

    return probe


def _probe(backend: str, shape: accuracy.Shape) -> Probe:
    import comfy.model_management as mm
    import torch

    device = mm.get_torch_device()
    try:
        attend = attend_function(backend)
    except Exception as exc:  # ImportError, OSError (a missing shared library), undefined symbols, ...
        return Probe(backend, False, "load", f"{type(exc).__name__}: {exc}")
    result = accuracy.run_probe(
        torch, backend, attend, shape=shape, device=device, synchronize=lambda: torch.cuda.synchronize(device)
    )
    if result.ok and backend in KERNEL_BACKENDS:
        LOADED[backend] = attend
    return result


def attend_function(backend: str) -> accuracy.Attend:
    """The backend as attend(q, k, v, scale) on (batch, tokens, heads, head_dim), as ComfyUI would
    run it: an SDPA kernel alone (no fallback to another), sage as ComfyUI calls it, or a kernel."""
    import torch

    if backend in KERNEL_BACKENDS:
        return kernels.load(backend)
    if backend == "sage":
        from sageattention import sageattn

        def attend_sage(q: Any, k: Any, v: Any, scale: float | None) -> Any:
            return sageattn(q, k, v, tensor_layout="NHD", is_causal=False, sm_scale=scale)

        return attend_sage
    from torch.nn.attention import SDPBackend, sdpa_kernel

    member = getattr(SDPBackend, SDPA_MEMBERS[backend])

    def attend_sdpa(q: Any, k: Any, v: Any, scale: float | None) -> Any:
        with sdpa_kernel([member]):
            out = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale
            )
        return out.transpose(1, 2)

    return attend_sdpa


def _release_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def apply(choice: Choice, shape: accuracy.Shape = accuracy.WAN_WINDOW) -> None:
    """Applies the choice to ComfyUI: its SDPA priority list (read at every call), the kernel put in
    front of SDPA or taken away, and sage unbound from Wan's modules when it failed its probe.

    The list is reordered in place: it already holds every SDPBackend member ComfyUI uses.
    """
    import comfy.ops

    if choice.unbind_sage:
        unbind_sage()
    attend = LOADED.get(choice.kernel) if choice.kernel else None
    if choice.kernel and attend is None:  # a choice made without a probe (tests of the rules, a bench)
        attend = attend_function(choice.kernel)
    if attend is not None:
        import torch

        probed = {"head_dims": frozenset({shape.head_dim}), "dtypes": frozenset({torch.float16})}
        kernels.install(comfy.ops, choice.kernel, attend, **probed)
    else:
        kernels.install(comfy.ops, None, None)
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


def unbind_sage() -> None:
    """Wan's modules back on PyTorch attention (they bound ComfyUI's attention function when imported,
    which --use-sage-attention made sage's); ComfyUI's own default is switched as well."""
    import comfy.ldm.modules.attention as attention

    pytorch = attention.attention_pytorch
    for name in ("comfy.ldm.wan.model", "comfy.ldm.wan.model_animate", "comfy.ldm.modules.attention"):
        module = importlib.import_module(name)
        if getattr(getattr(module, "optimized_attention", None), "__name__", None) == "attention_sage":
            module.optimized_attention = pytorch
