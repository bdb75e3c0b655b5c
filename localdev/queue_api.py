"""A LOCAL queue API with a real ``/status`` — a development tool, not part of the worker.

The RunPod SDK's own local server (``--rp_serve_api``) runs the handler inside the
``/status`` request and keeps nothing, so it shows no IN_QUEUE, no progress and no
timings. This server speaks the routes and semantics of RunPod's queue API instead:

    POST /run                 {"input": {...}, "policy"?: {"executionTimeout": ms}} -> {"id", "status"}
    POST /runsync[?wait=ms]   the same, waiting (default 90 s) for the job to finish
    GET|POST /status/{id}     {"id", "status", "delayTime", "executionTime", "output" | "error", "workerId"}
    POST /cancel/{id}         cancels a queued job, or cancels the running handler's task
    POST /purge-queue         cancels every queued job
    GET /health               {"jobs": {...counts}, "workers": {"idle", "running"}}

Every route is also served under ``/v2/{endpoint_id}/`` so a client built for
``https://api.runpod.ai/v2/{endpoint_id}`` works unchanged. Authorization headers are
accepted and ignored.

Like one RunPod worker (``concurrency_modifier`` 1), jobs run ONE at a time, in order,
through the handler function itself, wrapped by the SDK's own ``run_job`` (so a returned
``"error"`` makes the job FAILED, a raised exception becomes the SDK's JSON error,
``refresh_worker`` is honoured as far as it can be locally: logged). Statuses: IN_QUEUE,
IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT; ``delayTime`` (submit -> start) and
``executionTime`` (start -> end) in ms. A FAILED job's ``/status`` has ``error`` and no
``output``, as on the platform: whatever else the handler returned beside ``error`` (the SDK
sends it as ``output``) and the last progress update do not reach the client.

Two event loops, as on the platform: the "platform" loop serves HTTP and owns the job
table and the deadlines; the "worker" loop (its own thread) runs the handler. A handler
that blocks its loop (a sync handler, or blocking calls in an async one) therefore
behaves as on RunPod: ``/status`` keeps answering and the deadline still marks the job
TIMED_OUT, but the cancellation only reaches the handler when it yields, and the next job
waits for the worker to be free.

Progress: the handler calls ``runpod.serverless.progress_update(job, payload)``, which in
the SDK starts a thread that POSTs ``{"status": "IN_PROGRESS", "output": payload}`` to the
job-done URL the platform gives each worker (env ``RUNPOD_WEBHOOK_POST_OUTPUT``, resolved
once into ``runpod.serverless.modules.rp_http.JOB_DONE_URL``). This server points that URL
at its own ``/_local/progress/{id}`` route. That keeps the SDK's whole production path in
play (thread, JSON serialisation, HTTP post, retries) whatever way the handler imports
``progress_update`` — a payload that could not be sent on RunPod fails here too — where
monkeypatching ``progress_update`` would bypass it. The URL is process-wide: run one
queue API per process (the previous URL is restored when the server stops).

    python -m localdev.queue_api --port 8000 [--handler handler:handler] [--execution-timeout-s 600]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from runpod.serverless.modules import rp_http
from runpod.serverless.modules.rp_job import run_job
from runpod.serverless.modules.rp_logger import RunPodLogger

Handler = Callable[[dict[str, Any]], Awaitable[Any] | Any]

IN_QUEUE, IN_PROGRESS = "IN_QUEUE", "IN_PROGRESS"
COMPLETED, FAILED, CANCELLED, TIMED_OUT = "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})
DEFAULT_EXECUTION_TIMEOUT_S = 600.0  # RunPod's default per endpoint
DEFAULT_RETENTION_S = 1800.0  # RunPod keeps /run results 30 minutes
DEFAULT_RUNSYNC_WAIT_MS = 90_000
MAX_RUNSYNC_WAIT_MS = 300_000
WORKER_ID = "local-queue-api"
PROGRESS_ROUTE = "/_local/progress/{job_id}"


@dataclass
class Job:
    id: str
    input: Any
    execution_timeout_s: float
    submitted: float = field(default_factory=time.monotonic)
    status: str = IN_QUEUE
    started: float | None = None
    finished: float | None = None
    output: Any = None
    error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, status: str, *, output: Any = None, error: str | None = None) -> None:
        self.status = status
        self.finished = time.monotonic()
        if output is not None:
            self.output = output
        self.error = error
        self.done.set()

    def to_status(self) -> dict[str, Any]:
        """The body of ``/status/{id}``, shaped like RunPod's."""
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = _ms(self.started - self.submitted)
            body["workerId"] = WORKER_ID
        elif self.finished is not None:  # cancelled while queued
            body["delayTime"] = _ms(self.finished - self.submitted)
        if self.started is not None and self.finished is not None:
            body["executionTime"] = _ms(self.finished - self.started)
        if self.output is not None and self.status != FAILED:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


