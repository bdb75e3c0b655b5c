"""The fake's routes: ComfyUI 0.33.0's HTTP + websocket API as ``/work/shared/comfyui/PROTOCOL.md`` and
``captures/`` record it, and ``POST /fake/fault``."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import mimetypes
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from localdev.fake_comfyui.catalogue import object_info
from localdev.fake_comfyui.clients import Clients
from localdev.fake_comfyui.execution import PromptQueue, QueueItem, now_ms
from localdev.fake_comfyui.faults import FaultBook, injected_rejection
from localdev.fake_comfyui.files import strip_annotation
from localdev.fake_comfyui.identity import DEFAULT_MAX_UPLOAD, FAKE_VERSION, SERVER_FEATURES
from localdev.fake_comfyui.validation import PromptValidator, failed_validation_body, top_error


class FakeComfyServer:
    """The routes over the queue, the clients' sockets and the faults; runs on one asyncio loop (see
    ``FakeComfyUI`` for a server in a background thread)."""

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        *,
        temp_dir: Path | None = None,
        max_upload_size: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.input_dir = Path(input_dir).resolve()
        self.output_dir = Path(output_dir).resolve()
        self.temp_dir = Path(temp_dir).resolve() if temp_dir else self.output_dir.parent / "fake-comfy-temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.max_upload_size = max_upload_size
        self.clients = Clients()
        self.faults = FaultBook()
        self.queue = PromptQueue(self.input_dir, self.output_dir, self.clients, self.faults)

    # -- app --

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload_size)
        router = app.router
        router.add_get("/ws", self.handle_ws)
        router.add_post("/prompt", self.handle_post_prompt)
        router.add_get("/prompt", self.handle_get_prompt)
        router.add_get("/queue", self.handle_get_queue)
        router.add_post("/queue", self.handle_post_queue)
        router.add_post("/interrupt", self.handle_interrupt)
        router.add_get("/history", self.handle_get_history_all)
        router.add_get("/history/{prompt_id}", self.handle_get_history)
        router.add_post("/history", self.handle_post_history)
        router.add_get("/view", self.handle_view)
        router.add_post("/upload/image", self.handle_upload)
        router.add_get("/system_stats", self.handle_system_stats)
        router.add_get("/features", self.handle_features)
        router.add_get("/object_info", self.handle_object_info)
        router.add_get("/object_info/{node_class}", self.handle_object_info_one)
        router.add_get("/embeddings", self.handle_empty_list)
        router.add_post("/free", self.handle_free)
        router.add_post("/fake/fault", self.handle_fault)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.queue.start()

    async def _on_shutdown(self, app: web.Application) -> None:
        await self.queue.stop()
        await self.clients.close_all()

    # -- websocket --

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self.clients.connected(sid, ws, request)
        queue = self.queue
        try:
            status = {"status": {"exec_info": {"queue_remaining": queue.remaining()}}, "sid": sid}
            await self.clients.send("status", status, sid)
            if queue.running and queue.running.client_id == sid and queue.current_node is not None:
                await self.clients.send("executing", {"node": queue.current_node}, sid)
            first = True
            async for message in ws:
                if message.type == WSMsgType.TEXT and first:
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(message.data).get("type") == "feature_flags":
                            await self.clients.send("feature_flags", SERVER_FEATURES, sid)
                first = False
        finally:
            self.clients.closed(sid)
        return ws

    # -- HTTP: prompts and queue --

    async def handle_post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response(
                top_error("no_prompt", "No prompt provided", "No prompt provided"), status=400
            )
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and not _is_canonical_uuid(prompt_id):
            details = (
                "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                "omit it to let the server generate one"
            )
            return web.json_response(
                top_error("invalid_prompt_id", "prompt_id must be a valid UUID", details), status=400
            )
        prompt = copy.deepcopy(body["prompt"])
        if not isinstance(prompt, dict):
            return web.json_response(
                top_error("invalid_prompt", "Invalid prompt", "prompt must be an object"), status=400
            )
        prompt = {str(k): v for k, v in prompt.items()}
        status, result, outputs = PromptValidator(prompt, self.input_dir).validate()
        if status != 200:
            return web.json_response(result, status=status)
        node_errors: dict[str, Any] = result
        reject = self.faults.take("reject")
        if reject is not None:
            return web.json_response(
                failed_validation_body(injected_rejection(prompt, reject, outputs)), status=400
            )
        partial = self.faults.take("partial_reject")
        if partial is not None:
            node_errors = {**node_errors, **injected_rejection(prompt, partial, outputs)}
        number: float = self.queue.next_number()
        if "number" in body:
            with contextlib.suppress(TypeError, ValueError):
                number = float(body["number"])
        if body.get("front"):
            number = -number
        prompt_id = prompt_id or str(uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        extra["create_time"] = now_ms()
        await self.queue.add(QueueItem(number, prompt_id, prompt, extra, outputs))
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def handle_get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue.remaining()}})

    async def handle_get_queue(self, request: web.Request) -> web.Response:
        queue = self.queue
        running = [queue.running.item.as_list()] if queue.running else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [item.as_list() for item in queue.pending]}
        )

    async def handle_post_queue(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            await self.queue.clear()
        delete = body.get("delete")
        if isinstance(delete, list):
            await self.queue.delete(delete)
        return web.Response(status=200)

    async def handle_interrupt(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        self.queue.interrupt(body.get("prompt_id"))
        return web.Response(status=200)

    async def handle_get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def handle_get_history_all(self, request: web.Request) -> web.Response:
        items = list(self.queue.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :] if int(max_items) else []
        return web.json_response(dict(items))

    async def handle_post_history(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self.queue.history.clear()
        for prompt_id in body.get("delete") or []:
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def handle_free(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("free_memory"):
            self.queue.free()
        return web.Response(status=200)

    async def handle_fault(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self.faults.clear()
            return web.json_response({"faults": []})
        params = {k: v for k, v in body.items() if k not in ("kind", "times")}
        try:
            self.faults.set(str(body.get("kind")), times=body.get("times", 1), **params)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"faults": self.faults.active()})

    # -- HTTP: files --

    def _dir_for(self, kind: str | None) -> Path | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(
            kind or "input"
        )

    async def handle_view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, annotated = strip_annotation(query["filename"])
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        base = self._dir_for(annotated if query["filename"] != filename else query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        folder = base
        if "subfolder" in query:
            folder = (base / query["subfolder"]).resolve()
            if not folder.is_relative_to(base):
                return web.Response(status=403)
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Disposition": f'filename="{path.name}"', "Content-Type": content_type}
        return web.FileResponse(path, headers=headers)

    async def handle_upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        base = self._dir_for(kind)
        if base is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder") or "")
        folder = (base / os.path.normpath(subfolder)).resolve() if subfolder else base
        filename = image.filename
        target = (folder / filename).resolve()
        if not target.is_relative_to(base):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        content = image.file.read()
        overwrite = str(post.get("overwrite") or "") in ("true", "1")
        if not overwrite:
            stem, suffix = os.path.splitext(filename)
            attempt = 1
            while target.exists():
                if hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(content).digest():
                    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})
                filename = f"{stem} ({attempt}){suffix}"
                target = folder / filename
                attempt += 1
        target.write_bytes(content)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # -- HTTP: info --

    async def handle_system_stats(self, request: web.Request) -> web.Response:
        total, free = 8 * 1024**3, 6 * 1024**3
        return web.json_response(
            {
                "system": {
                    "os": sys.platform,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": FAKE_VERSION,
                    "required_frontend_version": "none (fake ComfyUI, no frontend)",
                    "comfy_package_versions": [],
                    "python_version": sys.version,
                    "pytorch_version": "none (fake ComfyUI stand-in, no models)",
                    "embedded_python": False,
                    "deploy_environment": "fake",
                    "argv": ["localdev/fake_comfyui/__main__.py"],
                },
                "devices": [
                    {
                        "name": "fake (stand-in for tests, no GPU)",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def handle_features(self, request: web.Request) -> web.Response:
        return web.json_response({**SERVER_FEATURES, "max_upload_size": self.max_upload_size})

    async def handle_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(object_info(self.input_dir))

    async def handle_object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = object_info(self.input_dir)
        return web.json_response({name: info[name]} if name in info else {})

    async def handle_empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])


def _is_canonical_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


async def start_site(server: FakeComfyServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``server`` on host:port (0: a free port); returns the runner and the port bound."""
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound
