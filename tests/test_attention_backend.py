"""ATTENTION_BACKEND: the choice rules, the custom node inside a stand-in ComfyUI, and the route the
worker reads.

The rules are a pure function (selection.py). The node is loaded the way ComfyUI 0.33.0 loads a
custom node folder (``spec_from_file_location`` on its ``__init__.py``), with small stand-ins for
the ComfyUI and PyTorch modules it reads (CI has neither a GPU nor ComfyUI); its route is served by
a real aiohttp server on 127.0.0.1 and read with ``worker.attention.backend_in_use``.
"""

from __future__ import annotations

import asyncio
import enum
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.comfy import unused_port
from worker.attention import backend_in_use

NODE_DIR = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "wan_worker_attention"


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


selection = _load("wan_worker_attention_selection_under_test", NODE_DIR / "selection.py")

H100 = selection.Facts(
    cuda=True,
    capability=(9, 0),
    sdpa_priority_settable=True,
    sdpa_backends=frozenset({"flash", "cudnn", "efficient", "math"}),
    comfy_attention="attention_pytorch",
    sage_error="ModuleNotFoundError: No module named 'sageattention'",
)
A100 = replace(H100, capability=(8, 0))
CPU = replace(
    H100, cuda=False, capability=None, sdpa_backends=frozenset(), comfy_attention="attention_pytorch"
)
SAGE_IMPORTS = replace(H100, sage_error=None)
SAGE_ACTIVE = replace(H100, sage_error=None, comfy_attention="attention_sage")

CUDNN_FIRST = ("cudnn", "flash", "efficient", "math")
FLASH_FIRST = ("flash", "cudnn", "efficient", "math")


@pytest.mark.parametrize(
    ("requested", "facts", "backend", "order", "fallback", "reason_has"),
    [
        (None, H100, "cudnn", CUDNN_FIRST, False, "sm_90"),
        ("", H100, "cudnn", CUDNN_FIRST, False, "measured fastest"),
        ("AUTO ", H100, "cudnn", CUDNN_FIRST, False, "measured fastest"),
        (
            "auto",
            replace(H100, sdpa_backends=frozenset({"flash", "math"})),
            "flash",
            None,
            False,
            "not offer",
        ),
        ("auto", A100, "flash", None, False, "no measurement for sm_80"),
        ("auto", CPU, "comfy-default", None, False, "no CUDA"),
        ("auto", replace(H100, sdpa_priority_settable=False), "comfy-default", None, False, "priority"),
        ("flash", H100, "flash", FLASH_FIRST, False, "as asked"),
        ("cudnn", H100, "cudnn", CUDNN_FIRST, False, "as asked"),
        ("cudnn", A100, "cudnn", CUDNN_FIRST, False, "as asked"),
        (
            "cudnn",
            replace(H100, sdpa_backends=frozenset({"flash"})),
            "flash",
            None,
            True,
            "cudnn SDPA kernel",
        ),
        ("flash", CPU, "comfy-default", None, True, "no CUDA"),
        ("sage", H100, "cudnn", CUDNN_FIRST, True, "No module named 'sageattention'"),
        ("sage", SAGE_IMPORTS, "cudnn", CUDNN_FIRST, True, "--use-sage-attention"),
        ("sage", SAGE_ACTIVE, "sage", CUDNN_FIRST, False, "sageattention imports"),
        ("cudnn", SAGE_ACTIVE, "sage", CUDNN_FIRST, True, "overrides cudnn"),
        (
            "sage",
            replace(CPU, sage_error=None, comfy_attention="attention_sage"),
            "sage",
            None,
            False,
            "sage",
        ),
        (
            "flash",
            replace(H100, comfy_attention="attention_xformers"),
            "attention_xformers",
            None,
            True,
            "xformers",
        ),
        ("fastest", H100, "cudnn", CUDNN_FIRST, True, "not one of auto, flash, cudnn, sage"),
    ],
)
def test_choice(requested, facts, backend, order, fallback, reason_has) -> None:
    choice = selection.choose(requested, facts)
    assert (choice.backend, choice.sdpa_order, choice.fallback) == (backend, order, fallback)
    assert reason_has in choice.reason


