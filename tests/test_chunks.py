"""Chunk plans and chunk graphs (issue 10): a clip generated as prompts of K windows must condition
every output frame on its own driving frame, continue each chunk exactly as a window continues
inside a prompt, and add up to exactly N frames. Checked on the pinned graph, statically."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from worker.config import DEFAULT_WORKFLOW
from worker.graph.catalogue import load_catalogue
from worker.graph.checks import check_graph
from worker.graph.chunks import plan_frame_chunks, plan_window_chunks, slice_indices
from worker.graph.frame_count import FrameCounter
from worker.graph.windows import covered_frames, plan_windows, reflect_indices
from worker.graph.workflow import Workflow
from worker.models import load_manifest

CLIPS = (1, 77, 78, 149, 150, 221, 240, 293, 294, 500, 721, 1000)


@pytest.mark.parametrize("frames", CLIPS)
@pytest.mark.parametrize("per_chunk", (1, 2, 3, 4, 50))
def test_chunks_are_the_clips_windows_in_order_and_add_up_to_n(frames, per_chunk):
    plan = plan_windows(frames)
    chunks = plan_window_chunks(frames, chunk_windows=per_chunk)
    assert len(chunks) == -(-len(plan) // per_chunk)
    assert sum(c.frames for c in chunks) == frames
    padded = reflect_indices(frames, covered_frames(plan))
    produced = 0
    for chunk in chunks:
        assert chunk.count == len(chunks) and chunk.output_start == produced
        assert chunk.continues == (chunk.index > 1)
        clip_windows = plan[chunk.first_window - 1 : chunk.first_window - 1 + len(chunk.windows)]
        for local, window in zip(chunk.windows, clip_windows, strict=True):
            # the same window: same driving frames (shifted by the slice), length, trim, new frames
            assert chunk.start + local.start == window.start
            assert (local.length, local.trim, local.new_frames) == (
                window.length,
                window.trim,
                window.new_frames,
            )
        # the slice holds exactly the frames its windows condition on, as a single prompt pads them
        assert chunk.slice_frames == covered_frames(list(chunk.windows))
        assert slice_indices(chunk, frames) == padded[chunk.start : chunk.start + chunk.slice_frames]
        assert chunk.reflected == 0 or chunk.last
        produced += chunk.frames


def test_a_continuing_chunk_starts_with_the_frames_it_regenerates():
    first, second, third = plan_window_chunks(721, chunk_windows=4)
    # chunk 2's first window (the clip's 5th) starts 5 frames before chunk 1's frames end
    assert (first.frames, second.start, second.windows[0].trim) == (77 + 3 * 72, 288, 5)
    assert first.start + first.real_frames == second.start + 5
    assert (
        third.last and third.first_window == 9 and third.reflected == covered_frames(plan_windows(721)) - 721
    )


def test_frame_chunks_split_a_clip_without_windows():
    chunks = plan_frame_chunks(100, chunk_frames=48)
    assert [(c.start, c.frames, c.slice_frames) for c in chunks] == [(0, 48, 48), (48, 48, 48), (96, 4, 4)]
    assert not any(c.continues for c in chunks)


@pytest.fixture(scope="module")
def workflow() -> Workflow:
    return Workflow.load(DEFAULT_WORKFLOW)


def chunk_graphs(workflow: Workflow, frames: int, per_chunk: int) -> list[tuple[Any, dict[str, Any]]]:
    chunks = workflow.chunks(frames, chunk_windows=per_chunk)
    graphs = []
    for chunk in chunks:
        params = workflow.example_params(chunk.frames)
        graph = workflow.build(
            params,
            chunk=chunk,
            clip_frames=frames,
            motion_file="wan-worker/x/motion.safetensors" if chunk.continues else None,
        )
        graphs.append((chunk, graph))
    return graphs


@pytest.mark.parametrize(("frames", "per_chunk"), [(721, 4), (240, 1), (300, 2), (1000, 3)])
def test_every_chunk_graph_passes_the_pinned_checks(workflow, frames, per_chunk):
    catalogue, installed = load_catalogue(), load_manifest().installed()
    for chunk, graph in chunk_graphs(workflow, frames, per_chunk):
        problems = check_graph(
            graph,
            catalogue,
            installed_models=installed,
            frames=chunk.frames,
            fps=24.0,
            width=1280,
            height=720,
            driving_frames=chunk.slice_frames,
        )
        assert problems == [], (chunk.index, problems)


def _animates(graph: dict[str, Any]) -> list[str]:
    ids = [n for n, node in graph.items() if node["class_type"] == "WanAnimateToVideoOfficialMask"]
    return sorted(ids, key=lambda n: int(n))


def test_chunk_graphs_wire_the_continuation_and_the_handoff(workflow):
    (c1, g1), (c2, g2), (_c3, g3) = chunk_graphs(workflow, 721, 4)
    # chunk 1 starts the clip as one prompt would; it saves its last window's decode for chunk 2
    assert "16" not in g1 and g1["30"]["inputs"]["video_frame_offset"] == 0
    assert g1["53"]["inputs"]["motion"] == ["4043", 0]  # window 4's VAEDecode
    assert g1["53"]["inputs"]["images"] == ["51", 0] and g1["51"]["inputs"]["length"] == c1.frames
    # chunk 2: no window-1 nodes; its first window continues from the loaded frames at offset 5
    assert not {"30", "31", "32", "33"} & set(g2)
    assert g2["16"] == {
        "class_type": "WanWorkerLoadMotionFrames",
        "inputs": {"file": "wan-worker/x/motion.safetensors"},
        "_meta": {"title": "The previous chunk's last 5 decoded frames, float32"},
    }
    assert g2["40"]["inputs"]["continue_motion"] == ["16", 0]
    assert g2["40"]["inputs"]["video_frame_offset"] == 5
    assert g2["2040"]["inputs"]["continue_motion"] == ["43", 0]
    assert g2["2040"]["inputs"]["video_frame_offset"] == ["40", 5]
    assert g2["15"]["inputs"]["length"] == c2.slice_frames == 293
    assert list(g2["50"]["inputs"]) == [f"images.image{i}" for i in range(4)]
    assert g2["53"]["inputs"]["motion"] == ["4043", 0]
    # the last chunk saves no motion frames
    assert "motion" not in g3["53"]["inputs"] and len(_animates(g3)) == 2
    # the window titles count in the clip
    assert g3["40"]["_meta"]["title"].startswith("Window 9:")


def test_each_chunk_window_conditions_on_its_own_driving_frames(workflow):
    """Through the core node's offset arithmetic (worker/graph/frame_count.py): window k of a
    chunk starts at the slice frame that is the clip's window start."""
    plan = plan_windows(721)
    for chunk, graph in chunk_graphs(workflow, 721, 4):
        counter = FrameCounter(graph, chunk.slice_frames)
        starts = [counter.window_start(a) for a in _animates(graph)]
        expected = [plan[chunk.first_window - 1 + i].start - chunk.start for i in range(len(chunk.windows))]
        assert sorted(starts) == expected, chunk.index


