"""The worker's files in ComfyUI's input and output folders, removed when no job needs them.

Every file the worker gives ComfyUI or asks it to write is named under ``WORKER_FOLDER``, by
prompt: inputs ``wan-worker/<attempt>/avatar.png``, outputs ``wan-worker/<attempt>_00001_.mp4``.
A job removes its own prompt's files when it ends. But a prompt the worker gave up on (the job
was cancelled, ran out of time, or lost ComfyUI's connection) may go on inside ComfyUI and write
its outputs afterwards, tens of MB each, where nothing else would ever remove them. So:

* ``give_up(prefix)``: the prompt's files are removed now and whenever they appear for
  ``watch_s`` afterwards (a background thread polls every ``poll_s`` while anything is watched);
* ``sweep(before)``: every file under ``WORKER_FOLDER`` last written before ``before`` is removed.
  The job runner sweeps before a job starts (files older than that job) and after it ends, with
  no other job running: a running job's files are never swept.

Without the folders (``COMFY_INPUT_DIR``/``COMFY_OUTPUT_DIR`` unset) ComfyUI offers no way to
delete files, and nothing is done.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from worker.logs import log_event

WORKER_FOLDER = "wan-worker"
DEFAULT_POLL_S = 2.0


class ComfyLeftovers:
    def __init__(
        self, folders: Sequence[Path | None], *, watch_s: float, poll_s: float = DEFAULT_POLL_S
    ) -> None:
        self.roots = [Path(folder) for folder in folders if folder is not None]
        self.watch_s = watch_s
        self.poll_s = poll_s
        self._watched: dict[str, float] = {}  # prompt prefix -> monotonic time the watch ends
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def give_up(self, prefix: str) -> None:
        """The files of prompt ``prefix`` (``wan-worker/<attempt>``) go now and as they appear."""
        if not self.roots:
            return
        with self._lock:
            self._watched[prefix] = time.monotonic() + self.watch_s
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="comfy-leftovers", daemon=True)
                self._watcher.start()
        self._remove_watched([prefix])

    def watching(self) -> list[str]:
        with self._lock:
            return sorted(self._watched)

    def sweep(self, *, before: float) -> int:
        """Removes the worker's files last written before ``before`` (``time.time()`` scale)."""
        removed = [path for path in self._files() if _mtime(path) < before and _remove(path)]
        # A folder is pruned only when empty and old, or emptied here: a running job's new one stays.
        old = [folder for folder in self._folders() if _mtime(folder) < before]
        _prune([*old, *(path.parent for path in removed)])
        if removed:
            log_event("comfy_leftovers_swept", files=len(removed), first=removed[0].name)
        return len(removed)

    # -- internals -----------------------------------------------------------------------------

    def _watch(self) -> None:
        while True:
            time.sleep(self.poll_s)
            with self._lock:
                now = time.monotonic()
                ended = [prefix for prefix, until in self._watched.items() if until <= now]
                prefixes = list(self._watched)
                for prefix in ended:
                    del self._watched[prefix]
                if not prefixes:
                    self._watcher = None
                    return
            self._remove_watched(prefixes)

    def _remove_watched(self, prefixes: list[str]) -> None:
        patterns = [re.compile(re.escape(prefix) + r"(/|_\d+_)") for prefix in prefixes]
        removed = [
            path
            for path in self._files()
            if any(p.match(_relative(path, self.roots)) for p in patterns) and _remove(path)
        ]
        _prune([root / prefix for root in self.roots for prefix in prefixes])
        if removed:
            log_event(
                "comfy_leftovers_removed", files=[path.name for path in removed[:10]], count=len(removed)
            )

    def _files(self) -> Iterator[Path]:
        for root in self.roots:
            folder = root / WORKER_FOLDER
            with contextlib.suppress(OSError):
                yield from [path for path in folder.rglob("*") if path.is_file() or path.is_symlink()]

    def _folders(self) -> list[Path]:
        folders: list[Path] = []
        for root in self.roots:
            with contextlib.suppress(OSError):
                folders += [path for path in (root / WORKER_FOLDER).rglob("*") if path.is_dir()]
        return folders


def _prune(folders: Iterable[Path]) -> None:
    """Removes those of ``folders`` that are empty, deepest first (never ``WORKER_FOLDER`` itself)."""
    for folder in sorted(set(folders), key=lambda path: len(path.parts), reverse=True):
        if folder.name != WORKER_FOLDER:
            with contextlib.suppress(OSError):  # not empty, or gone
                folder.rmdir()


def _relative(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return ""


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return float("inf")  # gone already, or unreadable: not ours to judge


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log_event("comfy_leftover_not_removed", level="warning", name=path.name, error=str(exc))
        return False
    return True
