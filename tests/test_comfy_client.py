"""The worker's ComfyUI client against the fake ComfyUI, over real sockets on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

import worker.logs
from localdev.fake_comfyui import FakeComfyUI
from tests.support.comfy import ComfyMedia, model_free_graph, probe_video, stage_inputs, unused_port
from worker.comfy_client import ComfyClient, OutputFile, Progress, RunResult
from worker.errors import ErrorCode, WorkerError
from worker.logs import job_context

OUTPUT_NODE = "7"


class ProgressLog:
    def __init__(self) -> None:
        self.events: list[Progress] = []
        self.seen = threading.Event()
        self.wanted: Any = None

    def __call__(self, progress: Progress) -> None:
        self.events.append(progress)
        if self.wanted is not None and self.wanted(progress):
            self.seen.set()


def make_client(server: FakeComfyUI, *, input_dir: Path | None = None) -> ComfyClient:
    return ComfyClient(server.url, input_dir=input_dir)


def run(
    client: ComfyClient,
    graph: dict[str, Any],
    *,
    timeout_s: float = 60.0,
    cancel: threading.Event | None = None,
    progress: ProgressLog | None = None,
) -> RunResult:
    return client.run(
        graph,
        output_node=OUTPUT_NODE,
        deadline=time.monotonic() + timeout_s,
        on_progress=progress if progress is not None else ProgressLog(),
        cancel=cancel or threading.Event(),
    )


def failure(fn: Any, *args: Any, **kwargs: Any) -> WorkerError:
    with pytest.raises(WorkerError) as caught:
        fn(*args, **kwargs)
    return caught.value


def history_status(server: FakeComfyUI, prompt_id: str) -> str:
    return server.history()[prompt_id]["status"]["status_str"]


@pytest.fixture
def graph(fake_comfy: FakeComfyUI, comfy_media: ComfyMedia) -> dict[str, Any]:
    image, video = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_mp4)
    return model_free_graph(image=image, video=video, frames=24, prefix="wan-worker/job-1")


@pytest.mark.parametrize("shared_input_dir", [False, True], ids=["upload", "shared-input-dir"])
@pytest.mark.parametrize("audio", [True, False], ids=["audio", "no-audio"])
def test_happy_path_end_to_end(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia, tmp_path: Path, shared_input_dir: bool, audio: bool
) -> None:
    client = make_client(fake_comfy, input_dir=fake_comfy.input_dir if shared_input_dir else None)
    assert client.system_stats()["system"]["comfyui_version"] == "0.33.0-fake"
    client.wait_ready(5)
    driving = comfy_media.driving_mp4 if audio else comfy_media.driving_noaudio_mp4
    image = client.put_input(comfy_media.avatar_png, "wan-worker/job-1/avatar.png")
    video = client.put_input(driving, "wan-worker/job-1/driving.mp4")
    assert (image, video) == ("wan-worker/job-1/avatar.png", "wan-worker/job-1/driving.mp4")
    assert (fake_comfy.input_dir / video).read_bytes() == driving.read_bytes()

    progress = ProgressLog()
    graph = model_free_graph(image=image, video=video, frames=36, prefix="wan-worker/job-1")
    result = run(client, graph, progress=progress)

    assert result.output == OutputFile("job-1_00001_.mp4", "wan-worker", "output")
    uuid.UUID(result.prompt_id)
    assert result.queue_s >= 0 and result.inference_s > 0
    dest = tmp_path / "generated.mp4"
    size = client.download_output(result.output, dest)
    produced = fake_comfy.output_dir / "wan-worker" / "job-1_00001_.mp4"
    assert size == dest.stat().st_size == produced.stat().st_size
    assert dest.read_bytes() == produced.read_bytes()
    probe = probe_video(dest)
    assert (probe["video"]["width"], probe["video"]["height"], probe["video"]["nb_frames"]) == (
        320,
        180,
        "36",
    )
    assert (probe["audio"] is not None) == audio

    stages = [p.stage for p in progress.events]
    assert stages[0] == "queued" and "running" in stages
    percents = [p.percent for p in progress.events]
    assert percents == sorted(percents) and percents[-1] == 100.0
    titles = {p.node: p.node_title for p in progress.events if p.node is not None}
    assert titles["7"] == graph["7"]["_meta"]["title"] and titles["7"].startswith("Save MP4 (H.264")
    assert titles["2"].startswith("Driving video")

    client.remove_output(result.output, fake_comfy.output_dir)
    assert not produced.exists()
    client.remove_inputs([image, video])
    remaining = {p.relative_to(fake_comfy.input_dir).as_posix() for p in fake_comfy.input_dir.rglob("*")}
    if shared_input_dir:
        assert remaining == set()  # files and the job's folders are gone
    else:
        assert video in remaining  # no way to delete uploads without the shared folder


def test_validation_error_is_workflow_invalid_with_node_details(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    graph["4"]["inputs"]["width"] = 99999
    graph["1"]["inputs"]["image"] = "missing_xyz.png"
    error = failure(run, make_client(fake_comfy), graph)
    assert error.code == ErrorCode.WORKFLOW_INVALID and not error.refresh_worker
    assert "Prompt outputs failed validation" in error.message
    assert "node 4 (ImageScale) width: Value 99999 bigger than max of 16384" in error.message
    assert error.details["error"]["type"] == "prompt_outputs_failed_validation"
    by_node = {n["node_id"]: n for n in error.details["node_errors"]}
    assert by_node["4"]["class_type"] == "ImageScale"
    assert by_node["4"]["node_title"] == "Scale avatar to cover 1280x720"
    assert by_node["4"]["errors"] == [
        {
            "type": "value_bigger_than_max",
            "message": "Value 99999 bigger than max of 16384",
            "details": "width",
            "input_name": "width",
            "received_value": 99999,
        }
    ]
    assert by_node["1"]["errors"][0]["type"] == "custom_validation_failed"
    assert by_node["1"]["errors"][0]["details"] == "image - Invalid image file: missing_xyz.png"
    assert fake_comfy.queue_ids() == ([], [])


def test_unknown_node_class_and_missing_model_file_are_workflow_invalid(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    client = make_client(fake_comfy)
    unknown = {
        **graph,
        "99": {"class_type": "WanAnimateToVideo", "inputs": {}, "_meta": {"title": "Animate"}},
    }
    error = failure(run, client, unknown)
    assert error.code == ErrorCode.WORKFLOW_INVALID
    assert "Node 'Animate' not found" in error.message and "#99" in error.message
    assert error.details["error"]["type"] == "missing_node_type"
    assert error.details["error"]["class_type"] == "WanAnimateToVideo"

    fake_comfy.set_fault(
        "reject", node="1", input_name="image", received_value="wan2.2_animate_14B.safetensors"
    )
    error = failure(run, client, graph)
    assert error.code == ErrorCode.WORKFLOW_INVALID
    [node] = error.details["node_errors"]
    assert (node["node_id"], node["errors"][0]["type"]) == ("1", "value_not_in_list")
    assert "wan2.2_animate_14B.safetensors" in error.message


def test_accepted_prompt_with_node_errors_is_a_failure_and_is_stopped(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    fake_comfy.set_fault("partial_reject", node="4")
    fake_comfy.set_fault("slow", seconds=0.2)
    error = failure(run, make_client(fake_comfy), graph)
    assert error.code == ErrorCode.WORKFLOW_INVALID
    assert error.details["node_errors"][0]["node_id"] == "4"
    deadline = time.monotonic() + 10
    while fake_comfy.queue_ids() != ([], []) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_comfy.queue_ids() == ([], [])
    assert not list(fake_comfy.output_dir.rglob("*.mp4"))  # the half-valid prompt did not run to the end


def test_runtime_error_is_generation_failed_with_node_details(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia
) -> None:
    image, video = stage_inputs(fake_comfy, comfy_media.corrupt_png, comfy_media.driving_mp4)
    error = failure(run, make_client(fake_comfy), model_free_graph(image=image, video=video))
    assert error.code == ErrorCode.GENERATION_FAILED and not error.refresh_worker
    assert error.details["node_id"] == "1" and error.details["node_type"] == "LoadImage"
    assert error.details["exception_type"] == "PIL.UnidentifiedImageError"
    assert "cannot identify image file" in error.details["exception_message"]
    assert "node 1 (LoadImage)" in error.message and "cannot identify image file" in error.message


def test_gpu_out_of_memory_asks_for_a_fresh_worker(fake_comfy: FakeComfyUI, graph: dict[str, Any]) -> None:
    fake_comfy.set_fault("oom", node="6")
    error = failure(run, make_client(fake_comfy), graph)
    assert error.code == ErrorCode.GENERATION_FAILED and error.refresh_worker
    assert error.details["exception_type"] == "torch.OutOfMemoryError"
    assert "out of memory" in error.message.lower()

    fake_comfy.set_fault(
        "runtime_error", node="6", exception_type="RuntimeError", exception_message="HIP out of memory"
    )
    graph["7"]["inputs"]["filename_prefix"] = "wan-worker/job-2"
    assert failure(run, make_client(fake_comfy), graph).refresh_worker


@pytest.mark.parametrize("after_node", ["3", "7"], ids=["mid-run", "before-the-outcome"])
def test_dropped_socket_reconnects_and_confirms_the_outcome(
    fake_comfy: FakeComfyUI, graph: dict[str, Any], after_node: str
) -> None:
    # Dropped after node 7, the socket is gone when execution_success is sent: the outcome
    # can only be learned from /history after the reconnect.
    fake_comfy.set_fault("drop_socket", after_node=after_node)
    progress = ProgressLog()
    result = run(make_client(fake_comfy), graph, progress=progress)
    assert result.output.filename == "job-1_00001_.mp4"
    assert (fake_comfy.output_dir / "wan-worker" / result.output.filename).is_file()
    assert fake_comfy.ws_connects() == 2
    assert progress.events[-1].percent == 100.0


def test_log_events_carry_the_job_id_of_the_log_context(
    fake_comfy: FakeComfyUI, graph: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = io.StringIO()
    monkeypatch.setattr(worker.logs, "_stream", lines)
    fake_comfy.set_fault("drop_socket", after_node="3")
    with job_context("job-7"):
        run(make_client(fake_comfy), graph)
    run(make_client(fake_comfy), graph)  # from the cache, this time outside a job's context
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    events = [(r["event"], r.get("job_id")) for r in records if r["event"].startswith("comfy_")]
    assert events == [
        ("comfy_prompt_queued", "job-7"),
        ("comfy_ws_lost", "job-7"),
        ("comfy_ws_reconnected", "job-7"),
        ("comfy_prompt_finished", "job-7"),
        ("comfy_prompt_queued", None),
        ("comfy_prompt_finished", None),
    ]


def test_deadline_interrupts_the_prompt_and_raises_timeout(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    fake_comfy.set_fault("hang", node="2")  # the first node to run
    client = make_client(fake_comfy)
    progress = ProgressLog()
    error = failure(run, client, graph, timeout_s=1.5, progress=progress)
    assert error.code == ErrorCode.TIMEOUT and not error.refresh_worker
    assert error.details["comfy_stopped"] is True and error.details["node"] == "2"
    [prompt_id] = [pid for pid, entry in fake_comfy.history().items()]
    status = fake_comfy.history()[prompt_id]["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
    assert fake_comfy.queue_ids() == ([], [])


def test_cancel_interrupts_the_running_prompt(fake_comfy: FakeComfyUI, graph: dict[str, Any]) -> None:
    fake_comfy.set_fault("hang", node="6")
    cancel = threading.Event()
    progress = ProgressLog()
    progress.wanted = lambda p: p.node == "6"
    threading.Thread(target=lambda: progress.seen.wait(30) and cancel.set(), daemon=True).start()
    error = failure(run, make_client(fake_comfy), graph, cancel=cancel, progress=progress)
    assert error.code == ErrorCode.CANCELLED and error.details["comfy_stopped"] is True
    [entry] = fake_comfy.history().values()
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"


def test_cancel_while_queued_removes_the_prompt_from_the_queue(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    blocker = occupy(fake_comfy, graph)
    cancel = threading.Event()
    progress = ProgressLog()
    progress.wanted = lambda p: p.stage == "queued"
    threading.Thread(target=lambda: progress.seen.wait(30) and cancel.set(), daemon=True).start()
    other = {
        **graph,
        "7": {**graph["7"], "inputs": {**graph["7"]["inputs"], "filename_prefix": "wan-worker/b"}},
    }
    error = failure(run, make_client(fake_comfy), other, cancel=cancel, progress=progress)
    assert error.code == ErrorCode.CANCELLED and error.details["comfy_stopped"] is True
    assert fake_comfy.queue_ids() == ([blocker], [])
    requests.post(f"{fake_comfy.url}/interrupt")


def occupy(server: FakeComfyUI, graph: dict[str, Any]) -> str:
    """Another client's prompt that runs until interrupted; returns its id once running."""
    server.set_fault("hang", node="1")
    blocker = {**graph, "7": {**graph["7"], "inputs": {**graph["7"]["inputs"], "filename_prefix": "other/x"}}}
    prompt_id = requests.post(f"{server.url}/prompt", json={"prompt": blocker}, timeout=10).json()[
        "prompt_id"
    ]
    while server.queue_ids()[0] != [prompt_id]:
        time.sleep(0.02)
    return prompt_id


