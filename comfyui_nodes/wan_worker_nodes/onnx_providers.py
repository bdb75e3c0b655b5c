"""Which ONNX Runtime execution provider pose detection really runs on (no ComfyUI imports).

ONNX Runtime given ``["CUDAExecutionProvider", "CPUExecutionProvider"]`` falls back to the CPU
with only a warning when the CUDA provider cannot be created (a CPU-only ``onnxruntime`` wheel,
a missing cuDNN, a CUDA mismatch); ``session.get_providers()`` is the only place that says so.
ViTPose-L and YOLOv10m on the CPU take minutes per clip, so this module answers two questions:

* ``probe``: can this process create a CUDA session at all? It builds a one-node ONNX model in
  memory (``tiny_model``: the protobuf written by hand, no file and no ``onnx`` package) and asks
  for CUDA first, exactly as the pose loader does.
* ``session_problem``: is a session that asked for CUDA running without it, on a machine that
  has an NVIDIA GPU? (On a CPU-only machine the CPU is all there is: reported, never refused.)
"""

from __future__ import annotations

import glob
from typing import Any

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def _field(number: int, value: int | str | bytes) -> bytes:
    """One protobuf field: varint for ints, length-delimited for strings and messages."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def tiny_model() -> bytes:
    """An ONNX ModelProto (IR 8, opset 13): y = Identity(x), x and y float32 of shape [1]."""
    shape = _field(1, _field(1, 1))  # TensorShapeProto.dim { dim_value: 1 }
    tensor_type = _field(1, _field(1, 1) + _field(2, shape))  # TypeProto.tensor_type { FLOAT, shape }

    def value_info(name: str) -> bytes:
        return _field(1, name) + _field(2, tensor_type)

    node = _field(1, "x") + _field(2, "y") + _field(4, "Identity")
    graph = _field(1, node) + _field(2, "wan_worker_probe") + _field(11, value_info("x"))
    graph += _field(12, value_info("y"))
    return _field(1, 8) + _field(7, graph) + _field(8, _field(2, 13))


def gpu_present() -> bool:
    """An NVIDIA GPU on this machine: torch sees CUDA, or the driver's device files exist."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except Exception:
        pass
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def session_problem(requested: str, providers: list[str], gpu: bool) -> str | None:
    """Why a session that asked for ``requested`` must not be used; None when it may."""
    if requested != CUDA or CUDA in providers:
        return None
    if not gpu:
        return None  # a CPU-only machine: the CPU is the only device there is
    return (
        f"ONNX Runtime was asked for {CUDA} but the session runs on {providers}: on this GPU machine "
        "pose detection would silently take minutes on the CPU (is onnxruntime-gpu installed, with "
        "the CUDA and cuDNN libraries it was built for?)"
    )


def probe(ort: Any | None = None, *, gpu: bool | None = None) -> dict[str, Any]:
    """{"onnxruntime", "available_providers", "session_providers", "cuda_session_ok", "gpu",
    "reason"}: what a session asking for CUDA first gets in this process."""
    gpu = gpu_present() if gpu is None else gpu
    report: dict[str, Any] = {
        "onnxruntime": None,
        "available_providers": [],
        "session_providers": [],
        "cuda_session_ok": False,
        "gpu": gpu,
        "reason": "",
    }
    try:
        if ort is None:
            import onnxruntime as ort
        report["onnxruntime"] = str(getattr(ort, "__version__", "?"))
        report["available_providers"] = list(ort.get_available_providers())
    except Exception as exc:
        report["reason"] = f"onnxruntime does not import ({type(exc).__name__}: {exc})"
        return report
    if CUDA not in report["available_providers"]:
        report["reason"] = f"this onnxruntime build has no {CUDA} (a CPU-only wheel?)"
        return report
    try:
        session = ort.InferenceSession(tiny_model(), providers=[CUDA, CPU])
        report["session_providers"] = list(session.get_providers())
    except Exception as exc:
        report["reason"] = f"creating a session failed ({type(exc).__name__}: {exc})"
        return report
    report["cuda_session_ok"] = CUDA in report["session_providers"]
    report["reason"] = (
        "a session asking for CUDA runs on CUDA"
        if report["cuda_session_ok"]
        else f"{CUDA} is listed but the session fell back to {report['session_providers']}"
    )
    return report
