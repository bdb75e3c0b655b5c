"""The worker's ComfyUI client: put the inputs in place, run one API graph, fetch its output.

It follows what a real ComfyUI 0.33.0 says on the wire (``localdev/fake_comfyui/`` is the
stand-in the tests run against):

* the websocket is opened first, with a client id of our own per run; the prompt is
  submitted with a prompt id of our own, so no event of it can be missed;
* the outcome is ``execution_success`` / ``execution_error`` / ``execution_interrupted``;
  ``executing {node: null}`` (sent after the history entry is written) is the barrier
  before ``GET /history/{id}``; the output is the file of the one node the workflow names;
* events are not replayed after a reconnect and a prompt deleted from the queue vanishes
  silently, so the state is confirmed from ``/queue`` and ``/history`` after every
  reconnect and after every few seconds without news of the prompt: the client never waits
  forever, and never learns over HTTP what its socket is about to tell it;
* every socket read has a short timeout, so the deadline and a cancellation are noticed
  within about a second; both interrupt the prompt and remove it from the queue.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import requests
import websocket

from worker.errors import ErrorCode, WorkerError, disk_full_error, mentions_disk_full
from worker.logs import log_event, redact_url

# Where ComfyUI nodes report files: core SaveVideo/SaveImage under "images",
# VideoHelperSuite under "gifs", some packs under "videos".
OUTPUT_KEYS = ("images", "gifs", "videos")
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".m4v", ".avi")
MAX_DETAIL_CHARS = 2000
# Raised by this repository's StrictLoraLoaderModelOnly (comfyui_nodes/wan_worker_nodes/lora_keys.py)
# for a LoRA whose keys do not all patch the model; its message's first line carries the counts.
LORA_MISMATCH_ERROR = "LoraKeysNotMatchedError"
LORA_COUNTS = re.compile(r"LoRA '(?P<name>[^']*)': (?P<matched>\d+) of (?P<total>\d+) keys matched")

REQUEST_TIMEOUT_S = 30.0  # one HTTP request
RECV_TIMEOUT_S = 1.0  # one socket read: how soon a deadline or a cancel is noticed
STATE_POLL_S = 5.0  # without news of the prompt for this long, its state is asked over HTTP
RECONNECT_ATTEMPTS = 6  # backoff 0.2 s doubling to 5 s: about 11 s before ComfyUI counts as gone
INTERRUPT_GRACE_S = 5.0  # for an interrupted prompt to leave ComfyUI
BARRIER_WAIT_S = 5.0  # for executing {node: null} once the outcome is known


@dataclass(frozen=True)
class OutputFile:
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class Progress:
    stage: str  # "queued", "running" or "sampling"
    percent: float  # of this prompt, 0-100
    node: str | None
    node_title: str | None
    step: int | None
    steps: int | None


@dataclass(frozen=True)
class RunResult:
    prompt_id: str
    output: OutputFile  # the output node's file (its video, when it reports several)
    queue_s: float
    inference_s: float
    files: tuple[OutputFile, ...] = ()  # every file the output node reported, in its order
    report: dict[str, Any] = field(default_factory=dict)  # the node's whole history output


class _Disconnected(Exception):
    pass


def _unavailable(message: str) -> WorkerError:
    return WorkerError(ErrorCode.COMFY_UNAVAILABLE, message, refresh_worker=True)


def _node_title(graph: dict[str, Any], node_id: str | None) -> str | None:
    if node_id is None:
        return None
    node = graph.get(node_id)
    if not isinstance(node, dict):
        return None
    title = (node.get("_meta") or {}).get("title")
    return str(title) if title else str(node.get("class_type", "")) or None


class _PromptWatch:
    """The state of one prompt as its events tell it, and the progress derived from it."""

    def __init__(
        self,
        prompt_id: str,
        graph: dict[str, Any],
        on_progress: Callable[[Progress], None],
    ) -> None:
        self.prompt_id = prompt_id
        self.graph = graph
        self.on_progress = on_progress
        self.total = max(1, len(graph))
        self.done: set[str] = set()
        self.current: str | None = None
        self.step: int | None = None
        self.steps: int | None = None
        self.stage = "queued"
        self.submitted_at = time.monotonic()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.outcome: str | None = None  # "success", "error" or "interrupted"
        self.event: dict[str, Any] = {}
        self.barrier = False
        self.news_at = self.submitted_at  # when an event last said something about the prompt
        self._last: Progress | None = None

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            return  # binary frames are previews; not needed here
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
            return
        kind, data = message.get("type"), message["data"]
        prompt_id = data.get("prompt_id")
        if prompt_id is None:
            # After a reconnect the server names the running node without a prompt id; it
            # sends that only to the prompt's own client id, which is ours alone.
            if kind == "executing" and data.get("node") is not None:
                self.news_at = time.monotonic()
                self._enter(str(data["node"]))
                self.emit()
            return
        if prompt_id != self.prompt_id:
            return
        self.news_at = time.monotonic()
        if kind == "execution_start":
            self._mark_started()
        elif kind == "execution_cached":
            self.done.update(str(n) for n in data.get("nodes") or [] if str(n) in self.graph)
        elif kind == "executing":
            if data.get("node") is None:
                self.barrier = True
                return
            # display_node is the graph's node when the server runs an expanded copy of it
            self._enter(str(data.get("display_node") or data["node"]))
        elif kind == "progress":
            self._sampling(data)
        elif kind == "progress_state":
            nodes = data.get("nodes") or {}
            self.done.update(
                str(n) for n, s in nodes.items() if isinstance(s, dict) and s.get("state") == "finished"
            )
        elif kind == "executed" and data.get("node") is not None:
            self.done.add(str(data["node"]))
        elif kind in ("execution_success", "execution_error", "execution_interrupted"):
            self._finish(kind.removeprefix("execution_"), data)
        self.emit()

    def from_history(self, entry: dict[str, Any]) -> None:
        """The outcome read from a history entry (when the events were missed)."""
        status = entry.get("status") or {}
        self.barrier = True
        if status.get("status_str") == "success" or (status.get("completed") and "status_str" not in status):
            self._finish("success", {})
            return
        for event, data in reversed(status.get("messages") or []):
            if event in ("execution_error", "execution_interrupted") and isinstance(data, dict):
                self._finish(event.removeprefix("execution_"), data)
                return
        self._finish("error", {"exception_message": f"ComfyUI recorded status {status!r}"})

    def mark_running(self) -> None:
        if self.started_at is None:
            self._mark_started()
            self.emit()

    def _mark_started(self) -> None:
        if self.started_at is None:
            self.started_at = time.monotonic()
        if self.stage == "queued":
            self.stage = "running"

    def _enter(self, node_id: str) -> None:
        self._mark_started()
        if self.current is not None and self.current != node_id:
            self.done.add(self.current)
        self.current, self.step, self.steps, self.stage = node_id, None, None, "running"

    def _sampling(self, data: dict[str, Any]) -> None:
        self._mark_started()
        node = data.get("node")
        if node is not None and str(node) in self.graph and str(node) != self.current:
            self._enter(str(node))
        try:
            self.step, self.steps = int(data["value"]), int(data["max"])
        except (KeyError, TypeError, ValueError):
            return
        self.stage = "sampling"

    def _finish(self, outcome: str, data: dict[str, Any]) -> None:
        if self.outcome is not None:
            return
        self.outcome, self.event = outcome, data
        self.finished_at = time.monotonic()
        if self.started_at is None:
            self.started_at = self.finished_at
        if outcome == "success":
            self.done.update(self.graph)
            self.current, self.step, self.steps, self.stage = None, None, None, "running"

    def percent(self) -> float:
        if self.outcome == "success":
            return 100.0
        fraction = 0.0
        if (
            self.current is not None
            and self.current not in self.done
            and self.step is not None
            and self.steps
        ):
            fraction = min(max(self.step / self.steps, 0.0), 1.0)
        done = len(self.done & set(self.graph))
        return round(min(100.0 * (done + fraction) / self.total, 99.9), 1)

    def emit(self) -> None:
        progress = Progress(
            stage=self.stage,
            percent=self.percent(),
            node=self.current,
            node_title=_node_title(self.graph, self.current),
            step=self.step,
            steps=self.steps,
        )
        if progress == self._last:
            return
        self._last = progress
        try:
            self.on_progress(progress)
        except Exception as exc:  # progress is best effort
            log_event("comfy_progress_callback_failed", level="warning", error=repr(exc))

    def position(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "node": self.current,
            "node_title": _node_title(self.graph, self.current),
            "percent": self.percent(),
        }


class _EventStream:
    """The websocket of one client id: reads with a timeout, reconnects with backoff."""

    def __init__(self, url: str, connect_timeout_s: float) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self.ws: websocket.WebSocket | None = None

    def open(self) -> None:
        try:
            self.ws = websocket.create_connection(self.url, timeout=self.connect_timeout_s)
        except (OSError, websocket.WebSocketException) as exc:
            raise _unavailable(f"cannot open ComfyUI's websocket: {exc}") from exc

    def recv(self, timeout_s: float) -> str | bytes | None:
        """A message, or None when none came within the timeout; _Disconnected when closed."""
        if self.ws is None:
            raise _Disconnected("not connected")
        try:
            self.ws.settimeout(timeout_s)
            message = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except (OSError, websocket.WebSocketException) as exc:
            raise _Disconnected(str(exc) or type(exc).__name__) from exc
        if message == "":  # a close frame
            raise _Disconnected("closed by ComfyUI")
        return message

    def close(self) -> None:
        if self.ws is not None:
            # Closing a broken socket can fail in many ways; it is gone either way.
            with contextlib.suppress(Exception):
                self.ws.close(timeout=1)
            self.ws = None

    def reconnect(self, deadline: float, cancel: threading.Event) -> bool:
        """Reopen with the same client id (the old socket is closed first: ComfyUI drops a
        client id when its old socket closes, even after a new one took it over). False when
        the deadline passed or the job was cancelled while trying."""
        self.close()
        delay, last_error = 0.2, ""
        for _ in range(RECONNECT_ATTEMPTS):
            if cancel.wait(min(delay, max(0.0, deadline - time.monotonic()))) or time.monotonic() >= deadline:
                return False
            try:
                self.open()
                return True
            except WorkerError as exc:
                last_error = exc.message
            delay = min(delay * 2, 5.0)
        tries = f"{RECONNECT_ATTEMPTS} tries"
        raise _unavailable(f"lost the websocket to ComfyUI and could not reconnect ({tries}): {last_error}")


class ComfyClient:
    """One ComfyUI server. ``input_dir``: its input folder when shared (COMFY_INPUT_DIR)."""

    def __init__(self, base_url: str, *, input_dir: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.ws_url = f"{'wss' if parts.scheme == 'https' else 'ws'}://{parts.netloc}{parts.path}/ws"
        self.input_dir = Path(input_dir) if input_dir is not None else None
        self.session = requests.Session()

    # -- HTTP --------------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> requests.Response:
        try:
            return self.session.request(
                method, self.base_url + path, timeout=timeout or REQUEST_TIMEOUT_S, **kwargs
            )
        except requests.RequestException as exc:
            raise _unavailable(
                f"ComfyUI at {redact_url(self.base_url)} did not answer {method} {path}: {exc}"
            ) from exc

    def _get_json(self, path: str, *, timeout: float | None = None) -> Any:
        response = self._request("GET", path, timeout=timeout)
        if response.status_code != 200:
            raise _unavailable(f"ComfyUI answered HTTP {response.status_code} to GET {path}")
        try:
            return response.json()
        except ValueError as exc:
            raise _unavailable(f"ComfyUI answered GET {path} with something that is not JSON") from exc

    def system_stats(self) -> dict[str, Any]:
        return self._system_stats(REQUEST_TIMEOUT_S)

    def _system_stats(self, timeout: float) -> dict[str, Any]:
        stats = self._get_json("/system_stats", timeout=timeout)
        if not isinstance(stats, dict):
            raise _unavailable("ComfyUI's /system_stats is not an object")
        return stats

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                self._system_stats(min(REQUEST_TIMEOUT_S, max(remaining, 0.5)))
                return
            except WorkerError as exc:
                if time.monotonic() + 0.5 >= deadline:
                    raise _unavailable(
                        f"ComfyUI at {redact_url(self.base_url)} was not ready within {timeout_s:g} s: "
                        f"{exc.message}"
                    ) from exc
            time.sleep(0.5)

    # -- inputs and outputs ------------------------------------------------------------------

    def put_input(self, local_path: Path, name: str) -> str:
        """Put a file where LoadImage/LoadVideo find it; returns the name to use in the graph."""
        relative = _relative_name(name)
        if self.input_dir is not None:
            return self._copy_input(local_path, relative)
        subfolder = "" if relative.parent == PurePosixPath(".") else relative.parent.as_posix()
        content_type = mimetypes.guess_type(relative.name)[0] or "application/octet-stream"
        with local_path.open("rb") as handle:
            response = self._request(
                "POST",
                "/upload/image",
                files={"image": (relative.name, handle, content_type)},
                data={"overwrite": "true", "type": "input", "subfolder": subfolder},
            )
        if response.status_code == 413:
            raise WorkerError(
                ErrorCode.INPUT_TOO_LARGE,
                f"ComfyUI refused the upload of {relative.name} ({local_path.stat().st_size} bytes): larger "
                "than its --max-upload-size. Share its input folder (COMFY_INPUT_DIR) or raise that limit.",
                details={"name": name, "bytes": local_path.stat().st_size},
            )
        if response.status_code != 200:
            raise _unavailable(
                f"ComfyUI refused the upload of {relative.name}: HTTP {response.status_code} "
                f"{response.text[:200]}"
            )
        try:
            reply = response.json()
            stored, stored_in = str(reply["name"]), str(reply.get("subfolder") or "")
        except (ValueError, KeyError, TypeError) as exc:
            raise _unavailable("ComfyUI answered the upload with an unexpected body") from exc
        return f"{stored_in}/{stored}" if stored_in else stored

    def _copy_input(self, local_path: Path, relative: PurePosixPath) -> str:
        assert self.input_dir is not None
        dest = self.input_dir / relative
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path, partial)
            os.replace(partial, dest)  # ComfyUI never sees half a file
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise _unavailable(
                f"cannot write {relative} into ComfyUI's input folder {self.input_dir}: {exc}"
            ) from exc
        return relative.as_posix()

    def remove_inputs(self, names: list[str]) -> None:
        """Delete job inputs from the shared input folder (best effort; without a shared
        folder ComfyUI offers no way to delete uploads)."""
        if self.input_dir is None:
            return
        root = self.input_dir.resolve()
        for name in names:
            try:
                path = (root / _relative_name(name)).resolve()
                path.unlink(missing_ok=True)
                parent = path.parent
                while parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
                    parent.rmdir()
                    parent = parent.parent
            except (OSError, WorkerError) as exc:
                log_event("comfy_input_not_removed", level="warning", name=name, error=str(exc))

    def download_output(self, output: OutputFile, dest: Path) -> int:
        """Stream the output file to ``dest`` (written whole or not at all); bytes written."""
        response = self._request("GET", "/view", params=_view_params(output), stream=True)
        partial = dest.with_name(dest.name + ".part")
        with response:
            if response.status_code == 404:
                raise WorkerError(
                    ErrorCode.GENERATION_FAILED,
                    f"ComfyUI reported {_describe_output(output)} but has no such file",
                    details={"output": _output_dict(output)},
                )
            if response.status_code != 200:
                raise _unavailable(f"ComfyUI answered HTTP {response.status_code} to GET /view")
            expected = response.headers.get("Content-Length")
            written = 0
            try:
                with partial.open("wb") as handle:
                    for chunk in response.iter_content(chunk_size=1 << 20):
                        handle.write(chunk)
                        written += len(chunk)
                if expected is not None and expected.isdigit() and int(expected) != written:
                    raise _unavailable(
                        f"the download of {output.filename} stopped at {written}/{expected} bytes"
                    )
                os.replace(partial, dest)
            except requests.RequestException as exc:
                partial.unlink(missing_ok=True)
                raise _unavailable(f"the download of {output.filename} from ComfyUI failed: {exc}") from exc
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return written

    def take_output(self, output: OutputFile, dest: Path, output_dir: Path | None) -> None:
        """The output file moved to ``dest`` when ComfyUI's output folder is shared (COMFY_OUTPUT_DIR:
        a chunk's raw frames are ~2.8 MB a frame), downloaded from ``/view`` otherwise."""
        path = self._output_path(output, output_dir)
        if path is not None and path.is_file():
            try:
                shutil.move(path, dest)
                return
            except OSError as exc:
                log_event("comfy_output_not_moved", level="warning", name=output.filename, error=str(exc))
        self.download_output(output, dest)

    def _output_path(self, output: OutputFile, output_dir: Path | None) -> Path | None:
        if output_dir is None or output.type != "output":
            return None
        root = output_dir.resolve()
        path = (root / output.subfolder / output.filename).resolve()
        if not path.is_relative_to(root):
            log_event("comfy_output_outside_folder", level="warning", name=output.filename)
            return None
        return path

    def remove_output(self, output: OutputFile, output_dir: Path | None) -> None:
        """Delete the generated file from ComfyUI's output folder (COMFY_OUTPUT_DIR), if known."""
        path = self._output_path(output, output_dir)
        if path is None:
            return
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log_event("comfy_output_not_removed", level="warning", name=output.filename, error=str(exc))

    def _output_exists(self, output: OutputFile) -> bool:
        response = self._request("GET", "/view", params=_view_params(output), stream=True)
        with response:
            if response.status_code in (200, 404):
                return response.status_code == 200
        raise _unavailable(f"ComfyUI answered HTTP {response.status_code} to GET /view")

    # -- running a graph -------------------------------------------------------------------

    def run(
        self,
        graph: dict[str, Any],
        *,
        output_node: str,
        deadline: float,
        on_progress: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> RunResult:
        """Run ``graph`` to completion and return the file of ``output_node``. Its log events carry
        the job id of the caller's ``job_context``.

        A reported output that is not on disk (a cached result whose file was deleted) is
        retried once after ``POST /free``, which empties ComfyUI's node cache.
        """
        if output_node not in graph:
            raise WorkerError(
                ErrorCode.WORKFLOW_INVALID, f"the output node {output_node!r} is not in the graph"
            )
        first = self._run_once(graph, output_node, deadline, on_progress, cancel)
        if self._output_exists(first.output):
            return first
        log_event(
            "comfy_output_missing",
            level="warning",
            prompt_id=first.prompt_id,
            output=_describe_output(first.output),
            action="free the cache and run again",
        )
        self._request("POST", "/free", json={"free_memory": True})
        cancel.wait(min(0.5, max(0.0, deadline - time.monotonic())))  # let ComfyUI act on the flag
        second = self._run_once(graph, output_node, deadline, on_progress, cancel)
        if not self._output_exists(second.output):
            raise WorkerError(
                ErrorCode.GENERATION_FAILED,
                f"ComfyUI reported {_describe_output(second.output)} for output node {output_node} but the "
                "file does not exist, even after emptying its cache and running the prompt again",
                details={"prompt_id": second.prompt_id, "output": _output_dict(second.output)},
            )
        return replace(
            second,
            queue_s=round(first.queue_s + second.queue_s, 3),
            inference_s=round(first.inference_s + second.inference_s, 3),
        )

    def _run_once(
        self,
        graph: dict[str, Any],
        output_node: str,
        deadline: float,
        on_progress: Callable[[Progress], None],
        cancel: threading.Event,
    ) -> RunResult:
        client_id = uuid.uuid4().hex
        prompt_id = str(uuid.uuid4())
        stream = _EventStream(f"{self.ws_url}?clientId={client_id}", REQUEST_TIMEOUT_S)
        stream.open()
        try:
            watch = _PromptWatch(prompt_id, graph, on_progress)
            self._submit(graph, prompt_id, client_id)
            log_event("comfy_prompt_queued", prompt_id=prompt_id, nodes=len(graph))
            watch.emit()
            self._follow(stream, watch, deadline, cancel)
        finally:
            stream.close()
        assert watch.started_at is not None and watch.finished_at is not None
        queue_s = round(watch.started_at - watch.submitted_at, 3)
        inference_s = round(watch.finished_at - watch.started_at, 3)
        log_event(
            "comfy_prompt_finished",
            prompt_id=prompt_id,
            outcome=watch.outcome,
            queue_s=queue_s,
            inference_s=inference_s,
        )
        if watch.outcome == "error":
            raise _generation_error(watch.event, prompt_id)
        if watch.outcome == "interrupted":
            raise WorkerError(
                ErrorCode.GENERATION_FAILED,
                "ComfyUI interrupted the prompt, not at this job's request (another client or an operator)",
                details={
                    "prompt_id": prompt_id,
                    "node_id": watch.event.get("node_id"),
                    "node_type": watch.event.get("node_type"),
                },
            )
        report = self._read_output(prompt_id, graph, output_node)
        return RunResult(
            prompt_id=prompt_id,
            output=_output_file(report) or _no_file(prompt_id, graph, output_node, report),
            queue_s=queue_s,
            inference_s=inference_s,
            files=tuple(_output_files(report)),
            report=report,
        )

    def _submit(self, graph: dict[str, Any], prompt_id: str, client_id: str) -> None:
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        response = self._request("POST", "/prompt", json=body)
        if response.status_code >= 500:
            raise _unavailable(
                f"ComfyUI answered HTTP {response.status_code} to POST /prompt: {response.text[:300]}"
            )
        try:
            reply = response.json()
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise WorkerError(
                ErrorCode.WORKFLOW_INVALID,
                f"ComfyUI answered HTTP {response.status_code} to POST /prompt: {response.text[:300]}",
            )
        if response.status_code == 200 and not reply.get("node_errors"):
            return
        if response.status_code == 200:
            # A partly valid graph is queued and runs its valid outputs: stop it.
            self._stop_prompt(prompt_id)
        raise _rejection(reply, graph)

    def _follow(
        self,
        stream: _EventStream,
        watch: _PromptWatch,
        deadline: float,
        cancel: threading.Event,
    ) -> None:
        """Read events until the outcome and the barrier, confirming state over HTTP."""
        last_check = time.monotonic()
        while not (watch.finished and watch.barrier):
            now = time.monotonic()
            if watch.finished:
                # The outcome is known: wait a little for the barrier, which only orders the
                # history read; cancel and deadline no longer apply.
                barrier_by = (watch.finished_at or now) + BARRIER_WAIT_S
                if now >= barrier_by:
                    return
                wait = barrier_by - now
            else:
                if cancel.is_set():
                    self._abort(stream, watch, ErrorCode.CANCELLED, "the job was cancelled")
                if now >= deadline:
                    message = "ComfyUI did not finish before the job's deadline"
                    self._abort(stream, watch, ErrorCode.TIMEOUT, message)
                wait = deadline - now
            try:
                received = stream.recv(max(0.05, min(RECV_TIMEOUT_S, wait)))
            except _Disconnected as exc:
                if watch.finished:
                    return  # the history read that follows retries until the entry is there
                log_event("comfy_ws_lost", level="warning", prompt_id=watch.prompt_id, error=str(exc))
                try:
                    reconnected = stream.reconnect(deadline, cancel)
                except WorkerError:
                    self._stop_prompt(watch.prompt_id)
                    raise
                if reconnected:
                    log_event("comfy_ws_reconnected", prompt_id=watch.prompt_id)
                    self._confirm_state(watch)
                    last_check = time.monotonic()
                continue
            if received is not None:
                watch.handle(received)
            # Only after a quiet spell: polling while events flow could read the outcome from the
            # history before the socket says it was cut (then the events it missed go unnoticed).
            quiet_since = max(last_check, watch.news_at)
            if not watch.finished and time.monotonic() - quiet_since >= STATE_POLL_S:
                self._confirm_state(watch)
                last_check = time.monotonic()

    def _confirm_state(self, watch: _PromptWatch) -> None:
        """Where the prompt is, from /queue then /history (in that order: a finished prompt
        leaves the queue and enters the history at once)."""
        running, pending = self._queue_ids()
        if watch.prompt_id in running:
            watch.mark_running()
            return
        if watch.prompt_id in pending:
            return
        history = self._get_json(f"/history/{watch.prompt_id}")
        entry = history.get(watch.prompt_id) if isinstance(history, dict) else None
        if not isinstance(entry, dict):
            raise WorkerError(
                ErrorCode.GENERATION_FAILED,
                "ComfyUI no longer knows the prompt: it is neither queued, running nor in its history "
                "(deleted from the queue by someone, or ComfyUI restarted)",
                details={"prompt_id": watch.prompt_id},
            )
        if not watch.finished or not watch.barrier:
            watch.from_history(entry)
            watch.emit()

    def _queue_ids(self) -> tuple[set[str], set[str]]:
        queue = self._get_json("/queue")
        if not isinstance(queue, dict):
            raise _unavailable("ComfyUI's /queue is not an object")

        def ids(items: Any) -> set[str]:
            return {str(i[1]) for i in items or [] if isinstance(i, list) and len(i) > 1}

        return ids(queue.get("queue_running")), ids(queue.get("queue_pending"))

    def _stop_prompt(self, prompt_id: str) -> None:
        """Drop the prompt if it waits, interrupt it if it runs (best effort). In this order: a
        prompt that starts between the two calls is still caught by the interrupt."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            with contextlib.suppress(WorkerError):
                self._request("POST", path, json=body, timeout=min(REQUEST_TIMEOUT_S, 5.0))

    def _abort(self, stream: _EventStream, watch: _PromptWatch, code: ErrorCode, message: str) -> None:
        log_event("comfy_prompt_abort", level="warning", reason=code.value, **watch.position())
        self._stop_prompt(watch.prompt_id)
        stopped = self._await_stop(stream, watch)
        details = {**watch.position(), "comfy_stopped": stopped}
        if not stopped:
            message += "; ComfyUI did not stop the prompt, so this worker will be replaced"
        raise WorkerError(code, message, details=details, refresh_worker=not stopped)

    def _await_stop(self, stream: _EventStream, watch: _PromptWatch) -> bool:
        """Whether the prompt left ComfyUI within the grace period after an interrupt."""
        give_up = time.monotonic() + INTERRUPT_GRACE_S
        next_check = time.monotonic()  # a pending prompt is gone at once
        while time.monotonic() < give_up:
            if watch.barrier or watch.finished:
                return True
            try:
                message = stream.recv(0.25)
            except _Disconnected:
                message = None
                time.sleep(0.25)
            if message is not None:
                watch.handle(message)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 0.5
                try:
                    running, pending = self._queue_ids()
                except WorkerError:
                    return False
                if watch.prompt_id not in running | pending:
                    return True
        return watch.barrier or watch.finished

    def _read_output(self, prompt_id: str, graph: dict[str, Any], output_node: str) -> dict[str, Any]:
        entry: Any = None
        for attempt in range(10):  # history is written before the barrier; this covers a missed one
            history = self._get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id) if isinstance(history, dict) else None
            if isinstance(entry, dict):
                break
            time.sleep(0.1 * (attempt + 1))
        if not isinstance(entry, dict):
            raise WorkerError(
                ErrorCode.GENERATION_FAILED,
                "ComfyUI reported success but has no history entry for the prompt",
                details={"prompt_id": prompt_id},
            )
        outputs = entry.get("outputs") or {}
        report = outputs.get(output_node)
        return report if isinstance(report, dict) else {"outputs": sorted(outputs)}


# -- helpers ---------------------------------------------------------------------------------


def _relative_name(name: str) -> PurePosixPath:
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts or "\\" in name:
        raise WorkerError(ErrorCode.INTERNAL_ERROR, f"unsafe ComfyUI input name {name!r}")
    return relative


def _view_params(output: OutputFile) -> dict[str, str]:
    return {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}


def _output_dict(output: OutputFile) -> dict[str, str]:
    return {"filename": output.filename, "subfolder": output.subfolder, "type": output.type}


def _describe_output(output: OutputFile) -> str:
    path = f"{output.subfolder}/{output.filename}" if output.subfolder else output.filename
    return f"{path} ({output.type})"


def _output_files(node_output: Any) -> list[OutputFile]:
    """Every file a node reported, in the order it listed them."""
    if not isinstance(node_output, dict):
        return []
    return [
        OutputFile(
            filename=str(item["filename"]),
            subfolder=str(item.get("subfolder") or ""),
            type=str(item.get("type") or "output"),
        )
        for key in OUTPUT_KEYS
        for item in node_output.get(key) or []
        if isinstance(item, dict) and item.get("filename")
    ]


def _output_file(node_output: Any) -> OutputFile | None:
    """The file a node reported: a video file first, else the first file listed."""
    files = _output_files(node_output)
    videos = [f for f in files if f.filename.lower().endswith(VIDEO_SUFFIXES)]
    return (videos or files or [None])[0]


def _no_file(prompt_id: str, graph: dict[str, Any], output_node: str, report: dict[str, Any]) -> OutputFile:
    node = graph.get(output_node, {})
    raise WorkerError(
        ErrorCode.GENERATION_FAILED,
        f"ComfyUI finished but output node {output_node} ({node.get('class_type')}) reported no file",
        details={"prompt_id": prompt_id, "output_node": output_node, "outputs": report.get("outputs", [])},
    )


def _generation_error(event: dict[str, Any], prompt_id: str) -> WorkerError:
    exception_type = str(event.get("exception_type") or "")
    exception_message = str(event.get("exception_message") or "").strip()
    node_id, node_type = event.get("node_id"), event.get("node_type")
    out_of_memory = (
        exception_type.endswith("OutOfMemoryError") or "out of memory" in exception_message.lower()
    )
    first_line = exception_message.splitlines()[0] if exception_message else "no message"
    details = {
        "prompt_id": prompt_id,
        "node_id": node_id,
        "node_type": node_type,
        "exception_type": exception_type,
        "exception_message": exception_message[:MAX_DETAIL_CHARS],
    }
    if exception_type.rpartition(".")[2] == LORA_MISMATCH_ERROR:
        return _lora_mismatch(details, first_line)
    if mentions_disk_full(exception_message):  # ComfyUI shares the worker's disk
        return disk_full_error(f"ComfyUI node {node_id} ({node_type}) writing its output")
    if out_of_memory:
        message = f"GPU out of memory in ComfyUI node {node_id} ({node_type}): {first_line}"
    else:
        message = f"ComfyUI failed in node {node_id} ({node_type}): {exception_type}: {first_line}"
    return WorkerError(ErrorCode.GENERATION_FAILED, message, details=details, refresh_worker=out_of_memory)


def _lora_mismatch(details: dict[str, Any], first_line: str) -> WorkerError:
    """WORKFLOW_INVALID: a LoRA file that does not fit the model is a deployment problem. No refresh:
    a fresh worker reads the same file and fails the same way."""
    counts = LORA_COUNTS.search(first_line)
    if counts is not None:
        details = {
            **details,
            "lora_name": counts["name"],
            "keys_matched": int(counts["matched"]),
            "keys_total": int(counts["total"]),
        }
    message = (
        f"{first_line} (node {details['node_id']}). The LoRA file does not fit the model: install the "
        "file models/manifest.json pins (python download_models.py --verify) or fix the workflow's lora_name"
    )
    return WorkerError(ErrorCode.WORKFLOW_INVALID, message, details=details)


def _rejection(reply: dict[str, Any], graph: dict[str, Any]) -> WorkerError:
    """WORKFLOW_INVALID from a validation reply, node errors summarised per node."""
    raw_error = reply.get("error")
    if isinstance(raw_error, dict):
        top = {k: raw_error.get(k) for k in ("type", "message", "details")}
        extra = raw_error.get("extra_info") or {}
        if isinstance(extra, dict) and extra.get("node_id") is not None:
            top["node_id"], top["class_type"] = str(extra["node_id"]), extra.get("class_type")
    else:
        top = {"type": None, "message": str(raw_error or "the graph has node errors"), "details": None}
    nodes: list[dict[str, Any]] = []
    parts: list[str] = []
    for node_id, entry in (reply.get("node_errors") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        class_type = entry.get("class_type") or (graph.get(str(node_id)) or {}).get("class_type")
        errors = []
        for error in entry.get("errors") or []:
            if not isinstance(error, dict):
                continue
            extra = error.get("extra_info") or {}
            summary = {
                "type": error.get("type"),
                "message": error.get("message"),
                "details": error.get("details"),
                "input_name": extra.get("input_name"),
            }
            if "received_value" in extra:
                summary["received_value"] = extra["received_value"]
            errors.append(summary)
            parts.append(f"node {node_id} ({class_type}) {_describe_error(summary)}")
        nodes.append(
            {
                "node_id": str(node_id),
                "class_type": class_type,
                "node_title": _node_title(graph, str(node_id)),
                "errors": errors,
            }
        )
    message = f"ComfyUI rejected the workflow: {top.get('message')}"
    if top.get("type") == "missing_node_type" and top.get("details"):
        message += f" ({top['details']})"
    if parts:
        more = f" (+{len(parts) - 5} more)" if len(parts) > 5 else ""
        message += ": " + "; ".join(parts[:5]) + more
    return WorkerError(ErrorCode.WORKFLOW_INVALID, message, details={"error": top, "node_errors": nodes})


def _describe_error(error: dict[str, Any]) -> str:
    name, text, details = (
        error.get("input_name"),
        str(error.get("message") or error.get("type")),
        error.get("details"),
    )
    if details and details != name:
        text += f" ({details})"
    return f"{name}: {text}" if name else text
