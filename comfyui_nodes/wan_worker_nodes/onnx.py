"""``OnnxDetectionModelLoaderChecked``: WanAnimatePreprocess's ``OnnxDetectionModelLoader``, with
the execution provider of every session it creates checked, and reported.

The pack's loader creates ViTPose and YOLO sessions with ``[onnx_device, "CPUExecutionProvider"]``,
and ``PoseAndFaceDetection`` re-creates them (``reinit``) at every run. ONNX Runtime falls back to
the CPU without an error when CUDA fails, so after each creation this node reads
``session.get_providers()``: CUDA asked for on a GPU machine and not given is an error naming the
model (onnx_providers.session_problem); on a CPU-only machine it is reported, not refused.

What the process can do is probed once at import (onnx_providers.probe: a CUDA session on a
one-node in-memory model) and served with the sessions seen since at ``GET /wan_worker/onnx``:

    {"onnxruntime": "1.22.0", "available_providers": [...], "session_providers": [...],
     "cuda_session_ok": true, "gpu": true, "reason": "...", "sessions": {"vitpose": [...], "yolo": [...]}}

The worker refuses to start when ``gpu`` and not ``cuda_session_ok`` (worker/onnx_providers.py)
and puts this report in every result. The pack's class is looked up in ComfyUI's registry when
needed (custom node packs load in folder order), never copied.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from .onnx_providers import probe, session_problem

NODE_ID = "OnnxDetectionModelLoaderChecked"
PACK_CLASS = "OnnxDetectionModelLoader"
ROUTE = "/wan_worker/onnx"
LOG_PREFIX = "wan_worker_nodes.onnx:"

STATE: dict[str, Any] = {}


def pack_class(name: str) -> Any:
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS.get(name)
    if cls is None:
        raise RuntimeError(f"{NODE_ID} runs the pack node {name}, which ComfyUI has not loaded")
    return cls


def check_session(name: str, runner: Any, requested: str) -> list[str]:
    """The providers of ``runner.session``; raises when CUDA was asked for and silently lost."""
    session = getattr(runner, "session", None)
    providers = list(session.get_providers()) if session is not None else []
    STATE.setdefault("sessions", {})[name] = providers
    problem = session_problem(requested, providers, bool(STATE.get("gpu")))
    if problem:
        logging.error("%s %s: %s", LOG_PREFIX, name, problem)
        raise RuntimeError(f"{name}: {problem}")
    if requested not in providers:
        logging.warning(
            "%s %s asked for %s, runs on %s (no GPU here)", LOG_PREFIX, name, requested, providers
        )
    return providers


def _checked_reinit(name: str, runner: Any, original: Any, requested: str, *args: Any, **kwargs: Any) -> Any:
    result = original(*args, **kwargs)
    check_session(name, runner, requested)
    return result


class OnnxDetectionModelLoaderChecked:
    WRAPS_PACK_CLASS = PACK_CLASS
    RETURN_TYPES = ("POSEMODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "loadmodel"
    CATEGORY = "WanAnimatePreprocess"
    DESCRIPTION = (
        "OnnxDetectionModelLoader, failing instead of silently running on the CPU when CUDA was asked "
        "for on a GPU machine; the providers in use are served at GET /wan_worker/onnx."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return pack_class(PACK_CLASS).INPUT_TYPES()

    def loadmodel(self, vitpose_model: str, yolo_model: str, onnx_device: str) -> tuple[Any, ...]:
        pack = pack_class(PACK_CLASS)
        (model,) = getattr(pack(), pack.FUNCTION)(
            vitpose_model=vitpose_model, yolo_model=yolo_model, onnx_device=onnx_device
        )
        for name, runner in model.items():
            if not hasattr(runner, "session"):
                continue  # not an ONNX Runtime model (a benchmark's stand-in)
            check_session(name, runner, onnx_device)
            # PoseAndFaceDetection re-creates the sessions at every run: check each one.
            original = runner.reinit
            runner.reinit = functools.partial(_checked_reinit, name, runner, original, onnx_device)
        return (model,)


def setup() -> dict[str, Any]:
    try:
        report = probe()
    except Exception as exc:  # never stop ComfyUI over a report
        report = {"cuda_session_ok": False, "gpu": False, "reason": f"probe failed ({exc!r})"}
    report["sessions"] = {}
    STATE.clear()
    STATE.update(report)
    refused = report.get("gpu") and not report.get("cuda_session_ok")
    logging.log(
        logging.ERROR if refused else logging.INFO,
        "%s providers %s, CUDA session %s (%s)",
        LOG_PREFIX,
        report.get("available_providers"),
        "ok" if report.get("cuda_session_ok") else "not possible",
        report.get("reason"),
    )
    return report


def register_route() -> bool:
    """Adds GET /wan_worker/onnx to ComfyUI's server; False when there is no server (a bench)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except Exception:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False

    @instance.routes.get(ROUTE)
    async def onnx_in_use(request: Any) -> Any:
        body = dict(STATE)
        body["sessions"] = dict(STATE.get("sessions", {}))
        return web.json_response(body)

    return True
