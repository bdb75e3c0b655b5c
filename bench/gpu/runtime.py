"""ComfyUI started in this process as its main.py starts it, and a prompt run through its own executor.

Nothing here is ComfyUI code: ComfyUI is imported from the checkout given with ``--comfy``. The
graph goes through ``execution.validate_prompt`` (what ``POST /prompt`` runs) and
``execution.PromptExecutor`` (what the server's prompt worker runs). A recording stand-in for
the server receives the executor's events; at each ``executing`` event it waits for the device,
so a node's time is from its start to the next node's start with all of its GPU work included.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.gpu.stages import SAMPLER_CLASS, NodeRun

BENCH_CLIENT_ID = "gpu-bench"


class ComfyRuntime:
    """One in-process ComfyUI. Call start() first; ComfyUI's modules are importable after it."""

    def __init__(self, comfy_dir: Path, *, cpu: bool, work_dir: Path) -> None:
        self.comfy_dir = comfy_dir.resolve()
        self.cpu = cpu
        self.work_dir = work_dir
        self.executor: Any = None
        self.device: Any = None
        self.cuda = False
        self.monitor: GpuMonitor | None = None

    # ------------------------------------------------------------------ start, as main.py does
    def start(self) -> None:
        if not (self.comfy_dir / "comfy" / "model_management.py").is_file():
            raise SystemExit(
                f"--comfy {self.comfy_dir}: not a ComfyUI checkout (no comfy/model_management.py)"
            )
        sys.path.insert(0, str(self.comfy_dir))
        importlib.import_module(
            "comfy.options"
        )  # argument parsing stays off: parser defaults, like `main.py`
        cli_args = importlib.import_module("comfy.cli_args")
        args = cli_args.args
        args.cpu = self.cpu
        if not self.cpu:
            importlib.import_module(
                "cuda_malloc"
            )  # PYTORCH_CUDA_ALLOC_CONF=backend:cudaMallocAsync, as main.py
        control = importlib.import_module("comfy_aimdo.control")
        if cli_args.enables_dynamic_vram():
            try:
                control.init(simple_vram_headroom=None, nvml_pressure=not args.disable_nvml_pressure)
            except TypeError:
                control.init()
        import comfy.memory_management
        import comfy.model_management as mm
        import comfy.model_patcher
        import folder_paths

        importlib.import_module("hook_breaker_ac10a0")
        import execution
        import nodes

        if cli_args.enables_dynamic_vram() and mm.is_nvidia() and mm.torch_version_numeric >= (2, 8):
            devices = mm.get_all_torch_devices()
            try:
                ok = control.init_devices((d.index, int(args.vram_headroom * 1024**3)) for d in devices)
            except TypeError:
                ok = control.init_devices(d.index for d in devices)
            if ok:
                comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
                comfy.memory_management.aimdo_enabled = True
                logging.info("DynamicVRAM support detected and enabled")
        for kind in ("input", "output", "temp"):
            path = self.work_dir / kind
            path.mkdir(parents=True, exist_ok=True)
            getattr(folder_paths, f"set_{kind}_directory")(str(path))
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        self.device = mm.get_torch_device()
        self.cuda = getattr(self.device, "type", "") == "cuda"
        self.monitor = GpuMonitor(self.device) if self.cuda else None
        ram_gib = mm.total_ram / 1024.0
        cache_args = {
            "lru": 0,
            "ram": min(10.0, max(2.0, ram_gib * 0.10)),
            "ram_inactive": min(128.0, ram_gib),
        }
        self.server = RecordingServer(self)
        self.executor = execution.PromptExecutor(
            self.server, cache_type=execution.CacheType.RAM_PRESSURE, cache_args=cache_args
        )
        _hook_progress(self.server)
        _time_sampler_steps(self)

    def load_custom_node(self, folder: Path) -> ModuleType:
        """Imports a custom node folder through ComfyUI's own loader (as at server start)."""
        import nodes

        if not asyncio.run(nodes.load_custom_node(str(folder.resolve()))):
            raise SystemExit(f"ComfyUI could not import the custom node folder {folder}")
        return sys.modules[str(folder.resolve()).replace(".", "_x_")]

    # ------------------------------------------------------------------ run
    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize(self.device)

    def validate(self, graph: dict[str, Any], outputs: list[str] | None = None) -> list[str]:
        import execution

        valid = asyncio.run(execution.validate_prompt(uuid.uuid4().hex, graph, outputs))
        if not valid[0] or valid[3]:
            raise SystemExit(f"ComfyUI rejects the graph: {valid[1]} {valid[3]}")
        return list(valid[2])

    def run(self, graph: dict[str, Any], outputs: list[str] | None = None) -> tuple[list[NodeRun], float]:
        """Executes the graph (its output nodes, or the given nodes); returns the node runs and wall time."""
        targets = self.validate(graph, outputs) if outputs is None else outputs
        prompt_id = uuid.uuid4().hex
        self.server.begin(graph)
        self.sync()
        started = time.perf_counter()
        self.executor.execute(graph, prompt_id, {"client_id": BENCH_CLIENT_ID}, targets)
        self.sync()
        wall = time.perf_counter() - started
        runs = self.server.finish()
        if not self.executor.success:
            errors = [m for m in self.executor.status_messages if m[0] == "execution_error"]
            detail = errors[-1][1] if errors else self.executor.status_messages[-1:]
            raise SystemExit(f"ComfyUI failed to execute the graph: {_short_error(detail)}")
        return runs, wall

    def ui_outputs(self) -> dict[str, Any]:
        """The last prompt's UI outputs per node (what ``/history`` serves), e.g. the files a
        ``WanWorkerSaveChunk`` wrote and its ``wan_chunk`` report."""
        return dict((getattr(self.executor, "history_result", None) or {}).get("outputs", {}))