@pytest.mark.parametrize(("raw", "reported"), [(None, "auto"), ("", "auto"), (" Cudnn", "cudnn"), ("x", "x")])
def test_requested_value_is_reported_as_given_or_normalised(raw, reported) -> None:
    assert selection.choose(raw, H100).as_dict()["requested"] == reported


def test_every_measured_choice_is_a_known_order() -> None:
    assert set(selection.MEASURED_FASTEST.values()) <= set(selection.SDPA_ORDER)
    for order in selection.SDPA_ORDER.values():
        assert sorted(order) == sorted(FLASH_FIRST)


# ---------------------------------------------------------------- the node inside a stand-in ComfyUI


class SDPBackend(enum.Enum):  # the members torch.nn.attention.SDPBackend has
    ERROR = -1
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3


def fake_torch(capability: tuple[int, int] | None, broken_kernels: set[str]) -> dict[str, types.ModuleType]:
    """Just what probe.py touches: device facts and SDPA calls restricted to one kernel."""
    active: list[SDPBackend] = []

    @contextmanager
    def sdpa_kernel(backends: list[SDPBackend]) -> Iterator[None]:
        active[:] = backends
        yield

    def scaled_dot_product_attention(q: Any, k: Any, v: Any) -> Any:
        if active and active[0].name in broken_kernels:
            raise RuntimeError("No available kernel. Aborting execution.")
        return q

    torch = types.ModuleType("torch")
    torch.float16, torch.bfloat16 = "float16", "bfloat16"
    torch.randn = lambda shape, device=None, dtype=None: ("tensor", shape)
    torch.cuda = types.SimpleNamespace(
        is_available=lambda: capability is not None,
        get_device_capability=lambda device=None: capability,
        get_device_name=lambda device=None: "NVIDIA H100 80GB HBM3",
        synchronize=lambda device=None: None,
    )
    nn = types.ModuleType("torch.nn")
    nn.functional = types.SimpleNamespace(scaled_dot_product_attention=scaled_dot_product_attention)
    attention = types.ModuleType("torch.nn.attention")
    attention.SDPBackend = SDPBackend
    attention.sdpa_kernel = sdpa_kernel
    torch.nn = nn
    nn.attention = attention
    return {"torch": torch, "torch.nn": nn, "torch.nn.attention": attention}


