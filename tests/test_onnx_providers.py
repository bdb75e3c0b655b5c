"""ONNX Runtime's silent CPU fallback: reported, refused on a GPU machine, never on a CPU one.

The rules (comfyui_nodes/wan_worker_nodes/onnx_providers.py, worker/onnx_providers.py) are tested
as functions; the node (onnx.py) is imported as ComfyUI imports it, with stand-ins for ComfyUI's
``nodes``/``server`` modules, the pack's loader and ``onnxruntime`` (CI has neither ComfyUI nor
onnxruntime), and its route is served by a real aiohttp server that the worker reads. The real
onnxruntime and the real pack loader run in tests/comfy_core/guard_nodes.py (test_guard_nodes_comfy.py).
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiohttp import web

from tests.test_attention_backend import serve
from worker.config import Settings
from worker.errors import ErrorCode, WorkerError
from worker.job import JobRunner
from worker.onnx_providers import providers_in_use, start_refusal

NODE_DIR = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "wan_worker_nodes"
CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
ENV = {"MINIO_ENDPOINT": "127.0.0.1:9", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "MINIO_BUCKET": "c"}


def _package(monkeypatch: pytest.MonkeyPatch) -> str:
    """The node folder as a package, without running its __init__ (that needs ComfyUI)."""
    name = "wan_worker_nodes_under_test"
    package = types.ModuleType(name)
    package.__path__ = [str(NODE_DIR)]
    monkeypatch.setitem(sys.modules, name, package)
    for sub in ("onnx", "onnx_providers"):
        monkeypatch.delitem(sys.modules, f"{name}.{sub}", raising=False)
    return name


@pytest.fixture
def rules(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    return importlib.import_module(f"{_package(monkeypatch)}.onnx_providers")


# -- the rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "providers", "gpu", "refused"),
    [
        (CUDA, [CUDA, CPU], True, False),
        (CUDA, [CPU], True, True),  # the silent fallback on a GPU machine
        (CUDA, [], True, True),
        (CUDA, [CPU], False, False),  # a CPU-only machine: the CPU is all there is
        (CPU, [CPU], True, False),  # the CPU was asked for
    ],
)
def test_session_problem(
    rules: types.ModuleType, requested: str, providers: list[str], gpu: bool, refused: bool
) -> None:
    problem = rules.session_problem(requested, providers, gpu)
    assert (problem is not None) == refused
    if refused:
        assert f"asked for {CUDA} but the session runs on {providers}" in problem


@pytest.mark.parametrize(
    ("report", "refused"),
    [
        (None, False),  # ComfyUI does not say (no node, the fake ComfyUI): not a refusal
        (
            {"gpu": False, "cuda_session_ok": False, "reason": "cpu wheel", "available_providers": [CPU]},
            False,
        ),
        ({"gpu": True, "cuda_session_ok": True, "reason": "ok", "available_providers": [CUDA, CPU]}, False),
        (
            {
                "gpu": True,
                "cuda_session_ok": False,
                "reason": "libcudnn.so.9: cannot open",
                "available_providers": [CUDA, CPU],
            },
            True,
        ),
    ],
)
def test_start_refusal(report: dict[str, Any] | None, refused: bool) -> None:
    reason = start_refusal(report)
    assert (reason is not None) == refused
    if refused:
        assert reason.startswith(
            "an NVIDIA GPU is present but ONNX Runtime in ComfyUI cannot create a CUDA session"
        )
        assert "libcudnn.so.9: cannot open" in reason


class FakeSession:
    def __init__(self, model: Any, providers: list[str], runs_on: list[str]) -> None:
        self.model, self.asked, self.runs_on = model, providers, runs_on

    def get_providers(self) -> list[str]:
        return list(self.runs_on)


def fake_ort(
    available: list[str], runs_on: list[str] | None = None, *, fails: bool = False
) -> types.ModuleType:
    """onnxruntime as far as the probe uses it; records each session it creates."""
    ort = types.ModuleType("onnxruntime")
    ort.__version__ = "stand-in"
    ort.get_available_providers = lambda: list(available)
    ort.sessions = []

    def session(model: Any, providers: list[str]) -> FakeSession:
        if fails:
            raise RuntimeError("CUDA failure 35: driver too old")
        created = FakeSession(model, providers, runs_on if runs_on is not None else providers)
        ort.sessions.append(created)
        return created

    ort.InferenceSession = session
    return ort


def test_probe_asks_for_cuda_first_on_an_in_memory_model(rules: types.ModuleType) -> None:
    ort = fake_ort([CUDA, CPU])
    report = rules.probe(ort, gpu=True)
    assert report["cuda_session_ok"] is True and report["session_providers"] == [CUDA, CPU]
    (session,) = ort.sessions
    assert session.asked == [CUDA, CPU]
    assert isinstance(session.model, bytes) and session.model == rules.tiny_model()


@pytest.mark.parametrize(
    ("ort", "reason"),
    [
        (fake_ort([CPU]), "this onnxruntime build has no CUDAExecutionProvider"),
        (
            fake_ort([CUDA, CPU], runs_on=[CPU]),
            "is listed but the session fell back to ['CPUExecutionProvider']",
        ),
        (fake_ort([CUDA, CPU], fails=True), "creating a session failed (RuntimeError: CUDA failure 35"),
    ],
)
def test_probe_says_why_there_is_no_cuda_session(
    rules: types.ModuleType, ort: types.ModuleType, reason: str
) -> None:
    report = rules.probe(ort, gpu=True)
    assert report["cuda_session_ok"] is False and report["gpu"] is True
    assert reason in report["reason"]


def test_tiny_model_is_a_model_proto(rules: types.ModuleType) -> None:
    """Decoded with a minimal protobuf reader: fields 1 (ir_version), 7 (graph), 8 (opset_import)."""

    def fields(data: bytes) -> list[tuple[int, Any]]:
        out, i = [], 0
        while i < len(data):
            key, i = _varint(data, i)
            if key & 7 == 0:
                value, i = _varint(data, i)
            else:
                size, i = _varint(data, i)
                value, i = data[i : i + size], i + size
            out.append((key >> 3, value))
        return out

    model = dict(fields(rules.tiny_model()))
    assert model[1] == 8 and dict(fields(model[8])) == {2: 13}
    graph = fields(model[7])
    node = dict(fields(dict(graph)[1]))
    assert node == {1: b"x", 2: b"y", 4: b"Identity"}
    assert [n for n, _ in graph] == [1, 2, 11, 12]


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


# -- the node, its route, and the worker ---------------------------------------------------------


class FakeRunner:
    """The pack's ViTPose/Yolo as far as the loader uses them: a session, and reinit()."""

    def __init__(self, providers: list[str]) -> None:
        self.providers = providers
        self.session: FakeSession | None = FakeSession(b"", providers, providers)

    def reinit(self) -> None:
        self.session = FakeSession(b"", self.providers, self.providers)


