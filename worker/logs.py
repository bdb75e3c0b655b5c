"""Structured logs: one JSON line per event, always with the job id when there is one.

Never pass secrets or presigned URLs as fields; ``redact_url`` strips query strings
(signatures, tokens) from URLs that must be logged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

_stream: TextIO = sys.stdout
_current_job: ContextVar[str | None] = ContextVar("current_job", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Every event logged inside (in this thread) carries ``job_id`` without passing it."""
    token = _current_job.set(job_id)
    try:
        yield
    finally:
        _current_job.reset(token)


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment (where signatures and tokens live)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def log_event(event: str, job_id: str | None = None, level: str = "info", **fields: Any) -> None:
    record: dict[str, Any] = {
        "ts": round(time.time(), 3),
        "level": level,
        "event": event,
    }
    job_id = job_id if job_id is not None else _current_job.get()
    if job_id is not None:
        record["job_id"] = job_id
    record.update(fields)
    _stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
    _stream.flush()
