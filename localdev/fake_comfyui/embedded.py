"""The fake server in a background thread of the test process, with what a test reads of its state."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from localdev.fake_comfyui.identity import DEFAULT_MAX_UPLOAD
from localdev.fake_comfyui.server import FakeComfyServer, start_site


class FakeComfyUI:
    """The fake server in a background thread, for tests::

    server = FakeComfyUI(tmp / "in", tmp / "out").start()
    server.url, server.input_dir, server.output_dir, server.set_fault("oom"), server.stop()
    """

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_upload_size: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.server = FakeComfyServer(input_dir, output_dir, max_upload_size=max_upload_size)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def input_dir(self) -> Path:
        return self.server.input_dir

    @property
    def output_dir(self) -> Path:
        return self.server.output_dir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_fault(self, kind: str, *, times: int | None = 1, **params: Any) -> None:
        """See ``faults.py`` for the kinds and their parameters."""
        self.server.faults.set(kind, times=times, **params)

    def clear_faults(self) -> None:
        self.server.faults.clear()

    def history(self) -> dict[str, Any]:
        return self._call(lambda: copy.deepcopy(self.server.queue.history))

    def ws_connects(self, client_id: str | None = None) -> int:
        """How many websockets were opened (with that client id)."""
        return self._call(lambda: sum(1 for c in self.server.clients.connects if client_id in (None, c)))

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """(running, pending) prompt ids."""

        def read() -> tuple[list[str], list[str]]:
            queue = self.server.queue
            running = [queue.running.item.prompt_id] if queue.running else []
            return running, [item.prompt_id for item in queue.pending]

        return self._call(read)

    def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def start(self, timeout_s: float = 10.0) -> FakeComfyUI:
        self._thread = threading.Thread(target=self._serve, name="fake-comfyui", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the fake ComfyUI did not start")
        if self._error is not None:
            raise RuntimeError(f"the fake ComfyUI failed to start: {self._error!r}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner, self.port = loop.run_until_complete(start_site(self.server, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or not loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
