#!/usr/bin/env python3
"""Attention kernels on the GPU at the workflow's shape: the node's own probe per backend, timed.

    python bench/gpu/attention_probe.py --out OUT [--backends cudnn,flash,sage,fa4,fa3] [--calls 5]

For each backend: ``probe.attend_function`` (what the node would run) and ``accuracy.run_probe`` at
75,600 tokens x 40 heads x 128, fp16, against float64 math attention (max abs error, smallest
per-row cosine; the node's thresholds), the first call (JIT compilation included: fa4 compiles at
first use) and the median of ``--calls`` more, and the torch allocator's peak. No ComfyUI and no
model: the attention alone. The sampler step per backend is gpu_bench.py --mode compare.
Writes OUT/attention.json and OUT/attention.md; prints the table with the GPU, torch, CUDA and driver.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "comfyui_nodes" / "wan_worker_attention"
PACKAGE = "wan_worker_attention"
BACKENDS = ("cudnn", "flash", "sage", "fa4", "fa3")
PACKAGES = ("torch", "flash-attn-4", "nvidia-cutlass-dsl", "fa3-fwd", "sageattention", "cuda-bindings")


def node_module(name: str) -> ModuleType:
    """A module of the attention node's package, imported without its __init__ (which needs ComfyUI)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, NODE_DIR / "__init__.py")
        assert spec is not None
        sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{PACKAGE}.{name}")


def environment(torch: Any) -> dict[str, Any]:
    def version(package: str) -> str | None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None

    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        smi = f"nvidia-smi: {exc}"
    return {
        "gpu": torch.cuda.get_device_name(),
        "capability": "sm_{}{}".format(*torch.cuda.get_device_capability()),
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "python": sys.version.split()[0],
        "packages": {p: version(p) for p in PACKAGES},
    }


def measure(torch: Any, backend: str, calls: int) -> dict[str, Any]:
    accuracy, probe = node_module("accuracy"), node_module("probe")
    shape = accuracy.WAN_WINDOW
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        attend = probe.attend_function(backend)
    except Exception as exc:
        result = node_module("selection").Probe(backend, False, "load", f"{type(exc).__name__}: {exc}")
        return {"backend": backend, "probe": result.as_dict(), "summary": result.summary()}
    result = accuracy.run_probe(
        torch, backend, attend, shape=shape, device="cuda", synchronize=torch.cuda.synchronize
    )
    row: dict[str, Any] = {"backend": backend, "probe": result.as_dict(), "summary": result.summary()}
    if result.stage in ("passed", "numerics"):
        q, k, v, _ = accuracy.make_inputs(torch, shape, "cuda", torch.float16)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            attend(q, k, v, None)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        flops = 4 * shape.batch * shape.heads * shape.tokens**2 * shape.head_dim
        row["call_s_median"] = statistics.median(times)
        row["tflops"] = flops / row["call_s_median"] / 1e12
        del q, k, v
    row["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return row


def render(env: dict[str, Any], rows: list[dict[str, Any]], label: str) -> str:
    lines = [
        f"{env['gpu']} ({env['capability']}; {env['nvidia_smi']}), PyTorch {env['torch']}, "
        f"CUDA {env['cuda']}, cuDNN {env['cudnn']}, Python {env['python']}; {label}",
        "packages: " + ", ".join(f"{p} {v}" for p, v in env["packages"].items() if v),
        "",
        "| backend | probe | max abs err | min cosine | first call s | call s (median) | TFLOP/s "
        "| peak GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        probe = row["probe"]

        def num(value: Any, digits: int) -> str:
            return "–" if value is None else f"{value:.{digits}f}"

        lines.append(
            f"| {row['backend']} | {row['summary'] if not probe['ok'] else 'passed'} | "
            f"{num(probe['max_abs_err'], 4)} | {num(probe['min_cosine'], 6)} | "
            f"{num(probe['first_call_s'], 2)} | "
            f"{num(row.get('call_s_median'), 4)} | {num(row.get('tflops'), 0)} | "
            f"{num(row.get('peak_allocated_gib'), 1)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--calls", type=int, default=5, help="timed calls after the probe's two")
    parser.add_argument(
        "--label", default="", help="a word for this run in the output names (e.g. warm-cache)"
    )
    opts = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("attention_probe: no CUDA device", flush=True)
        return 2
    opts.out.mkdir(parents=True, exist_ok=True)
    env = environment(torch)
    rows = []
    for backend in [b.strip() for b in opts.backends.split(",") if b.strip()]:
        rows.append(measure(torch, backend, opts.calls))
        print(f"{backend}: {rows[-1]['summary']}", flush=True)
    suffix = f"-{opts.label}" if opts.label else ""
    table = render(env, rows, opts.label or "cold caches")
    (opts.out / f"attention{suffix}.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    (opts.out / f"attention{suffix}.md").write_text(table + "\n")
    print("\n" + table, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
