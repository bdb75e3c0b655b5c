"""bench/host_ram.py: the host-RAM arithmetic of the pinned graph's prompts, one prompt or chunks.

Always (CI, no ComfyUI, no torch): bytes per IMAGE/MASK frame, the sizes of the nodes that carry
the video along the worker's own built graphs (one prompt, and each chunk's prompt as
``Job._run_prompt`` builds it), the cache hits between consecutive chunk prompts, that the peak
grows linearly with the frames (one prompt) and with K (chunks), and that bench/README.md's tables
hold the numbers this code gives.

With a ComfyUI checkout (``WAN_BENCH_COMFYUI`` + ``WAN_BENCH_PYTHON``): a toy job of two chunk
prompts through ComfyUI's executor, every node's cached CPU tensor bytes, the cache hits, the
order and what the first prompt leaves in the cache against the model (``--validate``).
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from bench import host_ram
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.graph.windows import covered_frames, plan_windows

REPO = Path(__file__).resolve().parents[1]
DIMS = host_ram.Dims()
IMAGE = 1280 * 720 * 3 * 4
MASK = 1280 * 720 * 4
SAVE_BLOCK = 2 * 16 * IMAGE + 16 * IMAGE // 4  # WanWorkerSaveChunk quantises 16 frames at a time
MODELS_AND_TEXT = {"3", "7", "10", "20", "21", "22", "23", "24", "25", "26", "27"}


def prompt(frames: int) -> host_ram.Prompt:
    return host_ram.model_graph(host_ram.worker_graph(frames), frames, DIMS)


def rows(p: host_ram.Prompt, class_type: str) -> list[host_ram.NodeRam]:
    return [n for n in p.nodes if n.class_type == class_type]


def test_frame_bytes() -> None:
    assert DIMS.image == IMAGE == 11_059_200
    assert DIMS.mask == MASK == 3_686_400
    assert DIMS.face == 512 * 512 * 3 * 4
    assert DIMS.latent(21) == 16 * 21 * 90 * 160 * 4


def test_video_sized_outputs_on_the_pinned_graph_for_240_frames() -> None:
    p = prompt(240)
    padded = covered_frames(plan_windows(240))
    assert (p.padded, p.windows) == (padded, 4) == (293, 4)
    (pad,) = rows(p, "ImageBatchReflectPad")
    assert (pad.frames, pad.output) == (293, 293 * IMAGE)
    (decode,) = rows(p, "GetVideoComponents")
    assert decode.output == 240 * IMAGE + 240 * 2000 * 2 * 4  # + 10 s of 48 kHz stereo float32
    for cls in ("DrawViTPose", "DrawMaskOnImage"):
        assert [n.output for n in rows(p, cls)] == [293 * IMAGE]
    assert [n.output for n in rows(p, "GrowMaskWithBlur")] == [2 * 293 * MASK]  # mask and inverted
    assert [n.output for n in rows(p, "BlockifyMask")] == [293 * MASK]
    assert [n.output for n in rows(p, "PoseAndFaceDetection")] == [293 * DIMS.face]
    assert [n.output for n in rows(p, "VAEDecode")] == [77 * IMAGE] * 4
    cuts = {n.node: n.frames for n in rows(p, "ImageFromBatch")}
    assert cuts == {"44": 72, "3044": 72, "4044": 72, "51": 240}
    (join,) = rows(p, "BatchImagesNode")
    assert join.frames == 77 + 3 * 72 == 293
    assert all(n.output == 0 for n in rows(p, "TrimVideoLatent"))
    assert all(n.output == 0 for n in rows(p, "UNETLoader") + rows(p, "VAELoader"))
    # The raw-frames output node keeps nothing; it quantises 16 frames at a time: two float32
    # copies of the block and its uint8 bytes.
    (save,) = rows(p, "WanWorkerSaveChunk")
    assert (save.node, save.output, save.transient) == ("53", 0, SAVE_BLOCK)
    assert not rows(p, "WanWorkerLoadMotionFrames") and not rows(p, "SaveVideo")
    assert p.held_at_end == sum(n.output for n in p.nodes)
    assert p.cached_peak == p.held_at_end + save.transient and p.cached_at == "53"
    assert p.floor_peak <= p.cached_peak


def test_order_runs_every_node_after_its_inputs() -> None:
    graphs = [host_ram.worker_graph(721)] + [c.graph for c in host_ram.chunk_graphs(721, 4)]
    for graph in graphs:
        order = host_ram.comfy_order(graph)
        assert sorted(order) == sorted(graph)
        position = {nid: i for i, nid in enumerate(order)}
        for nid, node in graph.items():
            for value in node["inputs"].values():
                if (parent := host_ram._link(value)) is not None:
                    assert position[parent] < position[nid]
        assert order[-1] == "53"


# Recorded by `bench/host_ram.py --validate --toy-frames 80 --chunk-windows 1` (ComfyUI 0.33.0's
# PromptExecutor running the two chunk prompts of an 80-frame job one after the other) and
# `--chunk-windows 0` (the same 80 frames as one prompt).
RAN_CHUNK_1 = "27 5 6 15 7 8 10 11 12 13 14 9 1 2 3 4 24 26 25 30 20 21 22 23 31 32 33 50 51 53"
RAN_CHUNK_2 = "16 5 6 15 8 11 12 13 14 9 1 2 4 40 41 42 43 44 50 51 53"
RAN_ONE_PROMPT = (
    "27 5 6 15 7 8 10 11 12 13 14 9 1 2 3 4 24 26 25 30 20 21 22 23 31 32 33 40 41 42 43 44 50 51 53"
)


def test_order_is_the_one_comfyui_ran() -> None:
    assert host_ram.comfy_order(host_ram.worker_graph(80)) == RAN_ONE_PROMPT.split()
    first, second = host_ram.chunk_graphs(80, 1)
    assert host_ram.comfy_order(first.graph) == RAN_CHUNK_1.split()
    hits = host_ram.cache_hits(first.graph, second.graph)
    assert host_ram.comfy_order(second.graph, cached=hits) == RAN_CHUNK_2.split()


def test_chunk_graphs_are_the_workers() -> None:
    chunks = host_ram.chunk_graphs(721, 4)  # 10 windows: 4 + 4 + 2
    assert [len(c.chunk.windows) for c in chunks] == [4, 4, 2]
    assert [c.driving_frames for c in chunks] == [293, 293, 149]
    assert [c.chunk.frames for c in chunks] == [293, 288, 140] and sum(c.chunk.frames for c in chunks) == 721
    assert not any(c.audio for c in chunks)  # a slice is video only (chunk_media.cut_slice)
    for c in chunks:
        graph = c.graph
        assert graph["15"]["inputs"]["length"] == c.driving_frames
        assert graph["51"]["inputs"]["length"] == c.chunk.frames
        assert ("motion" in graph["53"]["inputs"]) == (not c.chunk.last)
        assert ("16" in graph) == c.chunk.continues
        assert graph["5"]["inputs"]["file"] == f"wan-worker/job-{c.chunk.index:04d}/driving.mp4"
    assert chunks[1].graph["16"]["inputs"]["file"] == "wan-worker/job-0002/motion.safetensors"
    # A clip of at most K windows is one prompt, the whole conformed video (audio included): K = 0.
    (whole,) = host_ram.chunk_graphs(240, 4)
    assert (whole.driving_frames, whole.audio, whole.chunk.count) == (240, True, 1)
    assert whole.graph == host_ram.chunk_graphs(240, 0, names=lambda i: host_ram.worker_names(1))[0].graph


def test_a_continuing_chunk_prompt() -> None:
    job = host_ram.model_job(721, 4, DIMS)
    p = job.prompts[1]
    (load,) = rows(p, "WanWorkerLoadMotionFrames")
    assert (load.node, load.output, load.transient) == ("16", 5 * IMAGE, 0)
    (decode,) = rows(p, "GetVideoComponents")
    assert decode.output == 293 * IMAGE  # the slice: no audio
    assert [n.output for n in rows(p, "ImageBatchReflectPad")] == [293 * IMAGE]
    cuts = {n.node: n.frames for n in rows(p, "ImageFromBatch")}
    assert cuts == {"44": 72, "2044": 72, "3044": 72, "4044": 72, "51": 288}
    (save,) = rows(p, "WanWorkerSaveChunk")
    assert (save.output, save.transient) == (0, SAVE_BLOCK)
    assert p.cached_peak == p.held_at_end + save.transient


def test_cache_hits_between_chunk_prompts_are_the_models_and_the_text() -> None:
    job = host_ram.model_job(1440, 2, DIMS)
    assert [n.node for n in job.prompts[0].nodes if not n.ran] == []
    for later in job.prompts[1:]:
        assert {n.node for n in later.nodes if not n.ran} == MODELS_AND_TEXT
        assert sum(n.output for n in later.nodes if not n.ran) == 2 * 512 * 4096 * 4  # the two text encodes
    # Keys are by content, not by node id: the same subgraph under other ids is a hit.
    graph = job.chunks[1].graph
    renamed = {f"9{nid}": {**node, "inputs": {k: [f"9{v[0]}", v[1]] if host_ram._link(v) else v
                                               for k, v in node["inputs"].items()}}
               for nid, node in graph.items()}  # fmt: skip
    assert host_ram.cache_hits(graph, renamed) == {f"9{nid}" for nid in graph}


def test_job_peak_is_the_largest_prompt_or_a_change_of_prompt() -> None:
    job = host_ram.model_job(1440, 4, DIMS)
    assert len(job.prompts) == 5 and len(job.transitions) == 4
    for before, after, transition in zip(job.prompts, job.prompts[1:], job.transitions, strict=False):
        first = next(n for n in after.nodes if n.ran)
        assert first.class_type == "WanWorkerLoadMotionFrames"
        assert transition == before.held_at_end + first.output
    assert job.cached_peak == max(p.cached_peak for p in job.prompts) > max(job.transitions)
    assert job.floor_peak == max(p.floor_peak for p in job.prompts)
    # Full continuing chunks are alike: the same peak at 30 s and at 60 s.
    assert host_ram.model_job(721, 4, DIMS).cached_peak == job.cached_peak


def test_peak_grows_linearly_with_the_frames() -> None:
    # Full windows only (N = 77 + 72k): no reflect padding, so the model is affine in k exactly.
    peaks = [prompt(77 + 72 * k) for k in (2, 4, 6, 8)]
    steps = [b.cached_peak - a.cached_peak for a, b in itertools.pairwise(peaks)]
    assert steps[0] > 0 and steps == [steps[0]] * 3
    # The floor is the largest of per-node linear functions: linear once one node (14) is the worst.
    long = [prompt(77 + 72 * k) for k in (6, 8, 10, 12)]
    assert {p.floor_at for p in long} == {"14"}
    floors = [b.floor_peak - a.floor_peak for a, b in itertools.pairwise(long)]
    assert floors[0] > 0 and floors == [floors[0]] * 3
    per_frame = steps[0] / (2 * 72)
    assert 105e6 < per_frame < 125e6  # ~10 full-size float32 frames per driving frame


def test_chunk_peak_grows_linearly_with_k() -> None:
    jobs = [host_ram.model_job(1440, k, DIMS) for k in range(1, 7)]
    steps = [b.cached_peak - a.cached_peak for a, b in itertools.pairwise(jobs)]
    # K = 1 peaks in its window (node 40); from K = 2 on at the save node, 8.3 GB a window more
    assert [j.prompts[1].cached_at for j in jobs] == ["40", "53", "53", "53", "53", "53"]
    assert steps[1:] == [steps[1]] * 4 and 8.0e9 < steps[1] < 8.6e9
    floors = [b.floor_peak - a.floor_peak for a, b in itertools.pairwise(jobs)]
    assert floors[1:] == [floors[1]] * 4


def _section() -> str:
    text = (REPO / "bench" / "README.md").read_text()
    return text.split("## Host RAM per prompt", 1)[1].split("\n## ", 1)[0]


def test_readme_chunk_table_holds_these_numbers() -> None:
    frames, ks = [240, 721, 1440], list(host_ram.CHUNK_WINDOWS)
    jobs = {(n, k): host_ram.model_job(n, k, DIMS) for n in frames for k in ks}
    section = _section().splitlines()
    for row in host_ram.chunk_rows(jobs, frames, ks):
        assert row in section, f"bench/README.md's host-RAM table lacks the row {row!r}"


# ------------------------------------------------------------------ with ComfyUI (never in CI)


@needs_comfy
@pytest.mark.timeout(3600)
def test_model_matches_comfyui_cache_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "host_ram.py"), "--validate", "--comfy", str(COMFY),
        "--toy-frames", "80", "--chunk-windows", "1", "--out", str(out), "--work", str(tmp_path / "work"),
        "--models", str(tmp_path / "models"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3500, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "host_ram_validation.md").read_text()
    assert "2 prompt(s)" in report
    assert "| 16 | WanWorkerLoadMotionFrames |" in report
    assert "| 53 | WanWorkerSaveChunk |" in report
    assert "evicted, as predicted" in report
    assert re.search(
        r"cache hits: ComfyUI did not run 3 7 10 20 21 22 23 24 25 26 27; the model predicts", report
    )
