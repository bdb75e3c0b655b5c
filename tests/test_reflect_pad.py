"""No generated frame depends on invented conditioning (issue: "the last window invents its
conditioning").

The windows of a clip cover more driving frames than the clip has; the pinned graph pads the
driving frames by reflection (comfyui_nodes/wan_worker_nodes/reflect_pad.py) before pose, face,
mask and background are made, as the official pipeline pads its conditioning videos. Checked
here on the CPU: the padding order equals the official one; the graph the worker builds pads to
exactly what its windows read, in both last-window modes; and walking the core node's offset
arithmetic along the built graph, every output frame f is conditioned on driving frame f.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.nodes import load_node_module
from tests.support.wan_official import official_padding_indices, official_target_frames
from worker.graph.wan_rules import ANIMATE_CLASSES
from worker.graph.windows import covered_frames, plan_windows
from worker.graph.windows import reflect_indices as worker_reflect_indices
from worker.graph.workflow import Workflow

REPO = Path(__file__).resolve().parents[1]
WAN = REPO / "workflows" / "wan22_animate_replace.json"
NODE = REPO / "comfyui_nodes" / "wan_worker_nodes" / "reflect_pad.py"
FRAMES = (1, 2, 5, 30, 76, 77, 78, 80, 149, 150, 240, 293, 721)


reflect_pad = load_node_module("reflect_pad.py")


@pytest.mark.parametrize(
    ("frames", "target"), [(1, 5), (2, 9), (4, 20), (30, 77), (240, 293), (77, 77), (80, 60)]
)
def test_padding_order_is_the_official_one(frames: int, target: int) -> None:
    assert reflect_pad.reflect_indices(frames, target) == official_padding_indices(frames, target)
    # the worker's copy (chunk slices are padded by the worker; the node runs inside ComfyUI,
    # which cannot import the worker)
    assert worker_reflect_indices(frames, target) == official_padding_indices(frames, target)


def test_the_node_pads_an_image_batch_by_reflection() -> None:
    images = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 2, 3, 3).contiguous()
    (padded,) = reflect_pad.ImageBatchReflectPad().pad(images, 9)
    assert padded.shape == (9, 2, 3, 3)
    assert padded[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    with pytest.raises(ValueError):
        reflect_pad.reflect_indices(0, 3)


def _workflow(tmp_path: Path, last_window: str) -> Workflow:
    spec = json.loads(WAN.with_suffix(".bindings.json").read_text())
    spec["windows"]["last_window"] = last_window
    (tmp_path / WAN.name).write_bytes(WAN.read_bytes())
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_text(json.dumps(spec))
    return Workflow.load(tmp_path / WAN.name)


def _chain(graph: dict[str, Any]) -> list[str]:
    animates = [n for n, node in graph.items() if node["class_type"] in ANIMATE_CLASSES]
    first = [n for n in animates if not isinstance(graph[n]["inputs"]["video_frame_offset"], list)]
    chain = list(first)
    while nxt := [n for n in animates if graph[n]["inputs"]["video_frame_offset"] == [chain[-1], 5]]:
        chain.append(nxt[0])
    assert len(chain) == len(animates)
    return chain


@pytest.mark.parametrize("last_window", ["full", "fit"])
@pytest.mark.parametrize("frames", FRAMES)
def test_every_output_frame_is_conditioned_on_its_own_driving_frame(
    tmp_path, last_window: str, frames: int
) -> None:
    workflow = _workflow(tmp_path, last_window)
    graph = workflow.build(workflow.example_params(frames))
    pad = graph["15"]["inputs"]
    assert pad["images"] == ["6", 0]
    # Every conditioning video is made from the padded frames.
    assert graph["8"]["inputs"]["images"] == graph["11"]["inputs"]["image"] == graph["14"]["inputs"]["image"]
    assert graph["8"]["inputs"]["images"] == ["15", 0]
    padded = reflect_pad.reflect_indices(frames, pad["length"])  # padded frame i is driving frame padded[i]

    plan = plan_windows(frames, last_window=last_window)
    assert pad["length"] == covered_frames(plan)
    output: list[int] = []  # the driving frame each output frame is conditioned on
    offset_out = 0
    for index, animate in enumerate(_chain(graph)):
        inputs = graph[animate]["inputs"]
        length = inputs["length"]
        # WanAnimateToVideo (comfy_extras/nodes_wan.py): the window starts where the previous one
        # ended, minus the frames it continues from, and slices every conditioning video there.
        start = 0 if index == 0 else max(0, offset_out - inputs["continue_motion_max_frames"])
        assert start + length <= len(padded), "a window reads past the padded conditioning"
        conditioning = padded[start : start + length]
        trim = 0 if index == 0 else 5
        output += conditioning[trim:]
        offset_out = start + length
    assert output[:frames] == list(range(frames))
    # Past the end, the windows see real frames walked backwards, never anything invented.
    assert all(0 <= f < frames for f in output)


@pytest.mark.parametrize("frames", [30, 77, 78, 240, 721])
def test_full_windows_cover_what_the_official_pipeline_pads_to(tmp_path, frames: int) -> None:
    graph = _workflow(tmp_path, "full").build(Workflow.load(WAN).example_params(frames))
    assert graph["15"]["inputs"]["length"] == official_target_frames(frames)


def test_fit_pads_at_most_three_frames(tmp_path) -> None:
    for frames in range(1, 400):
        assert 0 <= covered_frames(plan_windows(frames, last_window="fit")) - frames <= 3, frames
    workflow = _workflow(tmp_path, "fit")
    assert workflow.build(workflow.example_params(240))["15"]["inputs"]["length"] == 241  # 216 + 25
