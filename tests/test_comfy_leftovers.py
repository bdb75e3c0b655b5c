"""The worker's files in ComfyUI's folders (worker/comfy_leftovers.py): a given-up prompt's files
removed when the fake ComfyUI writes them after the worker stopped waiting, and the sweep."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import pytest

from localdev.fake_comfyui import FakeComfyUI
from tests.support.comfy import ComfyMedia, stage_inputs
from tests.support.logs import events
from tests.support.poll import until
from worker.comfy_client import INTERRUPT_GRACE_S, ComfyClient, Progress
from worker.comfy_leftovers import WORKER_FOLDER, ComfyLeftovers
from worker.errors import ErrorCode, WorkerError

PREFIX = f"{WORKER_FOLDER}/job-9-0a1b2c3d"


def files_under(*folders: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix()
        for folder in folders
        for path in folder.rglob("*")
        if path.is_file()
    )


def write(path: Path, *, age_s: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_a_given_up_prompts_output_is_removed_when_comfy_writes_it_later(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia, log_lines: io.StringIO
) -> None:
    # The video in a folder of its own: the fake's SaveVideo reads it when it renders.
    _, video = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_mp4, folder="test-inputs")
    given_input = write(fake_comfy.input_dir / PREFIX / "avatar.png")
    graph = {
        "2": {"class_type": "LoadVideo", "inputs": {"file": video}},
        "7": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["2", 0], "filename_prefix": PREFIX, "format": "mp4", "codec": "h264"},
        },
    }
    # Another job's file, written now: never a given-up prompt's.
    other = write(fake_comfy.output_dir / WORKER_FOLDER / "job-10-ffff0000_00001_.mp4")
    other_name = other.relative_to(fake_comfy.output_dir).as_posix()
    # Interrupts are honoured between nodes only: a cancel while the save node runs lets it write
    # its file, after the client has given up waiting for the prompt to stop.
    # The save node outlasts the client's grace for an interrupted prompt (INTERRUPT_GRACE_S).
    fake_comfy.set_fault("slow", seconds=INTERRUPT_GRACE_S + 3)
    client = ComfyClient(fake_comfy.url)
    cancel = threading.Event()

    def on_progress(progress: Progress) -> None:
        if progress.node == "7":
            cancel.set()

    with pytest.raises(WorkerError) as caught:
        client.run(
            graph, output_node="7", deadline=time.monotonic() + 60, on_progress=on_progress, cancel=cancel
        )
    assert caught.value.code is ErrorCode.CANCELLED
    assert caught.value.details["comfy_stopped"] is False  # the prompt is still running

    leftovers = ComfyLeftovers([fake_comfy.input_dir, fake_comfy.output_dir], watch_s=60, poll_s=0.05)
    leftovers.give_up(PREFIX)
    assert not given_input.exists()  # its inputs go at once

    assert files_under(fake_comfy.output_dir) == [other_name]  # nothing of it yet

    assert until(lambda: fake_comfy.queue_ids() == ([], []))  # ComfyUI went on to the prompt's end
    assert until(lambda: files_under(fake_comfy.output_dir) == [other_name])
    removed = [name for event in events(log_lines, "comfy_leftovers_removed") for name in event["files"]]
    assert any(name.startswith("job-9-0a1b2c3d_00001_.mp4") for name in removed), removed  # it did write
    assert leftovers.watching() == [PREFIX]  # the watch goes on for watch_s


def test_the_sweep_removes_the_workers_files_older_than_the_job_only(tmp_path: Path) -> None:
    inputs, outputs = tmp_path / "input", tmp_path / "output"
    write(inputs / WORKER_FOLDER / "job-1-11111111" / "avatar.png", age_s=600)
    write(inputs / WORKER_FOLDER / "job-1-11111111" / "driving.mp4", age_s=600)
    write(outputs / WORKER_FOLDER / "job-1-11111111_00001_.mp4", age_s=600)
    running = write(inputs / WORKER_FOLDER / "job-2-22222222" / "avatar.png")
    (outputs / WORKER_FOLDER / "job-2-22222222").mkdir(parents=True)  # created for the running job
    foreign = write(outputs / "ComfyUI_00001_.png", age_s=600)  # not the worker's

    removed = ComfyLeftovers([inputs, outputs], watch_s=60).sweep(before=time.time() - 60)

    assert removed == 3
    assert files_under(inputs, outputs) == sorted(
        [running.relative_to(inputs).as_posix(), foreign.relative_to(outputs).as_posix()]
    )
    assert not (inputs / WORKER_FOLDER / "job-1-11111111").exists()  # emptied: pruned
    assert (outputs / WORKER_FOLDER / "job-2-22222222").is_dir()  # new and empty: kept
    assert (inputs / WORKER_FOLDER).is_dir()


def test_without_shared_folders_nothing_is_watched() -> None:
    leftovers = ComfyLeftovers([None, None], watch_s=60)
    leftovers.give_up(PREFIX)
    assert leftovers.watching() == []
    assert leftovers.sweep(before=time.time()) == 0