class _WorkerThread:
    """The handler's own event loop, in its own thread (the worker side of the platform)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.loop = asyncio.new_event_loop()
        self._current: asyncio.Task[Any] | None = None
        self._thread = threading.Thread(target=self._serve, name="queue-api-worker", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self, job: dict[str, Any]) -> concurrent.futures.Future[dict[str, Any]]:
        """Runs ``run_job(handler, job)`` on the worker loop; the future ends when the task does."""
        outcome: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()

        def create() -> None:
            task = self.loop.create_task(run_job(self.handler, job))
            self._current = task
            task.add_done_callback(lambda done: _settle(done, outcome))

        self.loop.call_soon_threadsafe(create)
        return outcome

    def cancel_current(self) -> None:
        """Cancels the running handler task; it takes effect when the handler next yields."""

        def cancel() -> None:
            if self._current is not None and not self._current.done():
                self._current.cancel()

        self.loop.call_soon_threadsafe(cancel)

    def stop(self, timeout_s: float = 5.0) -> None:
        self.cancel_current()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)


def _settle(task: asyncio.Task[Any], outcome: concurrent.futures.Future[dict[str, Any]]) -> None:
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        outcome.set_result(task.result())


class JobQueue:
    """The platform side: the job table, the queue, one worker, deadlines. Lives on the
    platform loop; every method is called from it."""

    def __init__(
        self,
        handler: Handler,
        *,
        execution_timeout_s: float = DEFAULT_EXECUTION_TIMEOUT_S,
        retention_s: float = DEFAULT_RETENTION_S,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.execution_timeout_s = execution_timeout_s
        self.retention_s = retention_s
        self.jobs: dict[str, Job] = {}
        self.current: Job | None = None
        self._pending: deque[Job] = deque()
        self._wakeup = asyncio.Event()
        self._worker = _WorkerThread(handler)
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._dispatcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch_forever())

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        await asyncio.to_thread(self._worker.stop)

    def submit(self, job_input: Any, policy: dict[str, Any] | None = None) -> Job:
        self._forget_old_jobs()
        timeout_s = self.execution_timeout_s
        requested_ms = (policy or {}).get("executionTimeout")
        if isinstance(requested_ms, int | float) and requested_ms > 0:
            timeout_s = requested_ms / 1000.0
        job = Job(id=f"{uuid.uuid4()}-local", input=job_input, execution_timeout_s=timeout_s)
        self.jobs[job.id] = job
        self._pending.append(job)
        self._wakeup.set()
        return job

    def cancel(self, job: Job) -> None:
        if job.status == IN_QUEUE:
            job.finish(CANCELLED)
            self._log(f"job {job.id}: cancelled while queued")
        elif job.status == IN_PROGRESS:
            job.finish(CANCELLED)
            self._worker.cancel_current()
            self._log(f"job {job.id}: cancelled while running; cancelling the handler's task")

    def purge(self) -> int:
        queued = [job for job in self._pending if job.status == IN_QUEUE]
        for job in queued:
            job.finish(CANCELLED)
        return len(queued)

    def progress(self, job_id: str, update: Any) -> None:
        """A progress post from the SDK; ignored unless the job is still running (a late
        post from the SDK's progress thread must not undo a final status)."""
        job = self.jobs.get(job_id)
        if job is None or job.status != IN_PROGRESS or not isinstance(update, dict):
            return
        if update.get("status") == IN_PROGRESS and "output" in update:
            job.output = update["output"]

    def health(self) -> dict[str, Any]:
        counts = {status: 0 for status in (IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED, TIMED_OUT)}
        for job in self.jobs.values():
            counts[job.status] += 1
        busy = 1 if self.current is not None else 0
        return {
            "jobs": {
                "completed": counts[COMPLETED],
                "failed": counts[FAILED] + counts[TIMED_OUT],
                "cancelled": counts[CANCELLED],
                "inProgress": counts[IN_PROGRESS],
                "inQueue": counts[IN_QUEUE],
                "retried": 0,
            },
            "workers": {"idle": 1 - busy, "running": busy},
        }

    async def _dispatch_forever(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            job = self._pending.popleft()
            if job.status != IN_QUEUE:
                continue
            self.current = job
            try:
                await self._execute(job)
            finally:
                self.current = None

    async def _execute(self, job: Job) -> None:
        job.status = IN_PROGRESS
        job.started = time.monotonic()
        self._log(f"job {job.id}: IN_PROGRESS (waited {job.started - job.submitted:.2f} s)")
        outcome = asyncio.wrap_future(self._worker.start({"id": job.id, "input": job.input}))
        finished, _ = await asyncio.wait({outcome}, timeout=job.execution_timeout_s)
        if not finished and job.status == IN_PROGRESS:
            job.finish(TIMED_OUT, error=f"execution timeout of {job.execution_timeout_s:g} s exceeded")
            self._log(f"job {job.id}: TIMED_OUT after {job.execution_timeout_s:g} s; cancelling the handler")
            self._worker.cancel_current()
        # The worker is busy until its task really ends, cancelled or not.
        await asyncio.wait({outcome})
        if job.status != IN_PROGRESS:
            return  # cancelled or timed out meanwhile; the handler's late result is dropped
        try:
            result = outcome.result()
        except asyncio.CancelledError:
            job.finish(CANCELLED, error="the handler's task was cancelled")
        except BaseException as exc:  # run_job catches Exception; this is a BaseException escaping
            job.finish(FAILED, error=f"handler crashed: {exc!r}")
        else:
            self._record(job, result)
        self._log(f"job {job.id}: {job.status} ({(job.finished or 0) - job.started:.2f} s)")

    def _record(self, job: Job, result: dict[str, Any]) -> None:
        output = result.get("output")
        try:
            json.dumps(output)
        except (TypeError, ValueError) as exc:
            job.finish(FAILED, error=f"the handler's output cannot be sent as JSON: {exc}")
            return
        if result.get("stopPod"):
            self._log(f"job {job.id}: refresh_worker requested (RunPod would replace this worker)")
        if result.get("error"):
            job.finish(FAILED, error=str(result["error"]))
        else:
            job.finish(COMPLETED, output=output)

    def _forget_old_jobs(self) -> None:
        horizon = time.monotonic() - self.retention_s
        for job_id in [jid for jid, job in self.jobs.items() if job.finished and job.finished < horizon]:
            del self.jobs[job_id]


# -- HTTP --------------------------------------------------------------------------------

QUEUE_KEY: web.AppKey[JobQueue] = web.AppKey("queue", JobQueue)


def create_app(
    handler: Handler,
    *,
    execution_timeout_s: float = DEFAULT_EXECUTION_TIMEOUT_S,
    retention_s: float = DEFAULT_RETENTION_S,
) -> web.Application:
    """The aiohttp application. Its startup routes the SDK's progress posts here (see the
    module docstring) once the listening address is known: use ``start_server``."""
    app = web.Application(client_max_size=20 * 1024 * 1024)  # /runsync's payload limit

    async def on_startup(app: web.Application) -> None:
        app[QUEUE_KEY] = JobQueue(handler, execution_timeout_s=execution_timeout_s, retention_s=retention_s)
        app[QUEUE_KEY].start()

    async def on_cleanup(app: web.Application) -> None:
        await app[QUEUE_KEY].stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    routes = [
        web.post("/run", _run),
        web.post("/runsync", _runsync),
        web.get("/status/{job_id}", _status),
        web.post("/status/{job_id}", _status),
        web.post("/cancel/{job_id}", _cancel),
        web.post("/purge-queue", _purge),
        web.get("/health", _health),
    ]
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
        app.router.add_route(route.method, "/v2/{endpoint_id}" + route.path, route.handler)
    app.router.add_post(PROGRESS_ROUTE, _progress)
    return app


async def _read_request(request: web.Request) -> tuple[Any, dict[str, Any] | None]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "the body is not JSON"})) from None
    if not isinstance(body, dict) or "input" not in body:
        raise web.HTTPBadRequest(text=json.dumps({"error": 'the body must be {"input": ...}'}))
    policy = body.get("policy")
    return body["input"], policy if isinstance(policy, dict) else None


