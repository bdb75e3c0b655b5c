"""The kernel backends (fa4, fa3): loading them, and putting one in front of ComfyUI's SDPA.

ComfyUI's ``attention_pytorch`` calls ``comfy.ops.scaled_dot_product_attention(q, k, v, ...)`` with
(batch, heads, tokens, head_dim) views of (batch, tokens, heads, head_dim) tensors, looked up at
every call. ``install`` replaces that function with a ``Dispatch``: a call the kernel can take (no
mask, not causal, no dropout or GQA, q/k/v of the dtype and head size the probe ran, fp16 and 128,
on CUDA) goes to the kernel, without a copy (it reads the tokens-major layout the views come from);
every other call goes to ComfyUI's function, which applies the SDPA priority. If the kernel raises
on a call it was given, that kind of call goes to SDPA from then on and the worker logs it once.

* ``fa4``: flash-attn-4 (``flash_attn.cute.flash_attn_func``), FlashAttention in NVIDIA's CuTe DSL
  for sm_80-sm_120, compiled at first use; fp16 and bf16.
* ``fa3``: fa3-fwd (``fa3_fwd_interface.flash_attn_func``), FlashAttention-3's forward prebuilt for
  Hopper. Its wheel is built without fp16 kernels (``FLASHATTENTION_DISABLE_FP16``), so fp16 inputs
  are cast to bf16 and the output back (the probe measures what that costs in accuracy).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
from collections.abc import Callable
from typing import Any

from .accuracy import Attend

PACKAGES = {"fa4": "flash-attn-4", "fa3": "fa3-fwd"}
SDPA_KEYWORDS = {"attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"}


def load(name: str) -> Attend:
    """The kernel as ``attend(q, k, v, scale)`` on (batch, tokens, heads, head_dim); raises when it
    cannot be imported (not installed, built for another torch or CUDA, ...)."""
    if name == "fa4":
        flash_attn_func = importlib.import_module("flash_attn.cute").flash_attn_func

        def attend_fa4(q: Any, k: Any, v: Any, scale: float | None) -> Any:
            out = flash_attn_func(q, k, v, softmax_scale=scale)
            return out[0] if isinstance(out, tuple) else out

        return attend_fa4
    if name == "fa3":
        flash_attn_func = importlib.import_module("fa3_fwd_interface").flash_attn_func

        def attend_fa3(q: Any, k: Any, v: Any, scale: float | None) -> Any:
            import torch

            dtype = q.dtype
            if dtype != torch.bfloat16:
                q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
            out = flash_attn_func(q, k, v, softmax_scale=scale)
            out = out[0] if isinstance(out, tuple) else out
            return out.to(dtype)

        return attend_fa3
    raise ValueError(f"unknown kernel backend {name!r}")


def version(name: str) -> str:
    try:
        return f"{PACKAGES[name]} {importlib.metadata.version(PACKAGES[name])}"
    except (KeyError, importlib.metadata.PackageNotFoundError):
        return PACKAGES.get(name, name)


class Dispatch:
    """``comfy.ops.scaled_dot_product_attention`` with a kernel in front (see the module doc)."""

    def __init__(
        self,
        name: str,
        attend: Attend,
        original: Callable[..., Any],
        *,
        head_dims: frozenset[int],
        dtypes: frozenset[Any],
        device_type: str = "cuda",
    ) -> None:
        self.name = name
        self.attend = attend
        self.wan_worker_original = original
        self.head_dims = head_dims
        self.dtypes = dtypes
        self.device_type = device_type
        self.refused: set[tuple[str, int]] = set()  # (dtype, head_dim) the kernel raised on
        self.calls = {"kernel": 0, "sdpa": 0}

    def takes(self, q: Any, k: Any, v: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if args or set(kwargs) - SDPA_KEYWORDS:
            return False
        if kwargs.get("attn_mask") is not None or kwargs.get("dropout_p") or kwargs.get("is_causal"):
            return False
        if kwargs.get("enable_gqa") or q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
            return False
        if not (q.dtype == k.dtype == v.dtype) or q.dtype not in self.dtypes:
            return False
        if q.device.type != self.device_type or (str(q.dtype), q.shape[-1]) in self.refused:
            return False
        same_dims = q.shape[-1] == k.shape[-1] == v.shape[-1] and q.shape[-1] in self.head_dims
        return same_dims and q.shape[:2] == k.shape[:2] == v.shape[:2] and k.shape[2] == v.shape[2]

    def __call__(self, q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
        if self.takes(q, k, v, args, kwargs):
            try:
                out = self.attend(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), kwargs.get("scale")
                )
            except Exception as exc:
                self.refused.add((str(q.dtype), q.shape[-1]))
                logging.warning(
                    "wan_worker_attention: %s raised on %s %s (%s: %s); such calls use SDPA from now on",
                    self.name,
                    tuple(q.shape),
                    q.dtype,
                    type(exc).__name__,
                    str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "",
                )
            else:
                self.calls["kernel"] += 1
                return out.transpose(1, 2)
        self.calls["sdpa"] += 1
        return self.wan_worker_original(q, k, v, *args, **kwargs)


def install(ops: Any, name: str | None, attend: Attend | None, **dispatch: Any) -> None:
    """Puts the kernel in front of ``ops.scaled_dot_product_attention``, or (name None) takes any
    kernel put there before away again."""
    current = ops.scaled_dot_product_attention
    original = getattr(current, "wan_worker_original", current)
    if name is None or attend is None:
        ops.scaled_dot_product_attention = original
        return
    ops.scaled_dot_product_attention = Dispatch(name, attend, original, **dispatch)


def installed(ops: Any) -> str | None:
    return getattr(ops.scaled_dot_product_attention, "name", None) if _is_dispatch(ops) else None


def _is_dispatch(ops: Any) -> bool:
    return hasattr(ops.scaled_dot_product_attention, "wan_worker_original")