def comfy_sdpa(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
    return ("sdpa", q)


def fake_comfy(
    cuda: bool, attention_function: str, with_priority: bool = True
) -> dict[str, types.ModuleType]:
    """comfy.ops / comfy.model_management / comfy.ldm.modules.attention as ComfyUI 0.33.0 has them."""
    comfy = types.ModuleType("comfy")
    ops = types.ModuleType("comfy.ops")
    ops.scaled_dot_product_attention = comfy_sdpa
    if with_priority:
        ops.SDPA_BACKEND_PRIORITY = [
            SDPBackend.FLASH_ATTENTION,
            SDPBackend.CUDNN_ATTENTION,
            SDPBackend.EFFICIENT_ATTENTION,
            SDPBackend.MATH,
        ]
    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: types.SimpleNamespace(type="cuda" if cuda else "cpu", index=0)

    def attention_impl(*args: Any, **kwargs: Any) -> None:
        return None

    def attention_pytorch(*args: Any, **kwargs: Any) -> None:
        return None

    attention_impl.__name__ = attention_function
    attention = types.ModuleType("comfy.ldm.modules.attention")
    attention.optimized_attention = attention_impl
    attention.attention_pytorch = attention_pytorch
    ldm, modules = types.ModuleType("comfy.ldm"), types.ModuleType("comfy.ldm.modules")
    wan = types.ModuleType("comfy.ldm.wan")
    wan_model, wan_animate = (
        types.ModuleType("comfy.ldm.wan.model"),
        types.ModuleType("comfy.ldm.wan.model_animate"),
    )
    wan_model.optimized_attention = wan_animate.optimized_attention = attention_impl  # bound at their import
    comfy.ops, comfy.model_management, comfy.ldm = ops, mm, ldm
    ldm.modules, modules.attention, ldm.wan = modules, attention, wan
    wan.model, wan.model_animate = wan_model, wan_animate
    return {
        "comfy": comfy,
        "comfy.ops": ops,
        "comfy.model_management": mm,
        "comfy.ldm": ldm,
        "comfy.ldm.modules": modules,
        "comfy.ldm.modules.attention": attention,
        "comfy.ldm.wan": wan,
        "comfy.ldm.wan.model": wan_model,
        "comfy.ldm.wan.model_animate": wan_animate,
    }


def fake_server() -> tuple[types.ModuleType, Any]:
    instance = types.SimpleNamespace(routes=web.RouteTableDef())
    server = types.ModuleType("server")
    server.PromptServer = types.SimpleNamespace(instance=instance)
    return server, instance


def load_node(
    monkeypatch: pytest.MonkeyPatch,
    *,
    backend: str | None,
    capability: tuple[int, int] | None = (9, 0),
    broken_kernels: frozenset[str] = frozenset(),
    attention_function: str = "attention_pytorch",
    with_priority: bool = True,
    server: types.ModuleType | None = None,
    probes: dict[str, Any] | None = None,
    kernels_loaded: dict[str, Any] | None = None,
) -> tuple[types.ModuleType, dict[str, types.ModuleType]]:
    """The node as ComfyUI imports it. Its probes' results are put in its cache first (``probes``;
    default: every backend passes), since the stand-in torch cannot run attention."""
    modules = {
        **fake_torch(capability, set(broken_kernels)),
        **fake_comfy(capability is not None, attention_function, with_priority),
    }
    modules["server"] = server if server is not None else types.ModuleType("server")  # no PromptServer
    modules["sageattention"] = None  # `import sageattention` raises ImportError
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    if backend is None:
        monkeypatch.delenv("ATTENTION_BACKEND", raising=False)
    else:
        monkeypatch.setenv("ATTENTION_BACKEND", backend)
    # ComfyUI names a custom node folder's module after its path.
    name = str(NODE_DIR).replace(".", "_x_")
    monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location(name, NODE_DIR / "__init__.py")
    assert spec and spec.loader
    node = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, node)
    probe = importlib.import_module(f"{name}.probe")
    monkeypatch.setitem(sys.modules, f"{name}.probe", probe)
    monkeypatch.setattr(probe, "PROBED", probes if probes is not None else passing_probes())
    monkeypatch.setattr(probe, "LOADED", kernels_loaded or {})
    spec.loader.exec_module(node)
    return node, modules


def passing_probes() -> dict[str, Any]:
    return {
        b: selection.Probe(b, True, "passed", "stand-in") for b in ("cudnn", "flash", "sage", "fa4", "fa3")
    }


def priority_names(modules: dict[str, types.ModuleType]) -> list[str]:
    return [member.name for member in modules["comfy.ops"].SDPA_BACKEND_PRIORITY]


def test_node_puts_cudnn_first_on_hopper_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    node, modules = load_node(monkeypatch, backend=None)
    assert node.NODE_CLASS_MAPPINGS == {}
    assert priority_names(modules) == ["CUDNN_ATTENTION", "FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
    assert node.STATE["backend"] == "cudnn"
    assert node.STATE["requested"] == "auto"
    assert node.STATE["sdpa_order"] == list(CUDNN_FIRST)
    assert node.STATE["device"] == "NVIDIA H100 80GB HBM3 (sm_90)"


def test_node_keeps_comfy_order_when_cudnn_kernel_does_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    node, modules = load_node(monkeypatch, backend="auto", broken_kernels=frozenset({"CUDNN_ATTENTION"}))
    assert priority_names(modules) == ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]
    assert node.STATE["backend"] == "flash"


def test_node_flash_request_and_later_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    node, modules = load_node(monkeypatch, backend="cudnn")
    assert priority_names(modules)[0] == "CUDNN_ATTENTION"
    state = node.setup({"ATTENTION_BACKEND": "flash"})  # what the benchmark does between backends
    assert state["backend"] == "flash"
    assert priority_names(modules) == ["FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"]


