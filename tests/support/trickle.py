"""A server that hardly moves: ``send_trickled`` writes an HTTP answer one byte at a time."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler


def send_trickled(handler: BaseHTTPRequestHandler, answer: bytes, interval_s: float) -> None:
    """``answer`` (status line, headers and body, as bytes on the wire) one byte every ``interval_s``,
    then the connection closed; stops early when the client hangs up."""
    handler.close_connection = True
    try:
        for index in range(len(answer)):
            handler.wfile.write(answer[index : index + 1])
            time.sleep(interval_s)
    except OSError:  # the client gave up
        pass
