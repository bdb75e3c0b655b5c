"""Faults the fake injects on request: ``POST /fake/fault`` (a control endpoint a real server does not
have) or ``FakeComfyUI.set_fault`` in Python.

=================  ====================================================================
kind               effect and params. Each fault applies to the next ``times`` prompts
                   (default 1; ``times: null`` = until cleared). ``node`` defaults to
                   the output node; a fault aimed at a cached node does not fire.
=================  ====================================================================
reject             ``POST /prompt`` -> 400 ``value_not_in_list`` (like a model file that is
                   not installed). ``node`` (default: the first), ``input_name``,
                   ``received_value``
partial_reject     ``POST /prompt`` -> 200 with non-empty ``node_errors``; the prompt runs
runtime_error      ``execution_error`` in ``node``; ``exception_type``, ``exception_message``
oom                ``execution_error`` in ``node``: ``torch.OutOfMemoryError``, "CUDA out of
                   memory. ..."
drop_socket        the prompt's websocket is cut after ``after_node`` finished (default: the
                   first node that runs); the prompt goes on and its events are lost
hang               ``node`` never finishes until interrupted (checked like a sampler loop)
slow               every node that runs takes ``seconds`` (1.0) longer; interrupts are
                   honoured between nodes only, as on a real server
progress           ``node`` emits sampler ``progress`` messages: ``steps`` (4), ``step_s``
                   (0.05), ``preview`` (true: one binary preview frame per step)
wrong_size         the save node (SaveVideo or WanWorkerSaveChunk) writes ``width`` x
                   ``height`` (default: half size); WanWorkerSaveChunk reports that size
wrong_fps          SaveVideo writes at ``fps`` (default: 25, or 30 when 25 was asked);
                   WanWorkerSaveChunk takes the fault and ignores it (raw frames, no fps)
wrong_frames       the save node writes ``frames`` frames (default: one fewer);
                   WanWorkerSaveChunk reports that count (more than it has: the last repeated)
drop_audio         SaveVideo writes no audio track; WanWorkerSaveChunk takes it and ignores it
cached_rerun       the next prompt is answered as if from cache: every node reported
                   cached, the output node re-reports the last file it wrote, no new file
=================  ====================================================================
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from localdev.fake_comfyui.values import NodeFailure, SaveOverrides
from worker.graph.api import is_link

FAULT_KINDS = (
    "reject",
    "partial_reject",
    "runtime_error",
    "oom",
    "drop_socket",
    "hang",
    "slow",
    "progress",
    "wrong_size",
    "wrong_fps",
    "wrong_frames",
    "drop_audio",
    "cached_rerun",
)
# Taken when a prompt starts running; the others when it is submitted or when its save node runs.
RUN_FAULTS = ("runtime_error", "oom", "drop_socket", "hang", "slow", "progress")


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # prompts left; None = until cleared

    def aims_at(self, node_id: str, output_node: str) -> bool:
        return str(self.params.get("node") or output_node) == node_id


class FaultBook:
    """The faults set and not yet used up; thread safe (tests set them from their own thread)."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def set(self, kind: str, *, times: int | None = 1, **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._lock:
            self._faults.append(Fault(kind, params, times))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, kind: str) -> Fault | None:
        """The first fault of ``kind`` with uses left, one use taken."""
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"kind": f.kind, "remaining": f.remaining, **f.params} for f in self._faults]

    def save_overrides(self) -> SaveOverrides:
        """What the wrong_* / drop_audio faults change in the file a save node writes; -1 means "a
        default that depends on what the graph asked for", resolved when the file is rendered."""
        overrides = SaveOverrides()
        size = self.take("wrong_size")
        if size is not None:
            overrides = replace(
                overrides, size=(int(size.params.get("width", -1)), int(size.params.get("height", -1)))
            )
        fps = self.take("wrong_fps")
        if fps is not None:
            overrides = replace(overrides, fps=float(fps.params.get("fps", -1)))
        frames = self.take("wrong_frames")
        if frames is not None:
            overrides = replace(overrides, frames=int(frames.params.get("frames", -1)))
        if self.take("drop_audio") is not None:
            overrides = replace(overrides, drop_audio=True)
        return overrides


def injected_rejection(prompt: dict[str, Any], fault: Fault, outputs: list[str]) -> dict[str, Any]:
    """``node_errors`` of a reject / partial_reject fault: ``value_not_in_list`` in one node."""
    node_id = str(fault.params.get("node") or next(iter(prompt)))
    node = prompt.get(node_id, {"class_type": "Unknown", "inputs": {}})
    plain_inputs = [k for k, v in node.get("inputs", {}).items() if not is_link(v)]
    input_name = fault.params.get("input_name") or (plain_inputs[0] if plain_inputs else "model_name")
    received = fault.params.get(
        "received_value", node.get("inputs", {}).get(input_name, "wan2.2_animate_14B_bf16.safetensors")
    )
    error = {
        "type": "value_not_in_list",
        "message": "Value not in list",
        "details": f"{input_name}: '{received}' not in []",
        "extra_info": {"input_name": input_name, "input_config": [[], {}], "received_value": received},
    }
    return {node_id: {"errors": [error], "dependent_outputs": outputs, "class_type": node.get("class_type")}}


def injected_failure(faults: dict[str, Fault], node_id: str, output_node: str) -> NodeFailure | None:
    """The runtime_error / oom a running prompt's faults put into ``node_id``, if any."""
    error = faults.get("runtime_error")
    if error is not None and error.aims_at(node_id, output_node):
        return NodeFailure(
            str(error.params.get("exception_type", "RuntimeError")),
            str(error.params.get("exception_message", "failure injected into the fake ComfyUI")),
        )
    oom = faults.get("oom")
    if oom is not None and oom.aims_at(node_id, output_node):
        return NodeFailure(
            "torch.OutOfMemoryError",
            "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB "
            "of which 1.12 GiB is free. (injected by the fake ComfyUI)",
        )
    return None
