"""RunPod serverless handler: Wan2.2 Animate character replacement, MinIO in and out.

One job:
  1. download the avatar image and the driving video from MinIO (keys, never inline media);
  2. prepare them (avatar decoded and checked; driving video conformed to 24 fps, 1280x720);
  3. run the pinned workflow in the ComfyUI beside this worker, reporting progress;
  4. validate the result (H.264, 1280x720, 24 fps, one frame per driving frame, audio kept);
  5. upload it to MinIO and return its key (and a presigned URL when asked).
The steps live in ``worker.job``; this file only connects them to RunPod.

    python handler.py                      # serve RunPod jobs
    python handler.py --test_input '{"input": {...}}'   # one job, locally
    python handler.py --test_input '{"id": "job-7", "input": {...}}'   # ... as job job-7 again
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import uuid
from typing import Any

# runpod reads its log level once, at import; its default (DEBUG) logs every job's whole
# output, presigned URLs included.
os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")

import runpod
from runpod.serverless.modules import rp_http

from worker.config import Settings
from worker.errors import ErrorCode, WorkerError, for_runpod
from worker.job import JobRunner
from worker.logs import log_event

_runner: JobRunner | None = None
_runner_lock = threading.Lock()
# The id the SDK's local mode (--test_input, test_input.json) gives every job when the test
# input has none (runpod/serverless/modules/rp_local.py). Outputs are keyed on the job id.
SDK_LOCAL_JOB_ID = "local_test"
# Set by main() when the SDK has no RunPod to post progress to (its local modes): progress is
# logged instead of posted, which would fail with "Failed to return job results" each time.
_progress_to_log = False


def get_runner() -> JobRunner:
    """The job runner, built once from the environment (raises CONFIG_INVALID)."""
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = JobRunner(Settings.from_env())
        return _runner


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    if job.get("id") == SDK_LOCAL_JOB_ID:
        # Each local run is a new job: the SDK's fixed id would return the last run's output.
        # Set in the SDK's own dict so that its log lines name the same id.
        job["id"] = f"local-{uuid.uuid4().hex[:12]}"
    job_id = str(job.get("id") or "local")
    try:
        runner = get_runner()
    except WorkerError as exc:
        log_event("config_invalid", job_id, level="error", error=exc.message)
        return for_runpod(exc.to_result())

    cancel = threading.Event()

    def send_progress(payload: dict[str, Any]) -> None:
        if _progress_to_log:
            log_event("progress", job_id, **payload)
        else:
            runpod.serverless.progress_update(job, payload)

    # Blocking work runs in a thread so that RunPod's cancel and timeout can reach this
    # coroutine; on cancellation the job interrupts ComfyUI and stops at the next check.
    work = asyncio.ensure_future(
        asyncio.to_thread(runner.run, job_id, job.get("input"), send_progress, cancel)
    )
    try:
        result = await asyncio.shield(work)
    except asyncio.CancelledError:
        cancel.set()
        log_event("job_cancelled", job_id, level="warning")
        # The worker is busy until the job's thread has let go of ComfyUI and ffmpeg: the SDK
        # takes no next job before this returns (the runner's lock covers a second cancel).
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({work})
        raise
    return for_runpod(result)


def main() -> None:
    global _progress_to_log
    # The platform gives each worker its job-done URL (RUNPOD_WEBHOOK_POST_OUTPUT), where the SDK
    # posts progress; without it the SDK runs locally and has nowhere to post.
    _progress_to_log = not rp_http.JOB_DONE_URL.startswith(("http://", "https://"))
    try:
        runner = get_runner()
    except WorkerError as exc:
        print(f"wan-worker: {exc.message}", file=sys.stderr)
        sys.exit(2)
    try:
        runner.storage.check_bucket()
    except WorkerError as exc:
        # Not fatal: MinIO may come back, or the bucket be created; meanwhile each job fails with
        # this code (a worker that exits would only be restarted, and jobs would wait unanswered).
        misconfigured = exc.code is ErrorCode.STORAGE_MISCONFIGURED
        log_event(
            "storage_misconfigured_at_start" if misconfigured else "storage_unreachable_at_start",
            level="error" if misconfigured else "warning",
            error_code=exc.code.value,
            error=exc.message,
        )
    log_event(
        "worker_ready",
        workflow=runner.workflow.name,
        workflow_sha256=runner.workflow.sha256,
        comfy_url=runner.settings.comfy_url,
        bucket=runner.settings.minio_bucket,
    )
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