def test_the_samplers_are_those_of_one_prompt(workflow):
    """Same seed, steps, sampler on every window of every chunk: with the same inputs a chunk's
    window denoises the same noise as the window of a single prompt."""
    whole = workflow.build(workflow.example_params(721))
    samplers = {
        (n["inputs"]["seed"], n["inputs"]["steps"], n["inputs"]["sampler_name"], n["inputs"]["cfg"])
        for n in whole.values()
        if n["class_type"] == "KSampler"
    }
    for _chunk, graph in chunk_graphs(workflow, 721, 4):
        for node in graph.values():
            if node["class_type"] == "KSampler":
                key = (node["inputs"]["seed"], node["inputs"]["steps"], node["inputs"]["sampler_name"])
                assert (*key, node["inputs"]["cfg"]) in samplers


def test_a_continuing_window_that_restarts_at_frame_0_is_caught(workflow):
    (_c1, _g1), (c2, g2), _ = chunk_graphs(workflow, 721, 4)
    broken = copy.deepcopy(g2)
    broken["40"]["inputs"]["video_frame_offset"] = 0
    problems = check_graph(broken, load_catalogue(), frames=c2.frames, driving_frames=c2.slice_frames)
    assert any("must have video_frame_offset = continue_motion_max_frames (5)" in p for p in problems)


def test_a_chunk_saved_from_the_wrong_window_is_caught(workflow):
    (c1, g1), _, _ = chunk_graphs(workflow, 721, 4)
    broken = copy.deepcopy(g1)
    broken["53"]["inputs"]["images"] = ["4043", 0]  # the untrimmed decode instead of the joined frames
    problems = check_graph(broken, load_catalogue(), frames=c1.frames, driving_frames=c1.slice_frames)
    assert any("without dropping the first trim_image frames" in p for p in problems)


def test_chunk_windows_0_or_a_short_clip_is_one_prompt(workflow):
    assert len(workflow.chunks(721, chunk_windows=0)) == 1
    assert len(workflow.chunks(240)) == 1  # 4 windows: the pinned chunk_windows
    assert len(workflow.chunks(294)) == 2
