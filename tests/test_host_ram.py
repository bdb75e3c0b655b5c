"""bench/host_ram.py: the host-RAM arithmetic of one prompt on the pinned graph.

Always (CI, no ComfyUI, no torch): bytes per IMAGE/MASK frame, the sizes of the nodes that carry
the video along the worker's own built graph, that the peak grows linearly with the frames, and
that bench/README.md's table holds the numbers this code gives for 240 and 721 frames.

With a ComfyUI checkout (``WAN_BENCH_COMFYUI`` + ``WAN_BENCH_PYTHON``): the toy run through
ComfyUI's executor, every node's cached CPU tensor bytes against the model (``--validate``).
"""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from bench import host_ram
from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.windows import covered_frames, plan_windows

REPO = Path(__file__).resolve().parents[1]
DIMS = host_ram.Dims()
IMAGE = 1280 * 720 * 3 * 4
MASK = 1280 * 720 * 4


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
    assert all(n.output == 0 for n in rows(p, "TrimVideoLatent") + rows(p, "CreateVideo"))
    assert all(n.output == 0 for n in rows(p, "UNETLoader") + rows(p, "VAELoader"))
    assert p.held_at_end == sum(n.output for n in p.nodes)
    assert p.floor_peak <= p.cached_peak and p.held_at_end <= p.cached_peak


def test_order_runs_every_node_after_its_inputs() -> None:
    graph = host_ram.worker_graph(721)
    order = host_ram.comfy_order(graph)
    assert sorted(order) == sorted(graph)
    position = {nid: i for i, nid in enumerate(order)}
    for nid, node in graph.items():
        for value in node["inputs"].values():
            if (parent := host_ram._link(value)) is not None:
                assert position[parent] < position[nid]
    assert order[-1] == "53"


def test_order_is_the_one_comfyui_ran() -> None:
    # Recorded by `bench/host_ram.py --validate` (ComfyUI 0.33.0's PromptExecutor, 80 frames, 2 windows).
    ran = "5 6 27 15 7 8 10 11 12 13 14 9 1 2 3 4 24 26 25 30 20 21 22 23 31 32 33 40 41 42 43 44 50 51 52 53"
    assert host_ram.comfy_order(host_ram.worker_graph(80)) == ran.split()


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
    assert 100e6 < per_frame < 130e6  # ~9 full-size float32 frames per driving frame


def _readme_row(label: str) -> list[float]:
    text = (REPO / "bench" / "README.md").read_text()
    section = text.split("## Host RAM of one prompt (before chunking)", 1)[1]
    line = next(row for row in section.splitlines() if row.startswith(f"| {label}"))
    return [float(x) for x in re.findall(r"\*\*([0-9.]+)\*\*", line)]


@pytest.mark.parametrize("index, frames", [(0, 240), (1, 721)])
def test_readme_table_holds_these_numbers(index: int, frames: int) -> None:
    p = prompt(frames)
    assert _readme_row("**peak, default cache**")[index] == pytest.approx(p.cached_peak / 1e9, abs=0.006)
    assert _readme_row("**floor, cache evicting**")[index] == pytest.approx(p.floor_peak / 1e9, abs=0.006)


# ------------------------------------------------------------------ with ComfyUI (never in CI)


@needs_comfy
@pytest.mark.timeout(900)
def test_model_matches_comfyui_cache_at_toy_size(tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = [
        COMFY_PYTHON, str(REPO / "bench" / "host_ram.py"), "--validate", "--comfy", str(COMFY),
        "--toy-frames", "80", "--out", str(out), "--work", str(tmp_path / "work"),
        "--models", str(tmp_path / "models"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=880, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = (out / "host_ram_validation.md").read_text()
    assert "2 windows, padded 149" in report
    assert "| 51 | ImageFromBatch |" in report