def test_prompt_deleted_from_the_queue_fails_instead_of_waiting_forever(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    occupy(fake_comfy, graph)

    def delete_when_pending() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pending = fake_comfy.queue_ids()[1]
            if pending:
                requests.post(f"{fake_comfy.url}/queue", json={"delete": pending}, timeout=10)
                return
            time.sleep(0.02)

    threading.Thread(target=delete_when_pending, daemon=True).start()
    error = failure(run, make_client(fake_comfy), graph, timeout_s=30)
    assert error.code == ErrorCode.GENERATION_FAILED
    assert "neither queued, running nor in its history" in error.message
    requests.post(f"{fake_comfy.url}/interrupt")


def test_interrupt_by_someone_else_is_generation_failed(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    fake_comfy.set_fault("hang", node="6")
    progress = ProgressLog()
    progress.wanted = lambda p: p.node == "6"

    def interrupt() -> None:
        if progress.seen.wait(30):
            requests.post(f"{fake_comfy.url}/interrupt", timeout=10)

    threading.Thread(target=interrupt, daemon=True).start()
    error = failure(run, make_client(fake_comfy), graph, progress=progress)
    assert error.code == ErrorCode.GENERATION_FAILED
    assert "not at this job's request" in error.message and error.details["node_id"] == "6"


def test_cached_rerun_whose_file_was_removed_is_run_again(
    fake_comfy: FakeComfyUI, graph: dict[str, Any], tmp_path: Path
) -> None:
    client = make_client(fake_comfy)
    first = run(client, graph)
    client.remove_output(first.output, fake_comfy.output_dir)

    second = run(client, graph)  # ComfyUI answers from its cache with the removed file
    assert second.prompt_id != first.prompt_id
    assert second.output == first.output  # the counter restarts once the file is gone
    assert client.download_output(second.output, tmp_path / "again.mp4") > 0
    assert len(fake_comfy.history()) == 3  # original, cached answer, fresh run after /free

    client.remove_output(second.output, fake_comfy.output_dir)
    fake_comfy.set_fault("cached_rerun", times=2)
    error = failure(run, client, graph)
    assert error.code == ErrorCode.GENERATION_FAILED
    assert "even after emptying its cache" in error.message
    assert error.details["output"]["filename"] == "job-1_00001_.mp4"


def test_sampler_progress_is_forwarded_with_steps(fake_comfy: FakeComfyUI, graph: dict[str, Any]) -> None:
    fake_comfy.set_fault("progress", node="6", steps=4, step_s=0.02)
    progress = ProgressLog()
    run(make_client(fake_comfy), graph, progress=progress)
    sampling = [p for p in progress.events if p.stage == "sampling"]
    assert [(p.step, p.steps) for p in sampling] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert {(p.node, p.node_title) for p in sampling} == {("6", "Frames + driving audio at 24 fps")}
    percents = [p.percent for p in sampling]
    assert percents == sorted(percents) and len(set(percents)) == 4
    assert 0 < percents[0] < percents[-1] < 100


def test_cached_nodes_count_as_done(fake_comfy: FakeComfyUI, graph: dict[str, Any]) -> None:
    client = make_client(fake_comfy)
    run(client, graph)
    graph["5"]["inputs"]["amount"] = 12  # nodes 1-4 (loaders, components, scaling) stay cached
    progress = ProgressLog()
    run(client, graph, progress=progress)
    first_node = next(p for p in progress.events if p.node is not None)
    assert first_node.node == "5" and first_node.percent == pytest.approx(100 * 4 / 7, abs=0.1)


def test_comfyui_dying_mid_run_is_comfy_unavailable(tmp_path: Path, comfy_media: ComfyMedia) -> None:
    server = FakeComfyUI(tmp_path / "in", tmp_path / "out").start()
    try:
        image, video = stage_inputs(server, comfy_media.avatar_png, comfy_media.driving_mp4)
        server.set_fault("hang", node="3")
        progress = ProgressLog()
        progress.wanted = lambda p: p.node == "3"
        threading.Thread(target=lambda: progress.seen.wait(30) and server.stop(), daemon=True).start()
        client = make_client(server)
        error = failure(run, client, model_free_graph(image=image, video=video), progress=progress)
    finally:
        server.stop()
    assert error.code == ErrorCode.COMFY_UNAVAILABLE and error.refresh_worker
    assert "reconnect" in error.message


def test_unreachable_comfyui_is_comfy_unavailable(
    tmp_path: Path, comfy_media: ComfyMedia, graph: dict[str, Any]
) -> None:
    client = ComfyClient(f"http://127.0.0.1:{unused_port()}")
    for error in (
        failure(client.system_stats),
        failure(client.wait_ready, 0.6),
        failure(run, client, graph),
        failure(client.put_input, comfy_media.avatar_png, "x/avatar.png"),
        failure(client.download_output, OutputFile("a.mp4", "", "output"), tmp_path / "a.mp4"),
    ):
        assert error.code == ErrorCode.COMFY_UNAVAILABLE and error.refresh_worker, error
    assert not (tmp_path / "a.mp4").exists()


def test_upload_over_comfyuis_limit_is_input_too_large(tmp_path: Path, comfy_media: ComfyMedia) -> None:
    with FakeComfyUI(tmp_path / "in", tmp_path / "out", max_upload_size=10_000) as server:
        error = failure(make_client(server).put_input, comfy_media.driving_mp4, "wan-worker/j/driving.mp4")
    assert error.code == ErrorCode.INPUT_TOO_LARGE
    assert "COMFY_INPUT_DIR" in error.message


def test_missing_output_file_and_unsafe_names(fake_comfy: FakeComfyUI, tmp_path: Path) -> None:
    client = make_client(fake_comfy, input_dir=fake_comfy.input_dir)
    error = failure(
        client.download_output, OutputFile("gone.mp4", "wan-worker", "output"), tmp_path / "x.mp4"
    )
    assert error.code == ErrorCode.GENERATION_FAILED and "gone.mp4" in error.message
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "x.mp4.part").exists()
    for name in ("../escape.png", "/abs.png", ""):
        assert failure(client.put_input, tmp_path, name).code == ErrorCode.INTERNAL_ERROR
    outside = tmp_path / "keep.mp4"
    outside.write_bytes(b"x")
    client.remove_output(OutputFile("keep.mp4", "..", "output"), fake_comfy.output_dir)
    assert outside.exists()


def test_output_node_missing_from_the_graph_is_workflow_invalid(
    fake_comfy: FakeComfyUI, graph: dict[str, Any]
) -> None:
    client = make_client(fake_comfy)
    with pytest.raises(WorkerError) as caught:
        client.run(
            graph,
            output_node="42",
            deadline=time.monotonic() + 5,
            on_progress=ProgressLog(),
            cancel=threading.Event(),
        )
    assert caught.value.code == ErrorCode.WORKFLOW_INVALID
    assert fake_comfy.history() == {}
