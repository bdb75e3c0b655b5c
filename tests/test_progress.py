"""The /status progress: which window of the real pinned Wan graph a node belongs to, the
inference payload built from ComfyUI's events, and a throttle that never loses the latest
update (real timer threads; waits are on conditions with a timeout, never fixed sleeps)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from worker.comfy_client import Progress
from worker.config import DEFAULT_WORKFLOW
from worker.graph.wan_rules import window_numbers
from worker.graph.windows import window_count
from worker.graph.workflow import Workflow
from worker.progress import GraphWindows, ProgressReporter

FRAMES = 240
WINDOW_CLASSES = ("WanAnimateToVideoOfficialMask", "KSampler", "TrimVideoLatent", "VAEDecode")


@pytest.fixture(scope="module")
def wan_graph() -> dict[str, Any]:
    workflow = Workflow.load(DEFAULT_WORKFLOW)
    return workflow.build(workflow.example_params(FRAMES, filename_prefix="wan-worker/test"))


class Recorder:
    """A progress sink that lets a test wait for the n-th update."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.threads: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, payload: dict[str, Any]) -> None:
        with self._changed:
            self.updates.append(payload)
            self.threads.append(threading.current_thread().name)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.updates) >= count, timeout_s), self.updates
            return list(self.updates)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sampling(node: str, step: int | None, steps: int | None, title: str | None = None) -> Progress:
    return Progress(
        stage="sampling" if step is not None else "running",
        percent=50.0,
        node=node,
        node_title=title,
        step=step,
        steps=steps,
    )


# -- the node -> window map ------------------------------------------------------------------


def test_every_window_node_of_the_240_frame_graph_maps_to_its_window(wan_graph: dict[str, Any]) -> None:
    windows = window_numbers(wan_graph)
    assert window_count(FRAMES) == 4
    assert max(windows.values()) == 4
    for class_type in WINDOW_CLASSES:
        nodes = [n for n, node in wan_graph.items() if node["class_type"] == class_type]
        assert len(nodes) == 4, (class_type, nodes)
        # The node titled "Window k" is in window k, and each window has one of each.
        for node_id in nodes:
            title = wan_graph[node_id]["_meta"]["title"]
            assert title.startswith(f"Window {windows[node_id]}:"), (node_id, title, windows.get(node_id))
        assert sorted(windows[n] for n in nodes) == [1, 2, 3, 4]
    # Extension windows also drop their re-generated frames (ImageFromBatch); window 1 has none.
    cuts = {
        windows[n] for n, node in wan_graph.items() if node["class_type"] == "ImageFromBatch" and n in windows
    }
    assert cuts == {2, 3, 4}


def test_preprocessing_models_and_the_join_belong_to_no_window(wan_graph: dict[str, Any]) -> None:
    windows = window_numbers(wan_graph)
    outside = {
        "PoseAndFaceDetection",
        "DrawViTPose",
        "Sam2SegmentationReleased",
        "DownloadAndLoadSAM2Model",
        "DrawMaskOnImage",
        "ImageBatchReflectPad",
        "UNETLoader",
        "CLIPTextEncode",
        "LoadVideo",
        "BatchImagesNode",
        "WanWorkerSaveChunk",
    }
    found = {node["class_type"] for node in wan_graph.values()}
    assert outside <= found
    for node_id, node in wan_graph.items():
        if node["class_type"] in outside:
            assert node_id not in windows, (node_id, node["class_type"])
    # The final cut to N frames is an ImageFromBatch too, but of the joined windows.
    final_cut = wan_graph["51"]
    assert final_cut["class_type"] == "ImageFromBatch" and "51" not in windows


def test_a_one_window_graph_has_one_window() -> None:
    workflow = Workflow.load(DEFAULT_WORKFLOW)
    graph = workflow.build(workflow.example_params(60, filename_prefix="wan-worker/test"))
    windows = GraphWindows.of(graph)
    assert windows.windows == 1
    assert set(windows.window_of.values()) == {1}


