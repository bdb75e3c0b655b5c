#!/usr/bin/env python3
"""At image build, without a GPU: compile flash-attn-4's kernel for the workflow's attention into its
on-disk cache, so the attention probe at ComfyUI's start loads it instead of compiling.

    python prewarm_fa4.py --node-dir /comfyui/custom_nodes/wan_worker_attention [--arch sm_90]

FA4 compiles with fake tensors (torch's FakeTensorMode) for an architecture named by
FLASH_ATTENTION_ARCH / CUTE_DSL_ARCH instead of the GPU's; with FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED=1
it exports the kernel to FLASH_ATTENTION_CUTE_DSL_CACHE_DIR, under a hash of this Python, the cutlass and
tvm_ffi versions and FA4's sources: the image's own, so the worker finds it. Its compile key has no
sequence length, so the probe's shape (the node's ``accuracy.WAN_WINDOW``, fp16) is the sampler's.
Anything that goes wrong is a warning, not a failed build: the probe then compiles at start.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

# The SM count an architecture's kernels are selected for (only split-KV heuristics read it).
SMS = {"sm_90": 132, "sm_100": 148}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-dir", type=Path, required=True, help="comfyui_nodes/wan_worker_attention")
    parser.add_argument("--arch", choices=sorted(SMS), default="sm_90")
    opts = parser.parse_args(argv)
    if os.environ.get("FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED") != "1":
        print("prewarm_fa4: WARNING: FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED is not 1: nothing would be kept")
        return 0
    os.environ["FLASH_ATTENTION_ARCH"] = opts.arch
    os.environ["CUTE_DSL_ARCH"] = f"{opts.arch}a"
    os.environ["FLASH_ATTENTION_NUM_SMS"] = str(SMS[opts.arch])
    try:
        seconds, cache = compile_window_kernel(opts.node_dir)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        print(f"prewarm_fa4: WARNING: not pre-compiled ({why}); the attention probe compiles it at start")
        return 0
    print(f"prewarm_fa4: fa4 kernel for {opts.arch} compiled in {seconds:.1f} s into {cache}")
    return 0


def compile_window_kernel(node_dir: Path) -> tuple[float, str]:
    package = "wan_worker_attention"
    spec = importlib.util.spec_from_file_location(package, node_dir / "__init__.py")
    assert spec is not None
    sys.modules[package] = importlib.util.module_from_spec(spec)  # its __init__ needs a running ComfyUI
    accuracy = importlib.import_module(f"{package}.accuracy")
    kernels = importlib.import_module(f"{package}.kernels")
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    attend = kernels.load("fa4")
    shape = accuracy.WAN_WINDOW
    size = (shape.batch, shape.tokens, shape.heads, shape.head_dim)
    start = time.perf_counter()
    with FakeTensorMode():
        q, k, v = (torch.empty(size, dtype=torch.float16, device="cuda") for _ in range(3))
        attend(q, k, v, None)
    return time.perf_counter() - start, os.environ.get("FLASH_ATTENTION_CUTE_DSL_CACHE_DIR", "FA4's default")


if __name__ == "__main__":
    sys.exit(main())