def test_node_sage_without_package_falls_back_and_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        node, _ = load_node(monkeypatch, backend="sage")
    assert node.STATE["backend"] == "cudnn"
    assert node.STATE["fallback"] is True
    assert "sageattention does not import" in node.STATE["reason"]
    assert any("wan_worker_attention" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_node_on_cpu_leaves_comfy_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    node, modules = load_node(
        monkeypatch, backend="auto", capability=None, attention_function="attention_sub_quad"
    )
    assert node.STATE["backend"] == "attention_sub_quad"
    assert node.STATE["device"] == "cpu"
    assert priority_names(modules)[0] == "FLASH_ATTENTION"


def test_node_never_raises_when_comfy_is_not_what_it_expects(monkeypatch: pytest.MonkeyPatch) -> None:
    node, modules = load_node(monkeypatch, backend="cudnn")
    monkeypatch.delattr(modules["comfy.model_management"], "get_torch_device")
    state = node.setup({"ATTENTION_BACKEND": "cudnn"})
    assert state["backend"] == "comfy-default"
    assert "could not be set" in state["reason"]


@contextmanager
def serve(routes: web.RouteTableDef) -> Iterator[str]:
    """The routes on a real aiohttp server on 127.0.0.1, in a thread of its own."""
    port = unused_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_route_reports_backend_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    server, instance = fake_server()
    node, _ = load_node(monkeypatch, backend="flash", server=server)
    with serve(instance.routes) as url:
        reported = backend_in_use(url)
        assert reported is not None
        assert (reported["requested"], reported["backend"]) == ("flash", "flash")
        assert reported["sdpa_order"] == list(FLASH_FIRST)
        node.setup({"ATTENTION_BACKEND": "cudnn"})
        assert backend_in_use(url + "/")["backend"] == "cudnn"


def test_node_without_server_registers_no_route(monkeypatch: pytest.MonkeyPatch) -> None:
    node, _ = load_node(monkeypatch, backend="auto")
    assert node.register_route() is False


def test_backend_unknown_without_the_node(fake_comfy) -> None:
    assert backend_in_use(fake_comfy.url) is None  # the fake ComfyUI has no such route: 404


def test_backend_unknown_when_comfy_is_down() -> None:
    assert backend_in_use(f"http://127.0.0.1:{unused_port()}", timeout_s=1.0) is None


def test_backend_unknown_when_the_answer_is_not_a_report() -> None:
    routes = web.RouteTableDef()

    @routes.get("/wan_worker/attention")
    async def odd(request: web.Request) -> web.Response:
        return web.json_response({"backend": 3})

    with serve(routes) as url:
        assert backend_in_use(url) is None


# ---------------------------------------------------------------- probes and the measured table

H100_NAME = "NVIDIA H100 80GB HBM3"
H100_RANKING = [("cudnn", 12.03), ("sage", 14.18), ("flash", 17.08)]  # as step_times.json has it
H100_NAMED = replace(H100, device_name=H100_NAME)


class Prober:
    """A stand-in probe: every backend passes unless listed in ``fails`` (backend -> stage)."""

    def __init__(self, fails: dict[str, str] | None = None) -> None:
        self.fails = fails or {}
        self.asked: list[str] = []

    def __call__(self, backend: str) -> Any:
        self.asked.append(backend)
        stage = self.fails.get(backend)
        if stage is None:
            return selection.Probe(backend, True, "passed", "stand-in", 0.001, 0.99999, 1.0, 0.2)
        return selection.Probe(backend, False, stage, f"{backend} {stage} problem", 0.9, 0.5)


def test_auto_takes_the_fastest_measured_backend_that_passes_its_probe() -> None:
    prober = Prober()
    choice = selection.choose("auto", H100_NAMED, H100_RANKING, prober)
    assert (choice.backend, choice.sdpa_order, choice.fallback, choice.kernel) == (
        "cudnn",
        CUDNN_FIRST,
        False,
        None,
    )
    assert prober.asked == ["cudnn"]  # probes stop at the first that passes
    assert "fastest measured on NVIDIA H100 80GB HBM3 (12.03 s/step)" in choice.reason
    assert "probe passed" in choice.reason
    assert [p["backend"] for p in choice.as_dict()["probes"]] == ["cudnn"]


def test_a_backend_that_disagrees_is_skipped_for_the_next_measured_one() -> None:
    prober = Prober({"cudnn": "numerics"})
    choice = selection.choose(None, H100_NAMED, H100_RANKING, prober)
    # sage is measured second but ComfyUI was not started with it: not probed, passed over with a reason
    assert prober.asked == ["cudnn", "flash"]
    assert (choice.backend, choice.sdpa_order, choice.fallback) == ("flash", FLASH_FIRST, True)
    assert "cudnn: disagrees with math attention (cudnn numerics problem" in choice.reason
    assert "sage: ComfyUI was not started with --use-sage-attention" in choice.reason
    assert [(p.backend, p.ok) for p in choice.probes] == [("cudnn", False), ("flash", True)]


def test_when_every_probe_fails_comfy_order_is_kept_and_said() -> None:
    choice = selection.choose("auto", H100_NAMED, H100_RANKING, Prober({"cudnn": "shape", "flash": "load"}))
    assert (choice.backend, choice.sdpa_order, choice.fallback) == ("flash", None, True)
    assert "cudnn: cannot take the shape" in choice.reason
    assert "flash: cannot load" in choice.reason
    assert choice.reason.endswith("ComfyUI's order (flash first) kept")


@pytest.mark.parametrize("kernel", ["fa4", "fa3"])
def test_a_kernel_backend_runs_in_front_of_auto_sdpa_order(kernel: str) -> None:
    prober = Prober()
    choice = selection.choose(kernel, H100_NAMED, H100_RANKING, prober)
    assert (choice.backend, choice.kernel, choice.sdpa_order, choice.fallback) == (
        kernel,
        kernel,
        CUDNN_FIRST,
        False,
    )
    assert prober.asked == [kernel]
    assert choice.reason.startswith("as asked, probe passed")


@pytest.mark.parametrize(("stage", "said"), [("load", "cannot load"), ("shape", "cannot take the shape"),
                                             ("numerics", "disagrees with math attention")])  # fmt: skip
def test_a_kernel_that_fails_its_probe_falls_back_to_auto(stage: str, said: str) -> None:
    choice = selection.choose("fa4", H100_NAMED, H100_RANKING, Prober({"fa4": stage}))
    assert (choice.backend, choice.kernel, choice.sdpa_order, choice.fallback) == (
        "cudnn",
        None,
        CUDNN_FIRST,
        True,
    )
    assert choice.reason.startswith(f"fa4: {said} (fa4 {stage} problem")
    assert "cudnn: fastest measured" in choice.reason


def test_auto_picks_a_kernel_only_once_it_is_measured_fastest() -> None:
    ranking = [("fa4", 9.5), *H100_RANKING]
    choice = selection.choose("auto", H100_NAMED, ranking, Prober())
    assert (choice.backend, choice.kernel, choice.sdpa_order) == ("fa4", "fa4", CUDNN_FIRST)
    assert "fa4: fastest measured on NVIDIA H100 80GB HBM3 (9.50 s/step)" in choice.reason


def test_unmeasured_gpu_model_keeps_the_current_order_of_its_generation() -> None:
    h200 = replace(H100, device_name="NVIDIA H200")
    choice = selection.choose("auto", h200, (), Prober())
    assert (choice.backend, choice.sdpa_order, choice.fallback) == ("cudnn", CUDNN_FIRST, False)
    assert "no measurement for NVIDIA H200; cudnn first measured fastest on sm_90" in choice.reason
    a100 = replace(A100, device_name="NVIDIA A100-SXM4-80GB")
    choice = selection.choose("auto", a100, (), Prober())
    assert (choice.backend, choice.sdpa_order, choice.fallback) == ("flash", None, False)
    assert "no measurement for NVIDIA A100-SXM4-80GB: ComfyUI's order (flash first) kept" in choice.reason


def test_sage_that_fails_its_probe_is_unbound_for_the_next_backend() -> None:
    active = replace(SAGE_ACTIVE, device_name=H100_NAME)
    prober = Prober({"sage": "numerics"})
    choice = selection.choose("sage", active, H100_RANKING, prober)
    assert (choice.backend, choice.sdpa_order, choice.unbind_sage, choice.fallback) == (
        "cudnn",
        CUDNN_FIRST,
        True,
        True,
    )
    assert prober.asked == ["sage", "cudnn"]
    passing = selection.choose("sage", active, H100_RANKING, Prober())
    assert (passing.backend, passing.unbind_sage, passing.fallback) == ("sage", False, False)


def test_no_probe_runs_without_cuda() -> None:
    prober = Prober()
    assert selection.choose("fa4", CPU, (), prober).backend == "comfy-default"
    assert prober.asked == []


def test_the_worker_accepts_exactly_the_node_backends() -> None:
    from worker.config import ATTENTION_BACKENDS

    assert ATTENTION_BACKENDS == selection.REQUESTS


def test_node_puts_a_kernel_in_front_of_sdpa_and_takes_it_away(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def fake_kernel(q: Any, k: Any, v: Any, scale: Any) -> Any:
        calls.append(scale)
        return q

    node, modules = load_node(monkeypatch, backend="fa4", kernels_loaded={"fa4": fake_kernel})
    ops = modules["comfy.ops"]
    assert node.STATE["backend"] == "fa4"
    assert node.STATE["sdpa_order"] == list(CUDNN_FIRST)
    assert node.STATE["probes"][0]["backend"] == "fa4"
    assert ops.scaled_dot_product_attention.name == "fa4"
    assert ops.scaled_dot_product_attention.wan_worker_original is comfy_sdpa
    node.setup({"ATTENTION_BACKEND": "fa4"})  # again: still one kernel in front, not two
    assert ops.scaled_dot_product_attention.wan_worker_original is comfy_sdpa
    node.setup({"ATTENTION_BACKEND": "cudnn"})
    assert ops.scaled_dot_product_attention is comfy_sdpa


def test_node_reports_a_failed_probe_and_what_it_fell_back_to(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    probes = passing_probes()
    probes["fa3"] = selection.Probe(
        "fa3", False, "load", "OSError: libcudart.so.13: cannot open shared object file"
    )
    with caplog.at_level("WARNING"):
        node, modules = load_node(monkeypatch, backend="fa3", probes=probes)
    assert (node.STATE["backend"], node.STATE["fallback"]) == ("cudnn", True)
    assert "fa3: cannot load (OSError: libcudart.so.13" in node.STATE["reason"]
    assert [(p["backend"], p["ok"]) for p in node.STATE["probes"]] == [("fa3", False), ("cudnn", True)]
    assert modules["comfy.ops"].scaled_dot_product_attention is comfy_sdpa
    assert any("fa3: cannot load" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


def test_node_reports_where_its_ranking_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    node, _ = load_node(monkeypatch, backend="auto")  # the stand-in torch names an H100 80GB HBM3
    assert (
        node.STATE["measured"]
        == "NVIDIA H100 80GB HBM3, 2026-11-23: s/step cudnn 12.03, sage 14.18, flash 17.08"
    )
    assert "fastest measured on NVIDIA H100 80GB HBM3 (12.03 s/step)" in node.STATE["reason"]
    assert node.measured_ranking("NVIDIA H200") == ([], "NVIDIA H200: not measured")


def test_node_unbinds_sage_from_wan_when_its_probe_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    probes = passing_probes()
    probes["sage"] = selection.Probe("sage", False, "numerics", "NaN on the window", 1.0, 0.1)
    node, modules = load_node(monkeypatch, backend="sage", attention_function="attention_sage", probes=probes)
    assert (node.STATE["backend"], node.STATE["fallback"]) == ("cudnn", True)
    assert node.STATE["comfy_attention"] == "attention_pytorch"
    pytorch = modules["comfy.ldm.modules.attention"].attention_pytorch
    for name in ("comfy.ldm.wan.model", "comfy.ldm.wan.model_animate", "comfy.ldm.modules.attention"):
        assert modules[name].optimized_attention is pytorch
    assert priority_names(modules)[0] == "CUDNN_ATTENTION"
