"""What ``/status`` shows while a job runs: the stage, a 0-100 percent, and during inference
which window of the graph runs and the sampler's step.

Each update is an HTTP call from the RunPod SDK, so ``ProgressReporter`` sends at most one per
``interval_s`` within a stage, but never loses the latest state: an update that comes too soon
is held and sent when the interval has passed (by a timer, unless a newer update or a stage
change comes first). A stage change is sent at once. The job runs in a worker thread and the
timer in its own; one lock orders every send.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from worker.comfy_client import Progress
from worker.graph.api import upstream
from worker.graph.wan_rules import ANIMATE_CLASSES, window_numbers
from worker.logs import log_event

ProgressSink = Callable[[dict[str, Any]], None]

# Where each stage sits on the job's 0-100 % progress scale.
STAGE_SPAN = {
    "download": (0.0, 4.0),
    "prepare": (4.0, 8.0),
    "queue": (8.0, 10.0),
    "inference": (10.0, 94.0),
    "postprocess": (94.0, 97.0),
    "upload": (97.0, 100.0),
}
# Shares of the inference stage in a windowed graph: what the windows need (model loads, pose,
# face, SAM2 mask, background), the windows themselves, and the join and encode after them.
BEFORE_SHARE, WINDOWS_SHARE, AFTER_SHARE = 0.15, 0.80, 0.05
# Within one window: conditioning up to the sampler, the sampler's steps up to SAMPLER_END,
# then trim and decode.
SAMPLER_START, SAMPLER_END = 0.05, 0.90
# Payload keys every inference update carries (null when they do not apply).
INFERENCE_KEYS = ("message", "node", "chunk", "chunks", "window", "windows", "step", "steps")


@dataclass(frozen=True)
class GraphWindows:
    """Which window each node of one job's graph belongs to, and how far into the inference
    stage a ComfyUI progress event is."""

    windows: int
    window_of: Mapping[str, int]  # node id -> 1-based window; absent for nodes of no window
    before: frozenset[str]  # nodes of no window that a window depends on
    total: int

    @classmethod
    def of(cls, graph: Mapping[str, Any]) -> GraphWindows:
        window_of = window_numbers(graph)
        needed: set[str] = set()
        for node_id, node in graph.items():
            if node["class_type"] in ANIMATE_CLASSES:
                needed |= upstream(graph, node_id)
        return cls(
            windows=max(window_of.values(), default=0),
            window_of=window_of,
            before=frozenset(needed - set(window_of)),
            total=max(1, len(graph)),
        )

    def fraction(self, progress: Progress, class_type: str | None) -> float:
        """0-1 of the inference stage: by window and sampler step where there are windows,
        by nodes done (which counts the running sampler's steps) elsewhere."""
        prompt = min(max(progress.percent / 100.0, 0.0), 1.0)
        if self.windows == 0:
            return prompt
        if prompt >= 1.0:
            return 1.0
        window = self.window_of.get(progress.node or "")
        if window is not None:
            if class_type in ANIMATE_CLASSES:
                within = 0.0
            elif progress.step is not None and progress.steps:
                sampled = min(max(progress.step / progress.steps, 0.0), 1.0)
                within = SAMPLER_START + (SAMPLER_END - SAMPLER_START) * sampled
            elif class_type == "KSampler":
                within = SAMPLER_START
            else:
                within = SAMPLER_END
            return BEFORE_SHARE + WINDOWS_SHARE * (window - 1 + within) / self.windows
        # Outside the windows the prompt's node count is all there is: rescale it to the part.
        done = prompt * self.total
        if progress.node is None or progress.node in self.before:
            return BEFORE_SHARE * min(done / max(1, len(self.before)), 1.0)
        after = max(1, self.total - len(self.before) - len(self.window_of))
        into = (done - (self.total - after)) / after
        return BEFORE_SHARE + WINDOWS_SHARE + AFTER_SHARE * min(max(into, 0.0), 1.0)


def describe(
    window: int | None,
    windows: int | None,
    step: int | None,
    steps: int | None,
    chunk: int | None = None,
    chunks: int | None = None,
) -> str | None:
    """``"chunk 1 of 3, window 2 of 12, step 3 of 6"``; None when there is none of them."""
    parts = []
    if chunk is not None and chunks is not None:
        parts.append(f"chunk {chunk} of {chunks}")
    if window is not None and windows is not None:
        parts.append(f"window {window} of {windows}")
    if step is not None and steps is not None:
        parts.append(f"step {step} of {steps}")
    return ", ".join(parts) or None


class ProgressReporter:
    """Sends progress to /status: every stage change at once, otherwise at most one update per
    ``interval_s``; the latest held-back update goes out when the interval has passed."""

    def __init__(
        self,
        sink: ProgressSink,
        job_id: str,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.job_id = job_id
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_sent = 0.0
        self._last_stage: str | None = None  # of the last update sent
        self._stage: str | None = None  # of the last update offered
        self._floor = 0.0  # percent never goes back within a stage
        self._pending: dict[str, Any] | None = None
        self._timer: threading.Timer | None = None
        self._generation = 0  # bumped by every send: a timer of an older one does nothing
        self._closed = False
        self._graph: Mapping[str, Any] = {}
        self._windows: GraphWindows | None = None
        self._window_logged: int | None = None
        self._chunk: tuple[int, int] | None = None  # (chunk, chunks) of a chunked job
        self._window_offset = 0  # windows of the clip before this graph's first one
        self._clip_windows: int | None = None

    def set_graph(
        self,
        graph: Mapping[str, Any],
        *,
        chunk: tuple[int, int] | None = None,
        window_offset: int = 0,
        clip_windows: int | None = None,
    ) -> None:
        """The graph being run, once built: inference updates then name its windows. For one
        chunk of a chunked job: (chunk, chunks), the clip's windows before this graph's first
        one and the clip's windows, so updates count in the clip, not the chunk."""
        self._graph = graph
        self._windows = GraphWindows.of(graph)
        self._chunk = chunk
        self._window_offset = window_offset
        self._clip_windows = clip_windows

    def stage(self, stage: str, fraction: float = 0.0, **extra: Any) -> None:
        payload = {k: v for k, v in extra.items() if v is not None}
        self._offer(stage, fraction, payload)

    def comfy(self, progress: Progress) -> None:
        if progress.stage == "queued" and (self._chunk is None or self._chunk[0] == 1):
            self.stage("queue", progress.percent / 100.0)
            return
        node = self._graph.get(progress.node or "")
        class_type = node.get("class_type") if isinstance(node, Mapping) else None
        windows = self._windows
        if progress.stage == "queued":  # a later chunk waiting: nothing of it has run yet
            fraction, window, count = 0.0, None, None
        elif windows is None:
            fraction, window, count = progress.percent / 100.0, None, None
        else:
            fraction = windows.fraction(progress, class_type)
            window = windows.window_of.get(progress.node or "")
            count = windows.windows if window is not None else None
        if window is not None and self._chunk is not None:
            window += self._window_offset
            count = self._clip_windows or count
        chunk, chunks = self._chunk if self._chunk is not None else (None, None)
        if chunk is not None and chunks is not None:
            fraction = (chunk - 1 + fraction) / chunks
        if window is not None and window != self._window_logged:
            self._window_logged = window
            log_event(
                "window_started", self.job_id, window=window, windows=count, node=progress.node, chunk=chunk
            )
        payload = {
            "message": describe(window, count, progress.step, progress.steps, chunk, chunks),
            "node": progress.node_title,
            "chunk": chunk,
            "chunks": chunks,
            "window": window,
            "windows": count,
            "step": progress.step,
            "steps": progress.steps,
        }
        self._offer("inference", fraction, payload)

    def close(self) -> None:
        """The job is over: nothing held back is sent any more."""
        with self._lock:
            self._closed = True
            self._pending = None
            self._cancel_timer()

    # -- internals -----------------------------------------------------------------------------

    def _offer(self, stage: str, fraction: float, extra: dict[str, Any]) -> None:
        low, high = STAGE_SPAN[stage]
        percent = round(low + (high - low) * min(max(fraction, 0.0), 1.0), 1)
        with self._lock:
            if self._closed:
                return
            if stage != self._stage:
                self._stage, self._floor = stage, low
            self._floor = percent = max(percent, self._floor)
            payload = {"stage": stage, "percent": percent, **extra}
            now = self._clock()
            wait = self._last_sent + self.interval_s - now
            if stage != self._last_stage or wait <= 0:
                self._send(payload, now)
                return
            self._pending = payload  # the latest wins
            if self._timer is None:
                self._timer = threading.Timer(wait, self._flush, args=(self._generation,))
                self._timer.daemon = True
                self._timer.start()

    def _flush(self, generation: int) -> None:
        with self._lock:
            if generation != self._generation or self._closed or self._pending is None:
                return
            self._send(self._pending, self._clock())

    def _send(self, payload: dict[str, Any], now: float) -> None:
        """Under the lock: the sends stay in order and a held-back update is never older."""
        self._cancel_timer()
        self._pending = None
        self._generation += 1
        self._last_stage, self._last_sent = payload["stage"], now
        try:
            self.sink(payload)
        except Exception as exc:  # progress is best effort: never fail a job over it
            log_event("progress_update_failed", self.job_id, level="warning", error=str(exc))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