def _short_error(detail: Any) -> str:
    if isinstance(detail, dict):
        tb = "".join(detail.get("traceback", [])[-3:])
        where = f"node {detail.get('node_id')} ({detail.get('node_type')})"
        return f"{where}: {detail.get('exception_message')}\n{tb}"
    return str(detail)


class RecordingServer:
    """What PromptExecutor needs of ComfyUI's PromptServer, recording node boundaries."""

    def __init__(self, runtime: ComfyRuntime) -> None:
        self.runtime = runtime
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict[str, Any] = {}
        self.graph: dict[str, Any] = {}
        self.runs: list[NodeRun] = []
        self.current: NodeRun | None = None
        self.stand_ins: set[str] = set()
        self.chunk = 1  # the chunk whose prompt runs (NodeRun.chunk)
        self.cached: list[str] = []  # the nodes of the running prompt ComfyUI had in its cache
        # Called with each finished node run (the benchmark saves progress: a run cut short by a
        # time limit still says which nodes ran and for how long).
        self.on_node: Callable[[NodeRun], None] | None = None

    def begin(self, graph: dict[str, Any]) -> None:
        self.graph, self.runs, self.current, self.cached = graph, [], None, []

    def _close_current(self, now: float) -> None:
        if self.current is None:
            return
        run = self.current
        run.end = now
        monitor = self.runtime.monitor
        if monitor is not None:
            run.peak_allocated_gib = monitor.take_allocated_peak()
            run.peak_used_gib, run.gpu_busy_s, run.gpu_idle_s = monitor.window(run.start, run.end)
        self.runs.append(run)
        self.current = None
        if self.on_node is not None:
            self.on_node(run)

    def send_sync(self, event: str, data: Any, sid: str | None = None) -> None:
        if event == "execution_cached" and isinstance(data, dict):
            self.cached = [str(node) for node in data.get("nodes", [])]
            return
        if event != "executing" or not isinstance(data, dict):
            return
        self.runtime.sync()
        now = time.perf_counter()
        self._close_current(now)
        node = data.get("node")
        if node is None:
            return
        class_type = str(self.graph.get(node, {}).get("class_type", "?"))
        self.current = NodeRun(
            node=str(node),
            class_type=class_type,
            start=now,
            end=now,
            stand_in=class_type in self.stand_ins,
            chunk=self.chunk,
        )
        if self.runtime.monitor is not None:
            self.runtime.monitor.reset_allocated_peak()

    def step(self) -> None:
        if self.current is not None and self.current.class_type == SAMPLER_CLASS:
            self.runtime.sync()
            now = time.perf_counter()
            previous = self.current.start + sum(self.current.steps)
            self.current.steps.append(now - previous)

    def finish(self) -> list[NodeRun]:
        self.runtime.sync()
        self._close_current(time.perf_counter())
        return self.runs

    def queue_updated(self) -> None:
        pass


def _hook_progress(server: RecordingServer) -> None:
    """ComfyUI's progress-bar hook, as main.py installs it (progress state is kept current)."""
    import comfy.model_management
    import comfy.utils
    from comfy_execution.progress import get_progress_state

    def hook(
        value: float,
        total: float,
        preview_image: Any,
        prompt_id: str | None = None,
        node_id: str | None = None,
    ) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        get_progress_state().update_progress(node_id or server.last_node_id, value, total, preview_image)

    comfy.utils.set_progress_bar_global_hook(hook)


def _time_sampler_steps(runtime: ComfyRuntime) -> None:
    """Every sampler step ends with latent_preview's callback: record the step's end there."""
    import latent_preview

    original = latent_preview.prepare_callback

    def prepare_callback(model: Any, steps: int, x0_output_dict: Any = None) -> Any:
        callback = original(model, steps, x0_output_dict)

        def timed(step: int, x0: Any, x: Any, total_steps: int) -> Any:
            runtime.server.step()
            return callback(step, x0, x, total_steps)

        return timed

    latent_preview.prepare_callback = prepare_callback


class GpuMonitor:
    """torch's allocator peak per node, and NVML samples (device memory used, utilisation) every 50 ms."""

    PERIOD_S = 0.05

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.samples: list[tuple[float, float, int]] = []  # (time, used GiB, utilisation %)
        self.nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self.nvml = pynvml
        except Exception as exc:  # nvidia-ml-py missing or no NVML: torch counters only
            logging.warning("NVML unavailable (%s): no device-wide memory or GPU idle figures", exc)
            return
        threading.Thread(target=self._poll, name="gpu-monitor", daemon=True).start()

    def _poll(self) -> None:
        while True:
            try:
                used = self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**30
                busy = self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu
                self.samples.append((time.perf_counter(), used, int(busy)))
            except Exception:
                pass
            time.sleep(self.PERIOD_S)

    def reset_allocated_peak(self) -> None:
        with contextlib.suppress(Exception):
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def take_allocated_peak(self) -> float | None:
        try:
            return round(self.torch.cuda.max_memory_allocated(self.device) / 2**30, 2)
        except Exception:
            return None

    def window(self, start: float, end: float) -> tuple[float | None, float | None, float | None]:
        """(peak used GiB, busy s, idle s) over [start, end) from the samples."""
        if self.nvml is None:
            return None, None, None
        inside = [s for s in list(self.samples) if start <= s[0] < end]
        if not inside:
            return None, None, None
        busy = sum(1 for s in inside if s[2] > 0) * self.PERIOD_S
        idle = sum(1 for s in inside if s[2] == 0) * self.PERIOD_S
        return round(max(s[1] for s in inside), 2), round(busy, 2), round(idle, 2)


def set_env_defaults() -> None:
    """What main.py sets before anything is imported."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("DO_NOT_TRACK", "1")