class FakePackLoader:
    FUNCTION = "loadmodel"
    runs_on: ClassVar[list[str]] = [CUDA, CPU]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"onnx_device": ([CUDA, CPU],)}}

    def loadmodel(self, vitpose_model: str, yolo_model: str, onnx_device: str) -> tuple[Any, ...]:
        return ({"vitpose": FakeRunner(self.runs_on), "yolo": FakeRunner(self.runs_on)},)


def load_node(
    monkeypatch: pytest.MonkeyPatch, ort: types.ModuleType, *, gpu: bool
) -> tuple[types.ModuleType, Any]:
    instance = types.SimpleNamespace(routes=web.RouteTableDef())
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=instance)
    comfy_nodes = types.ModuleType("nodes")
    comfy_nodes.NODE_CLASS_MAPPINGS = {"OnnxDetectionModelLoader": FakePackLoader}
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "nodes", comfy_nodes)
    monkeypatch.setitem(sys.modules, "onnxruntime", ort)
    package = _package(monkeypatch)
    rules = importlib.import_module(f"{package}.onnx_providers")
    monkeypatch.setattr(rules, "gpu_present", lambda: gpu)
    node = importlib.import_module(f"{package}.onnx")
    node.setup()
    assert node.register_route()
    return node, instance


def test_route_reports_the_providers_and_the_worker_refuses_a_gpu_without_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server = load_node(monkeypatch, fake_ort([CUDA, CPU], runs_on=[CPU]), gpu=True)
    with serve(server.routes) as url:
        report = providers_in_use(url)
        assert report is not None and report["gpu"] is True and report["cuda_session_ok"] is False
        assert report["sessions"] == {}
        with pytest.raises(WorkerError) as caught:
            JobRunner(
                Settings.from_env(
                    {**ENV, "COMFY_URL": url, "WORKFLOW": "workflows/wan22_animate_replace.json"}
                )
            )
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert (
        "an NVIDIA GPU is present but ONNX Runtime in ComfyUI cannot create a CUDA session"
        in caught.value.message
    )
    assert caught.value.details["onnx_providers"]["available_providers"] == [CUDA, CPU]


