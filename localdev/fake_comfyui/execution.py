"""Running prompts as a real 0.33.0 server does: one at a time from the queue, nodes in its order,
outputs of unchanged nodes taken from the cache, events sent to the prompt's client (the message
types, shapes and order of ``/work/shared/comfyui/captures``), the history written before the
``executing {node: null}`` that ends a prompt; interrupts honoured between nodes (and in a sampler
loop); the faults of ``faults.py`` applied on the way."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import io
import json
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from localdev.fake_comfyui.catalogue import NODE_CLASSES, is_output_node
from localdev.fake_comfyui.clients import Clients
from localdev.fake_comfyui.faults import RUN_FAULTS, Fault, FaultBook, injected_failure
from localdev.fake_comfyui.files import strip_annotation
from localdev.fake_comfyui.nodes import NODE_FUNCTIONS, SAVE_CLASSES
from localdev.fake_comfyui.values import NodeContext, NodeFailure, SaveOverrides
from worker.chunk_store import file_sha256
from worker.graph.api import is_link

PREVIEW_IMAGE_EVENT, JPEG_FORMAT = 1, 1


def now_ms() -> int:
    return int(time.time() * 1000)


# -- execution order -------------------------------------------------------------------------


class ExecutionOrder:
    """The order a real server runs nodes in: a depth-first staging from the outputs, then
    among the ready nodes an output node first, else one that feeds an output (one or two
    links away), else the first ready node in staging order. Cached nodes are skipped,
    except output nodes, which re-report their cached result."""

    def __init__(self, prompt: dict[str, Any], cached: set[str]) -> None:
        self.prompt = prompt
        self.cached = cached
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocks: dict[str, list[str]] = {}

    def add(self, root: str) -> None:
        stack, links = [root], []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count[node_id] = 0
            self.blocks[node_id] = []
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value) and str(value[0]) not in self.cached:
                    stack.append(str(value[0]))
                    links.append((str(value[0]), node_id))
        for source, target in links:
            if target not in self.blocks[source]:
                self.blocks[source].append(target)
                self.block_count[target] += 1

    def _is_output(self, node_id: str) -> bool:
        return is_output_node(self.prompt[node_id]["class_type"])

    def next(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocks[node_id]):
                return node_id
        for node_id in ready:
            if any(self._is_output(b2) for b in self.blocks[node_id] for b2 in self.blocks[b]):
                return node_id
        return ready[0]

    def done(self, node_id: str) -> None:
        self.pending.pop(node_id, None)
        for target in self.blocks[node_id]:
            self.block_count[target] -= 1


def node_signatures(prompt: dict[str, Any], input_dir: Path) -> dict[str, str]:
    """A content signature per node: class, inputs, upstream signatures, loaded file content."""
    signatures: dict[str, str] = {}

    def signature(node_id: str, trail: tuple[str, ...] = ()) -> str:
        if node_id in signatures:
            return signatures[node_id]
        node = prompt[node_id]
        parts: list[Any] = [node["class_type"]]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and str(value[0]) in prompt and str(value[0]) not in trail:
                parts.append((name, signature(str(value[0]), (*trail, node_id)), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=str)))
        if node["class_type"] in ("LoadImage", "LoadVideo"):
            value = node["inputs"].get("image", node["inputs"].get("file"))
            parts.append(_file_fingerprint(input_dir, value))
        signatures[node_id] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return signatures[node_id]

    for node_id in prompt:
        signature(node_id)
    return signatures


def _file_fingerprint(input_dir: Path, name: Any) -> str:
    if not isinstance(name, str):
        return ""
    try:
        return file_sha256(input_dir / strip_annotation(name)[0])
    except OSError:
        return "missing"


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class RunningPrompt:
    """One prompt being executed."""

    item: QueueItem
    client_id: str | None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    messages: list[list[Any]] = field(default_factory=list)
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)


class _Outcome(Exception):
    def __init__(self, event: str, data: dict[str, Any]) -> None:
        super().__init__(event)
        self.event = event
        self.data = data


class PromptQueue:
    """The queue, the running prompt, the history and the node cache; runs on the server's event loop."""

    def __init__(self, input_dir: Path, output_dir: Path, clients: Clients, faults: FaultBook) -> None:
        self.input_dir = input_dir
        self.output_dir = output_dir
        self.clients = clients
        self.faults = faults
        self.pending: list[QueueItem] = []
        self.running: RunningPrompt | None = None
        self.current_node: str | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.last_ui: dict[str, dict[str, Any]] = {}
        self.interrupt_requested = False
        self.free_requested = False
        self._counter = 0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._preview = _tiny_jpeg()

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._prompt_worker())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker

    def next_number(self) -> int:
        self._counter += 1
        return self._counter

    async def add(self, item: QueueItem) -> None:
        self.pending.append(item)
        self.pending.sort(key=lambda queued: queued.number)
        await self.broadcast_status()
        assert self._wake is not None
        self._wake.set()

    async def delete(self, prompt_ids: list[Any]) -> None:
        """Pending prompts removed without a word to their clients, as on a real server."""
        for prompt_id in prompt_ids:
            before = len(self.pending)
            self.pending = [item for item in self.pending if item.prompt_id != prompt_id]
            if len(self.pending) != before:
                await self.broadcast_status()

    async def clear(self) -> None:
        self.pending.clear()
        await self.broadcast_status()

    def interrupt(self, prompt_id: str | None) -> None:
        if prompt_id is None or (self.running is not None and self.running.item.prompt_id == prompt_id):
            self.interrupt_requested = True

    def free(self) -> None:
        if self.running is None:
            self.cache.clear()
        else:
            self.free_requested = True

    def remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    async def broadcast_status(self) -> None:
        await self.clients.send(
            "status", {"status": {"exec_info": {"queue_remaining": self.remaining()}}}, None
        )

    async def _prompt_worker(self) -> None:
        assert self._wake is not None
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = self.pending.pop(0)
            run = RunningPrompt(item=item, client_id=item.extra_data.get("client_id"))
            self.running = run
            try:
                await self._execute(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in the fake must not kill its queue
                print(
                    f"fake ComfyUI: internal error while running {item.prompt_id}: {exc!r}", file=sys.stderr
                )
            finally:
                self.running = None
                self.current_node = None
                if self.free_requested:
                    self.cache.clear()
                    self.free_requested = False

    async def _send_run(
        self, run: RunningPrompt, event: str, data: dict[str, Any], *, to_history: bool = False
    ) -> None:
        if to_history:
            run.messages.append([event, data])
        if run.client_id is not None:
            await self.clients.send(event, data, run.client_id)

    async def _progress_state(
        self, run: RunningPrompt, node_id: str, state: str, value: float, maximum: float
    ) -> None:
        prompt_id = run.item.prompt_id
        run.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        # With no client_id the real server broadcasts these (and only these) to everyone.
        await self.clients.send(
            "progress_state", {"prompt_id": prompt_id, "nodes": copy.deepcopy(run.progress)}, run.client_id
        )

    async def _execute(self, run: RunningPrompt) -> None:
        item = run.item
        prompt_id, prompt = item.prompt_id, item.prompt
        self.interrupt_requested = False  # a stale interrupt does not reach the next prompt
        await self.broadcast_status()
        await self._send_run(
            run, "execution_start", {"prompt_id": prompt_id, "timestamp": now_ms()}, to_history=True
        )
        signatures = await asyncio.to_thread(node_signatures, prompt, self.input_dir)
        self.cache = {sig: value for sig, value in self.cache.items() if sig in set(signatures.values())}
        cached_rerun = self.faults.take("cached_rerun")
        if cached_rerun is not None and all(o in self.last_ui for o in item.outputs):
            cached = list(prompt)
        else:
            cached = [nid for nid in prompt if signatures[nid] in self.cache]
        for kind in RUN_FAULTS:
            fault = self.faults.take(kind)
            if fault is not None:
                run.faults[kind] = fault
        data = {"nodes": cached, "prompt_id": prompt_id, "timestamp": now_ms()}
        await self._send_run(run, "execution_cached", data, to_history=True)

        order = ExecutionOrder(prompt, set(cached))
        for output_id in item.outputs:
            order.add(output_id)
        results: dict[str, tuple[Any, ...]] = {}
        try:
            while (node_id := order.next()) is not None:
                if node_id in cached:
                    await self._report_cached_output(
                        run, node_id, signatures[node_id], cached_rerun is not None
                    )
                else:
                    await self._run_node(run, node_id, signatures, results)
                order.done(node_id)
        except _Outcome as outcome:
            await self._send_run(run, outcome.event, outcome.data, to_history=True)
            await self._finish(run, success=False)
            return
        await self._send_run(
            run, "execution_success", {"prompt_id": prompt_id, "timestamp": now_ms()}, to_history=True
        )
        await self._finish(run, success=True)

    async def _report_cached_output(
        self, run: RunningPrompt, node_id: str, signature: str, forced: bool
    ) -> None:
        ui = self.last_ui.get(node_id) if forced else (self.cache.get(signature) or ((), None))[1]
        if ui:
            run.ui_outputs[node_id] = ui
            data = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.item.prompt_id}
            await self._send_run(run, "executed", data)
        await self._progress_state(run, node_id, "finished", 1, 1)

    async def _run_node(
        self,
        run: RunningPrompt,
        node_id: str,
        signatures: dict[str, str],
        results: dict[str, tuple[Any, ...]],
    ) -> None:
        prompt_id = run.item.prompt_id
        node = run.item.prompt[node_id]
        class_type = node["class_type"]
        await self._progress_state(run, node_id, "running", 0.0, 1.0)
        await self._send_run(
            run, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
        )
        self.current_node = node_id
        self._check_interrupt(run, node_id)
        kwargs = self._node_inputs(node, signatures, results)
        await self._apply_timing_faults(run, node_id)
        failure = injected_failure(run.faults, node_id, run.item.outputs[0])
        if failure is not None:
            raise self._error_outcome(run, node_id, kwargs, failure)
        overrides = self.faults.save_overrides() if class_type in SAVE_CLASSES else SaveOverrides()
        ctx = NodeContext(self.input_dir, self.output_dir, run.item.prompt, overrides)
        try:
            outputs, ui = await asyncio.to_thread(NODE_FUNCTIONS[class_type], ctx, **kwargs)
        except NodeFailure as exc:
            raise self._error_outcome(run, node_id, kwargs, exc) from exc
        except Exception as exc:
            failure = NodeFailure(type(exc).__name__, str(exc))
            raise self._error_outcome(run, node_id, kwargs, failure) from exc
        results[node_id] = outputs
        self.cache[signatures[node_id]] = (outputs, ui)
        run.executed.append(node_id)
        if ui:
            run.ui_outputs[node_id] = ui
            self.last_ui[node_id] = ui
            data = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id}
            await self._send_run(run, "executed", data)
        await self._progress_state(run, node_id, "finished", 1.0, 1.0)
        drop = run.faults.get("drop_socket")
        if drop is not None and str(drop.params.get("after_node") or node_id) == node_id:
            del run.faults["drop_socket"]
            await self.clients.drop(run.client_id)

    def _node_inputs(
        self, node: dict[str, Any], signatures: dict[str, str], results: dict[str, tuple[Any, ...]]
    ) -> dict[str, Any]:
        declared = NODE_CLASSES[node["class_type"]]["input"]
        names = {**declared.get("required", {}), **declared.get("optional", {})}
        kwargs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name not in names and node["class_type"] != "SaveVideo":
                continue
            if is_link(value):
                source = str(value[0])
                outputs = results.get(source) or self.cache[signatures[source]][0]
                value = outputs[value[1]]
            kwargs[name.replace(".", "_")] = value
        return kwargs

    def _check_interrupt(self, run: RunningPrompt, node_id: str) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            raise _Outcome(
                "execution_interrupted",
                {
                    "prompt_id": run.item.prompt_id,
                    "node_id": node_id,
                    "node_type": run.item.prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                    "timestamp": now_ms(),
                },
            )

    async def _apply_timing_faults(self, run: RunningPrompt, node_id: str) -> None:
        slow = run.faults.get("slow")
        if slow is not None:
            await asyncio.sleep(float(slow.params.get("seconds", 1.0)))
        output_node = run.item.outputs[0]
        progress = run.faults.get("progress")
        if progress is not None and progress.aims_at(node_id, output_node):
            steps = int(progress.params.get("steps", 4))
            for step in range(1, steps + 1):
                await asyncio.sleep(float(progress.params.get("step_s", 0.05)))
                self._check_interrupt(run, node_id)
                data = {"value": step, "max": steps, "prompt_id": run.item.prompt_id, "node": node_id}
                await self.clients.send("progress", data, run.client_id)
                await self._progress_state(run, node_id, "running", float(step), float(steps))
                if progress.params.get("preview", True) and run.client_id is not None:
                    payload = struct.pack(">II", PREVIEW_IMAGE_EVENT, JPEG_FORMAT) + self._preview
                    await self.clients.send_bytes(payload, run.client_id)
        hang = run.faults.get("hang")
        if hang is not None and hang.aims_at(node_id, output_node):
            while True:  # like a sampler loop: only an interrupt ends it
                await asyncio.sleep(0.05)
                self._check_interrupt(run, node_id)

    def _error_outcome(
        self, run: RunningPrompt, node_id: str, kwargs: dict[str, Any], failure: NodeFailure
    ) -> _Outcome:
        node = run.item.prompt[node_id]
        shown = {
            k: [v if isinstance(v, str | int | float | bool) or v is None else f"<fake {type(v).__name__}>"]
            for k, v in kwargs.items()
        }
        return _Outcome(
            "execution_error",
            {
                "prompt_id": run.item.prompt_id,
                "node_id": node_id,
                "node_type": node["class_type"],
                "executed": list(run.executed),
                "exception_message": failure.exception_message,
                "exception_type": failure.exception_type,
                "traceback": [f'  File "localdev/fake_comfyui/nodes.py", in {node["class_type"]} (fake)\n'],
                "current_inputs": shown,
                "current_outputs": list(run.item.prompt),
                "timestamp": now_ms(),
            },
        )

    async def _finish(self, run: RunningPrompt, *, success: bool) -> None:
        item = run.item
        meta = {
            nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
            for nid in run.ui_outputs
        }
        self.history[item.prompt_id] = {
            "prompt": copy.deepcopy(item.as_list()),
            "outputs": copy.deepcopy(run.ui_outputs) if success else {},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": run.messages,
            },
            "meta": meta if success else {},
        }
        self.running = None
        self.current_node = None
        await self.broadcast_status()
        await self._send_run(run, "executing", {"node": None, "prompt_id": item.prompt_id})


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()
