"""The websockets of connected clients, by client id, and what is sent to them."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import WSCloseCode, web


class Clients:
    """One socket per client id (a reconnect with the same id replaces the old one). Lives on the
    server's event loop: not thread safe."""

    def __init__(self) -> None:
        self.sockets: dict[str, tuple[web.WebSocketResponse, web.Request]] = {}
        # Every websocket opened, by client id, in order: what a test reads to see a reconnect.
        self.connects: list[str] = []

    def connected(self, sid: str, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.sockets.pop(sid, None)
        self.sockets[sid] = (ws, request)
        self.connects.append(sid)

    def closed(self, sid: str) -> None:
        # As on the real server: the closing socket's id is dropped even if a newer socket took it
        # over. Clients close the old socket before reconnecting.
        self.sockets.pop(sid, None)

    def _targets(self, sid: str | None) -> list[web.WebSocketResponse]:
        if sid is None:
            return [ws for ws, _ in self.sockets.values()]
        return [self.sockets[sid][0]] if sid in self.sockets else []

    async def send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        """To ``sid`` only, or to everyone when None; a client that is gone misses it."""
        text = json.dumps({"type": event, "data": data})
        for ws in self._targets(sid):
            with contextlib.suppress(Exception):
                await ws.send_str(text)

    async def send_bytes(self, payload: bytes, sid: str | None) -> None:
        for ws in self._targets(sid):
            with contextlib.suppress(Exception):
                await ws.send_bytes(payload)

    async def drop(self, sid: str | None) -> None:
        """Cut ``sid``'s connection without a close frame, as a network failure does."""
        if sid is None or sid not in self.sockets:
            return
        ws, request = self.sockets.pop(sid)
        transport = request.transport
        if transport is not None:
            transport.abort()
        else:
            await ws.close(code=WSCloseCode.ABNORMAL_CLOSURE)

    async def close_all(self) -> None:
        for ws, _ in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")
