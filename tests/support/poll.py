"""``until(condition, limit_s)``: polls ``condition`` every 20 ms; whether it came true within the
limit (tests assert on the answer, so a state that never comes fails instead of hanging)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def until(condition: Callable[[], Any], limit_s: float = 30.0) -> bool:
    give_up = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True
