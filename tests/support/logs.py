"""The worker's JSON log lines of one test.

``log_lines`` (function) -> ``io.StringIO``: every line ``worker.logs.log_event`` writes during the
test (redirected, not replaced); ``events(stream, name)`` the records of one event, in order.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

import worker.logs


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(worker.logs, "_stream", stream)
    return stream


def events(stream: io.StringIO, name: str) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [record for record in records if record["event"] == name]
