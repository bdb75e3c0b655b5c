"""The one error type of the worker, carrying a stable, machine-readable code."""

from __future__ import annotations

import errno
import json
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INPUT_NOT_FOUND = "INPUT_NOT_FOUND"
    INPUT_TOO_LARGE = "INPUT_TOO_LARGE"
    INVALID_MEDIA = "INVALID_MEDIA"
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    SOURCE_UNAVAILABLE = "SOURCE_UNAVAILABLE"
    COMFY_UNAVAILABLE = "COMFY_UNAVAILABLE"
    WORKFLOW_INVALID = "WORKFLOW_INVALID"
    GENERATION_FAILED = "GENERATION_FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORAGE_MISCONFIGURED = "STORAGE_MISCONFIGURED"
    STORAGE_ERROR = "STORAGE_ERROR"
    WORKER_DISK_FULL = "WORKER_DISK_FULL"
    CONFIG_INVALID = "CONFIG_INVALID"
    INTERNAL_ERROR = "INTERNAL_ERROR"


# Whether the same request, sent again unchanged, may succeed (``details.retryable`` of every failed
# result): by default per code; an error may say otherwise (a download that ran out of the job's time
# is a TIMEOUT that a faster source would not hit).
RETRYABLE_CODES = frozenset(
    {
        ErrorCode.SOURCE_UNAVAILABLE,
        ErrorCode.COMFY_UNAVAILABLE,
        ErrorCode.GENERATION_FAILED,
        ErrorCode.CANCELLED,
        ErrorCode.STORAGE_UNAVAILABLE,
        ErrorCode.WORKER_DISK_FULL,
    }
)

# What an error may echo back: a request with 10,000 unknown fields must not come back as a 200 KB result.
MAX_MESSAGE_CHARS = 2000
MAX_DETAIL_TEXT_CHARS = 1000
MAX_DETAIL_ITEMS = 50
_MAX_DETAIL_DEPTH = 6

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# The same, as ffmpeg and Python tracebacks spell them (strerror of ENOSPC and EDQUOT).
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


class WorkerError(Exception):
    """A failure a user can act on: a stable code, a message, optional details.

    ``refresh_worker`` asks RunPod to recycle this worker after the job (GPU out of
    memory, a ComfyUI that stopped answering, a full disk): the next job gets a fresh process.
    ``retryable`` says whether sending the same request again may succeed.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        refresh_worker: bool = False,
        retryable: bool | None = None,
    ) -> None:
        message = _cut_text(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = _bounded(details or {}, _MAX_DETAIL_DEPTH)
        self.refresh_worker = refresh_worker
        self.retryable = self.code in RETRYABLE_CODES if retryable is None else retryable

    def to_result(self) -> dict[str, Any]:
        """The job's failure as the worker reports it: ``error`` (the message), ``error_code``,
        ``details``; ``for_runpod`` turns it into what the handler returns."""
        result: dict[str, Any] = {
            "error": self.message,
            "error_code": self.code.value,
            "details": {**self.details, "retryable": self.retryable},
        }
        if self.refresh_worker:
            result["refresh_worker"] = True
        return result

    def __repr__(self) -> str:
        return f"WorkerError({self.code.value}, {self.message!r})"


def for_runpod(result: dict[str, Any]) -> dict[str, Any]:
    """What the handler returns to the RunPod SDK. A success is returned as it is. A failure
    becomes ``{"error": "<JSON text>"}`` (plus ``refresh_worker``): the SDK takes ``error`` and
    ``refresh_worker`` out of the dict, and a FAILED job's ``/status`` carries only ``error``,
    so the code, message and details travel inside it, as one JSON object in a string (the form
    the SDK itself uses for a raised exception)::

        {"error_code": "INPUT_NOT_FOUND", "message": "...", "details": {...}}
    """
    if "error" not in result:
        return result
    failure = {
        "error_code": result.get("error_code", ErrorCode.INTERNAL_ERROR.value),
        "message": result["error"],
    }
    failure.update((k, v) for k, v in result.items() if k not in ("error", "error_code", "refresh_worker"))
    returned: dict[str, Any] = {"error": json.dumps(failure, ensure_ascii=False, default=str)}
    if result.get("refresh_worker"):
        returned["refresh_worker"] = True
    return returned


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is this machine's disk being full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def mentions_disk_full(text: str) -> bool:
    """Whether a tool's error output (ffmpeg, a ComfyUI traceback) says the disk is full."""
    return any(phrase in text for phrase in DISK_FULL_TEXTS)


def disk_full_error(activity: str) -> WorkerError:
    """WORKER_DISK_FULL: the worker's own scratch disk filled up, whatever the input was. The worker is
    replaced (a new one starts with an empty disk), so the same request may succeed when sent again."""
    return WorkerError(
        ErrorCode.WORKER_DISK_FULL,
        f"the worker's own disk is full ({activity}): a problem of this worker, not of the input; "
        "it is being replaced, submit the job again",
        details={"activity": activity},
        refresh_worker=True,
    )


def _cut_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[: limit - 30]}... ({len(text) - limit + 30} chars cut)"


def _bounded(value: Any, depth: int) -> Any:
    """``value`` with long texts cut and long lists shortened; a shortened list ``name`` gets a
    ``name_left_out`` count beside it. Containers nested deeper than ``depth`` become their repr, cut."""
    if isinstance(value, str):
        return _cut_text(value, MAX_DETAIL_TEXT_CHARS)
    if not isinstance(value, dict | list | tuple):
        return value
    if depth <= 0:
        return _cut_text(repr(value), 200)
    if isinstance(value, dict):
        bounded: dict[Any, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_DETAIL_ITEMS:
                bounded["keys_left_out"] = len(value) - MAX_DETAIL_ITEMS
                break
            bounded[key] = _bounded(item, depth - 1)
            if isinstance(item, list | tuple) and len(item) > MAX_DETAIL_ITEMS:
                bounded[f"{key}_left_out"] = len(item) - MAX_DETAIL_ITEMS
        return bounded
    items = [_bounded(item, depth - 1) for item in value[:MAX_DETAIL_ITEMS]]
    return items if isinstance(value, list) else tuple(items)