# -- the inference payload ---------------------------------------------------------------------


def test_inference_payload_names_window_node_and_step(wan_graph: dict[str, Any]) -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-p", 0.0)
    reporter.set_graph(wan_graph)
    sampler_2 = next(
        n
        for n, node in wan_graph.items()
        if node["class_type"] == "KSampler" and node["_meta"]["title"].startswith("Window 2:")
    )
    reporter.comfy(sampling("8", None, None, "Detect pose per frame"))
    reporter.comfy(sampling(sampler_2, 3, 6, wan_graph[sampler_2]["_meta"]["title"]))
    reporter.comfy(sampling("53", None, None, "Save the chunk"))
    pose, sample, save = recorder.wait_for(3)
    assert pose == {
        "stage": "inference",
        "percent": pose["percent"],
        "message": None,
        "node": "Detect pose per frame",
        "chunk": None,
        "chunks": None,
        "window": None,
        "windows": None,
        "step": None,
        "steps": None,
    }
    assert sample["window"] == 2 and sample["windows"] == 4
    assert (sample["step"], sample["steps"]) == (3, 6)
    assert sample["message"] == "window 2 of 4, step 3 of 6"
    assert sample["node"] == "Window 2: sample (euler/simple, cfg 1)"
    assert save["window"] is None and save["windows"] is None
    assert 10.0 < pose["percent"] < sample["percent"] < save["percent"] < 94.0


def test_percent_advances_with_windows_and_steps(wan_graph: dict[str, Any]) -> None:
    windows = GraphWindows.of(wan_graph)
    samplers = sorted(
        (windows.window_of[n], n) for n, node in wan_graph.items() if node["class_type"] == "KSampler"
    )
    fractions = []
    for _, node in samplers:
        for step in range(0, 7):
            fractions.append(windows.fraction(sampling(node, step, 6), "KSampler"))
    assert fractions == sorted(fractions)
    assert len(set(fractions)) == len(fractions), "every step of every window moves the percent"
    # Window 3's decode comes after window 3's last step and before window 4's first.
    decode_3 = next(
        n for n, node in wan_graph.items() if node["class_type"] == "VAEDecode" and windows.window_of[n] == 3
    )
    decoded = windows.fraction(sampling(decode_3, None, None), "VAEDecode")
    assert fractions[3 * 7 - 1] <= decoded < fractions[3 * 7]


def test_a_graph_without_windows_reports_the_prompts_own_percent() -> None:
    graph = Workflow.load(DEFAULT_WORKFLOW.parent / "model_free_still.json").build(
        Workflow.load(DEFAULT_WORKFLOW.parent / "model_free_still.json").example_params(
            24, filename_prefix="x"
        )
    )
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-p", 0.0)
    reporter.set_graph(graph)
    reporter.comfy(Progress("sampling", 50.0, "6", "Frames + audio", 2, 4))
    (update,) = recorder.wait_for(1)
    assert update["percent"] == 52.0  # 10 + 84 * 0.5
    assert update["message"] == "step 2 of 4" and update["window"] is None


# -- the throttle ------------------------------------------------------------------------------


def test_a_suppressed_update_is_delivered_when_the_interval_has_passed() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-t", 0.2)
    reporter.stage("inference", 0.1, step=1, steps=6)  # a stage change: sent at once
    assert recorder.wait_for(1, timeout_s=0.0)[0]["step"] == 1
    reporter.stage("inference", 0.2, step=2, steps=6)  # too soon: held
    reporter.stage("inference", 0.3, step=3, steps=6)  # too soon: replaces the held one
    updates = recorder.wait_for(2)
    assert [u["step"] for u in updates] == [1, 3]
    assert updates[1]["percent"] == pytest.approx(10 + 84 * 0.3, abs=0.05)
    assert recorder.threads[1] != threading.current_thread().name  # sent by the timer
    reporter.close()