async def _run(request: web.Request) -> web.Response:
    job_input, policy = await _read_request(request)
    job = request.app[QUEUE_KEY].submit(job_input, policy)
    return web.json_response({"id": job.id, "status": job.status})


async def _runsync(request: web.Request) -> web.Response:
    job_input, policy = await _read_request(request)
    try:
        wait_ms = min(int(request.query.get("wait", DEFAULT_RUNSYNC_WAIT_MS)), MAX_RUNSYNC_WAIT_MS)
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "wait must be milliseconds"})) from None
    job = request.app[QUEUE_KEY].submit(job_input, policy)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(job.done.wait(), wait_ms / 1000.0)
    return web.json_response(job.to_status())


def _job(request: web.Request) -> Job:
    job = request.app[QUEUE_KEY].jobs.get(request.match_info["job_id"])
    if job is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "request does not exist"}), content_type="application/json"
        )
    return job


async def _status(request: web.Request) -> web.Response:
    return web.json_response(_job(request).to_status())


async def _cancel(request: web.Request) -> web.Response:
    job = _job(request)
    request.app[QUEUE_KEY].cancel(job)
    return web.json_response({"id": job.id, "status": job.status})


async def _purge(request: web.Request) -> web.Response:
    removed = request.app[QUEUE_KEY].purge()
    return web.json_response({"removed": removed, "status": "completed"})


