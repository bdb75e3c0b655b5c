"""The ONNX Runtime providers pose detection runs with, as reported by this repository's node.

``comfyui_nodes/wan_worker_nodes/onnx.py`` probes, inside ComfyUI's process (the one that runs
pose detection, with its own CUDA libraries loaded), whether a session asking for CUDA gets it,
and serves that with the providers of every session the pose loader created since at
``GET /wan_worker/onnx``. The worker reads it at start, refuses to start when the machine has an
NVIDIA GPU and ONNX Runtime cannot create a CUDA session (``start_refusal``), and puts the report
in every result. A ComfyUI without the node (the fake one) answers 404: "unknown" (None), never a
refusal; the node itself still fails a job whose sessions lost CUDA on a GPU machine.
"""

from __future__ import annotations

from typing import Any

from worker.attention import node_report

ROUTE = "/wan_worker/onnx"


def providers_in_use(comfy_url: str, *, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The node's report, or None when ComfyUI does not give one."""
    body = node_report(comfy_url, ROUTE, timeout_s=timeout_s)
    if body is None:
        return None
    if not isinstance(body.get("gpu"), bool) or not isinstance(body.get("cuda_session_ok"), bool):
        return None
    if not isinstance(body.get("available_providers"), list) or not isinstance(body.get("reason"), str):
        return None
    return body


def start_refusal(report: dict[str, Any] | None) -> str | None:
    """Why the worker must not start with this report; None when it may.

    An NVIDIA GPU (ComfyUI's torch sees CUDA, or /dev/nvidia* exists) and no CUDA session is a
    refusal: every job's pose detection would run on the CPU for minutes. A CPU-only machine, or
    no report at all, is not."""
    if report is None or not report.get("gpu") or report.get("cuda_session_ok"):
        return None
    return (
        "an NVIDIA GPU is present but ONNX Runtime in ComfyUI cannot create a CUDA session "
        f"({report.get('reason')}; available providers: {report.get('available_providers')}); pose "
        "detection would silently run on the CPU for minutes per clip. Install onnxruntime-gpu "
        "built for this CUDA/cuDNN (see the Dockerfile)"
    )