def test_a_cpu_machine_starts_and_each_result_carries_the_sessions_in_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node, server = load_node(monkeypatch, fake_ort([CPU]), gpu=False)
    with serve(server.routes) as url:
        runner = JobRunner(
            Settings.from_env({**ENV, "COMFY_URL": url, "WORKFLOW": "workflows/wan22_animate_replace.json"})
        )
        assert (
            runner.onnx_providers()["reason"]
            == "this onnxruntime build has no CUDAExecutionProvider (a CPU-only wheel?)"
        )
        monkeypatch.setattr(FakePackLoader, "runs_on", [CPU])
        node.OnnxDetectionModelLoaderChecked().loadmodel("v.onnx", "y.onnx", CUDA)  # no GPU: allowed
        assert runner.onnx_providers()["sessions"] == {"vitpose": [CPU], "yolo": [CPU]}


def test_the_loader_fails_when_cuda_is_lost_on_a_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    node, _ = load_node(monkeypatch, fake_ort([CUDA, CPU]), gpu=True)
    loader = node.OnnxDetectionModelLoaderChecked()
    assert loader.INPUT_TYPES() == FakePackLoader.INPUT_TYPES()
    monkeypatch.setattr(FakePackLoader, "runs_on", [CPU])
    with pytest.raises(
        RuntimeError,
        match=r"vitpose: ONNX Runtime was asked for CUDAExecutionProvider but the session runs on \['CPU",
    ):
        loader.loadmodel("v.onnx", "y.onnx", CUDA)
    monkeypatch.setattr(FakePackLoader, "runs_on", [CUDA, CPU])
    (model,) = loader.loadmodel("v.onnx", "y.onnx", CUDA)
    assert node.STATE["sessions"] == {"vitpose": [CUDA, CPU], "yolo": [CUDA, CPU]}
    # PoseAndFaceDetection re-creates the sessions at every run: a later fallback is caught too.
    model["yolo"].providers = [CPU]
    with pytest.raises(RuntimeError, match="yolo: ONNX Runtime was asked for CUDAExecutionProvider"):
        model["yolo"].reinit()
    assert node.STATE["sessions"]["yolo"] == [CPU]


def test_models_without_an_onnx_session_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's stand-in loader returns {"stand_in": ...}: nothing to check, nothing wrapped."""
    node, _ = load_node(monkeypatch, fake_ort([CUDA, CPU]), gpu=True)
    monkeypatch.setattr(FakePackLoader, "loadmodel", lambda self, **_: ({"stand_in": "pose model"},))
    assert node.OnnxDetectionModelLoaderChecked().loadmodel("v.onnx", "y.onnx", CUDA) == (
        {"stand_in": "pose model"},
    )
    assert node.STATE["sessions"] == {}
