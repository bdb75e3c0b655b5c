"""The local queue API: RunPod's statuses, timings, progress, cancel and timeout, over real HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import runpod

from localdev.queue_api import LocalQueueServer, serve_in_thread


class Gate:
    """Holds a stand-in handler until the test opens it; records what reached the handler."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started = threading.Event()
        self.cancelled = threading.Event()

    async def wait(self) -> None:
        self.started.set()
        try:
            while not self.opened.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def poll(
    server: LocalQueueServer, job_id: str, until: Callable[[dict[str, Any]], bool], limit_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + limit_s
    while True:
        body = requests.get(f"{server.url}/status/{job_id}", timeout=5).json()
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def finished(body: dict[str, Any]) -> bool:
    return body["status"] in {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


def submit(server: LocalQueueServer, job_input: dict[str, Any], **extra: Any) -> str:
    reply = requests.post(f"{server.url}/run", json={"input": job_input, **extra}, timeout=5)
    assert reply.status_code == 200
    assert reply.json()["status"] == "IN_QUEUE"
    return reply.json()["id"]


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def server(gate: Gate) -> Iterator[LocalQueueServer]:
    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        job_input = job["input"]
        if job_input.get("progress"):
            runpod.serverless.progress_update(job, {"stage": "inference", "percent": 42.0})
        if job_input.get("hold"):
            await gate.wait()
        if job_input.get("fail"):
            return {"error": "the avatar is not an image", "error_code": "INVALID_MEDIA", "details": {}}
        if job_input.get("raise"):
            raise ValueError("boom")
        return {"echo": job_input.get("value"), "job_id": job["id"]}

    queue_server = serve_in_thread(handler, execution_timeout_s=30)
    try:
        yield queue_server
    finally:
        gate.opened.set()
        queue_server.stop()


def test_completed_job_reports_output_and_timings(server: LocalQueueServer) -> None:
    job_id = submit(server, {"value": 7})
    body = poll(server, job_id, finished)
    assert body["status"] == "COMPLETED"
    assert body["output"] == {"echo": 7, "job_id": job_id}
    assert isinstance(body["delayTime"], int) and body["delayTime"] >= 0
    assert isinstance(body["executionTime"], int) and body["executionTime"] >= 0
    assert "error" not in body


def test_second_job_waits_in_queue_while_the_first_runs(server: LocalQueueServer, gate: Gate) -> None:
    first = submit(server, {"hold": True, "progress": True})
    assert gate.started.wait(10)
    second = submit(server, {"value": 2})
    assert poll(server, first, lambda b: True)["status"] == "IN_PROGRESS"
    queued = requests.get(f"{server.url}/status/{second}", timeout=5).json()
    assert queued == {"id": second, "status": "IN_QUEUE"}
    assert requests.get(f"{server.url}/health", timeout=5).json() == {
        "jobs": {"completed": 0, "failed": 0, "cancelled": 0, "inProgress": 1, "inQueue": 1, "retried": 0},
        "workers": {"idle": 0, "running": 1},
    }
    held_from = time.monotonic()
    time.sleep(0.3)
    held_s = time.monotonic() - held_from
    gate.opened.set()
    assert poll(server, first, finished)["status"] == "COMPLETED"
    body = poll(server, second, finished)
    assert body["status"] == "COMPLETED"
    # The second job was queued before the hold began and started after it ended.
    assert body["delayTime"] >= int(held_s * 1000)


def test_progress_update_is_visible_in_status_while_running(server: LocalQueueServer, gate: Gate) -> None:
    job_id = submit(server, {"hold": True, "progress": True})
    body = poll(server, job_id, lambda b: "output" in b)
    assert body["status"] == "IN_PROGRESS"
    assert body["output"] == {"stage": "inference", "percent": 42.0}
    assert "executionTime" not in body
    gate.opened.set()
    done = poll(server, job_id, finished)
    assert done["output"] == {"echo": None, "job_id": job_id}  # the result replaces the progress


def test_error_result_is_failed_with_only_the_error(server: LocalQueueServer) -> None:
    """As on the platform: the SDK sends the other keys as ``output``, but a FAILED job's
    ``/status`` carries ``error`` alone (not the last progress update either)."""
    job_id = submit(server, {"fail": True, "progress": True})
    body = poll(server, job_id, finished)
    assert body["status"] == "FAILED"
    assert body["error"] == "the avatar is not an image"
    assert "output" not in body
    assert set(body) == {"id", "status", "delayTime", "executionTime", "workerId", "error"}


def test_raised_exception_is_failed_with_the_sdk_error_json(server: LocalQueueServer) -> None:
    body = poll(server, submit(server, {"raise": True}), finished)
    assert body["status"] == "FAILED"
    assert "ValueError" in body["error"] and "boom" in body["error"]


def test_cancel_reaches_the_running_handler(server: LocalQueueServer, gate: Gate) -> None:
    job_id = submit(server, {"hold": True})
    assert gate.started.wait(10)
    reply = requests.post(f"{server.url}/cancel/{job_id}", timeout=5).json()
    assert reply == {"id": job_id, "status": "CANCELLED"}
    assert gate.cancelled.wait(10)
    body = poll(server, job_id, finished)
    assert body["status"] == "CANCELLED"
    # The worker is free again: the next job runs.
    assert poll(server, submit(server, {"value": 3}), finished)["status"] == "COMPLETED"


def test_cancel_of_a_queued_job_keeps_it_from_running(server: LocalQueueServer, gate: Gate) -> None:
    running = submit(server, {"hold": True})
    assert gate.started.wait(10)
    queued = submit(server, {"value": 4})
    assert requests.post(f"{server.url}/cancel/{queued}", timeout=5).json()["status"] == "CANCELLED"
    gate.opened.set()
    assert poll(server, running, finished)["status"] == "COMPLETED"
    body = poll(server, queued, finished)
    assert body["status"] == "CANCELLED"
    assert "executionTime" not in body and "output" not in body


def test_execution_timeout_marks_timed_out_and_cancels_the_handler(
    server: LocalQueueServer, gate: Gate
) -> None:
    job_id = submit(server, {"hold": True}, policy={"executionTimeout": 300})
    body = poll(server, job_id, finished)
    assert body["status"] == "TIMED_OUT"
    assert "timeout" in body["error"]
    assert gate.cancelled.wait(10)


def test_routes_under_the_v2_endpoint_prefix_and_runsync(server: LocalQueueServer) -> None:
    reply = requests.post(f"{server.url}/v2/my-endpoint/runsync", json={"input": {"value": 5}}, timeout=30)
    body = reply.json()
    assert body["status"] == "COMPLETED"
    assert body["output"]["echo"] == 5
    status = requests.post(f"{server.url}/v2/my-endpoint/status/{body['id']}", timeout=5).json()
    assert status["output"]["echo"] == 5


def test_unknown_job_and_bad_body_are_rejected(server: LocalQueueServer) -> None:
    assert requests.get(f"{server.url}/status/nope", timeout=5).status_code == 404
    assert requests.post(f"{server.url}/cancel/nope", timeout=5).status_code == 404
    assert requests.post(f"{server.url}/run", json={"inputs": {}}, timeout=5).status_code == 400
    assert requests.post(f"{server.url}/run", data=b"{", timeout=5).status_code == 400


def test_blocking_handler_does_not_freeze_status_and_still_times_out() -> None:
    release = threading.Event()

    def sync_handler(job: dict[str, Any]) -> dict[str, Any]:
        release.wait(10)  # blocks the worker's loop, as a sync handler blocks the SDK's
        return {"late": True}

    queue_server = serve_in_thread(sync_handler, execution_timeout_s=0.3)
    try:
        job_id = submit(queue_server, {})
        body = poll(queue_server, job_id, finished)
        assert body["status"] == "TIMED_OUT"
        release.set()
        second = submit(queue_server, {})
        release.set()
        assert poll(queue_server, second, finished)["status"] == "COMPLETED"
        assert (
            poll(queue_server, job_id, lambda b: True)["status"] == "TIMED_OUT"
        )  # the late result is dropped
    finally:
        release.set()
        queue_server.stop()