async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[QUEUE_KEY].health())


async def _progress(request: web.Request) -> web.Response:
    # The SDK sends JSON under a form content type; always 200 so it does not retry.
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        request.app[QUEUE_KEY].progress(request.match_info["job_id"], json.loads(await request.text()))
    return web.Response(text="ok")


# -- running it ----------------------------------------------------------------------------


@contextlib.contextmanager
def sdk_progress_routed_to(base_url: str) -> Iterator[str]:
    """Points the SDK's job-done URL (where ``progress_update`` posts) at ``base_url``."""
    template = f"{base_url}{PROGRESS_ROUTE.replace('{job_id}', '$ID')}?worker={WORKER_ID}"
    previous_url, previous_env = rp_http.JOB_DONE_URL, os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT")
    rp_http.JOB_DONE_URL = template
    os.environ["RUNPOD_WEBHOOK_POST_OUTPUT"] = template
    try:
        yield template
    finally:
        rp_http.JOB_DONE_URL = previous_url
        if previous_env is None:
            os.environ.pop("RUNPOD_WEBHOOK_POST_OUTPUT", None)
        else:
            os.environ["RUNPOD_WEBHOOK_POST_OUTPUT"] = previous_env


@dataclass
class LocalQueueServer:
    """A queue API serving from a background thread (for tests and tools)."""

    url: str
    app: web.Application
    loop: asyncio.AbstractEventLoop
    _stop: Callable[[], None]

    @property
    def queue(self) -> JobQueue:
        return self.app[QUEUE_KEY]

    def stop(self) -> None:
        self._stop()


async def _start_runner(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    reach_host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return runner, f"http://{reach_host}:{bound_port}"


def serve_in_thread(
    handler: Handler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    execution_timeout_s: float = DEFAULT_EXECUTION_TIMEOUT_S,
    retention_s: float = DEFAULT_RETENTION_S,
) -> LocalQueueServer:
    """Starts the server on its own loop in a daemon thread; returns once it listens."""
    loop = asyncio.new_event_loop()
    app = create_app(handler, execution_timeout_s=execution_timeout_s, retention_s=retention_s)
    runner, url = loop.run_until_complete(_start_runner(app, host, port))
    routing = sdk_progress_routed_to(url)
    routing.__enter__()
    thread = threading.Thread(target=loop.run_forever, name="queue-api", daemon=True)
    thread.start()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        routing.__exit__(None, None, None)

    return LocalQueueServer(url=url, app=app, loop=loop, _stop=stop)


def load_handler(spec: str) -> Handler:
    """``module:attribute`` -> the handler function."""
    module_name, _, attribute = spec.partition(":")
    handler = getattr(importlib.import_module(module_name), attribute or "handler")
    if not callable(handler):
        raise SystemExit(f"{spec} is not callable")
    return handler


async def _serve_until_stopped(args: argparse.Namespace) -> None:
    handler = load_handler(args.handler)
    app = create_app(handler, execution_timeout_s=args.execution_timeout_s, retention_s=args.retention_s)
    runner, url = await _start_runner(app, args.host, args.port)
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopped.set)
    with sdk_progress_routed_to(url):
        print(
            f"local queue API (development tool, not RunPod) listening on {url}: handler {args.handler}, "
            f"one job at a time, execution timeout {args.execution_timeout_s:g} s",
            flush=True,
        )
        try:
            await stopped.wait()
        finally:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m localdev.queue_api",
        description="Local stand-in for RunPod's queue API with a real /status (development tool).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed)")
    parser.add_argument("--handler", default="handler:handler", help="MODULE:FUNCTION of the handler")
    parser.add_argument(
        "--execution-timeout-s",
        type=float,
        default=DEFAULT_EXECUTION_TIMEOUT_S,
        help="a job running longer is TIMED_OUT and its task cancelled (per job: policy.executionTimeout ms)",
    )
    parser.add_argument(
        "--retention-s", type=float, default=DEFAULT_RETENTION_S, help="how long finished jobs are kept"
    )
    args = parser.parse_args(argv)
    if not (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL")):
        # The SDK defaults to DEBUG, which prints every handler output whole (presigned URLs too).
        RunPodLogger().set_level("INFO")
    sys.path.insert(0, os.getcwd())  # so that the default 'handler:handler' is found from the repo root
    asyncio.run(_serve_until_stopped(args))


if __name__ == "__main__":
    main()