def test_throttle_decisions_with_an_injected_clock() -> None:
    recorder = Recorder()
    clock = FakeClock()
    reporter = ProgressReporter(recorder, "job-c", 2.0, clock=clock)
    reporter.stage("prepare")
    clock.now += 0.5
    reporter.stage("prepare", 0.5)  # held (its timer has 1.5 s to go)
    assert len(recorder.updates) == 1
    clock.now += 0.1
    reporter.stage("queue")  # a stage change goes out at once and drops the held update
    assert [u["stage"] for u in recorder.updates] == ["prepare", "queue"]
    clock.now += 2.5
    reporter.stage("queue", 1.0)  # the interval has passed: sent at once
    assert [u["percent"] for u in recorder.updates] == [4.0, 8.0, 10.0]
    reporter.close()


def test_percent_never_goes_back_within_a_stage() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-m", 0.0)
    reporter.stage("inference", 0.5)
    reporter.stage("inference", 0.2)  # e.g. a model loader that runs between windows
    reporter.stage("postprocess")
    assert [u["percent"] for u in recorder.wait_for(3)] == [52.0, 52.0, 94.0]


def test_nothing_held_back_is_sent_after_close() -> None:
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-x", 60.0)
    reporter.stage("inference", 0.1)
    reporter.stage("inference", 0.2)  # held for up to a minute
    timer = reporter._timer
    assert timer is not None and timer.is_alive()
    reporter.close()
    timer.join(timeout=10)
    assert not timer.is_alive()
    reporter.stage("upload")  # the job is over: ignored
    assert [u["percent"] for u in recorder.updates] == [18.4]


def test_a_failing_sink_does_not_fail_the_job() -> None:
    calls: list[dict[str, Any]] = []

    def broken(payload: dict[str, Any]) -> None:
        calls.append(payload)
        raise ConnectionError("RunPod is away")

    reporter = ProgressReporter(broken, "job-f", 0.0)
    reporter.stage("download")
    reporter.stage("prepare")
    assert [c["stage"] for c in calls] == ["download", "prepare"]


def test_a_chunk_counts_its_windows_in_the_clip_and_percent_spans_all_chunks() -> None:
    workflow = Workflow.load(DEFAULT_WORKFLOW)
    chunks = workflow.chunks(721)  # 10 windows in chunks of 4, 4 and 2
    recorder = Recorder()
    reporter = ProgressReporter(recorder, "job-c", 0.0)
    for chunk in chunks:
        graph = workflow.build(
            workflow.example_params(chunk.frames),
            chunk=chunk,
            clip_frames=721,
            motion_file="m.safetensors" if chunk.continues else None,
        )
        reporter.set_graph(
            graph, chunk=(chunk.index, chunk.count), window_offset=chunk.first_window - 1, clip_windows=10
        )
        if chunk.index > 1:  # a later chunk waiting in ComfyUI's queue stays in the inference stage
            reporter.comfy(Progress("queued", 0.0, None, None, None, None))
        windows = GraphWindows.of(graph)
        first_sampler = next(
            n for n, node in graph.items() if node["class_type"] == "KSampler" and windows.window_of[n] == 1
        )
        reporter.comfy(sampling(first_sampler, 2, 6, graph[first_sampler]["_meta"]["title"]))
    second = next(u for u in recorder.updates if u.get("chunk") == 2 and u.get("step") == 2)
    assert (second["chunk"], second["chunks"], second["window"], second["windows"]) == (2, 3, 5, 10)
    assert second["message"] == "chunk 2 of 3, window 5 of 10, step 2 of 6"
    third = next(u for u in recorder.updates if u.get("chunk") == 3 and u.get("step") == 2)
    assert third["window"] == 9
    percents = [u["percent"] for u in recorder.updates]
    assert percents == sorted(percents) and all(u["stage"] == "inference" for u in recorder.updates)
    # each chunk takes a third of the inference stage (10..94 %)
    assert 10 + 84 / 3 < second["percent"] < 10 + 2 * 84 / 3 < third["percent"] < 94
