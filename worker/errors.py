"""The one error type of the worker, carrying a stable, machine-readable code."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INPUT_NOT_FOUND = "INPUT_NOT_FOUND"
    INPUT_TOO_LARGE = "INPUT_TOO_LARGE"
    INVALID_MEDIA = "INVALID_MEDIA"
    URL_NOT_ALLOWED = "URL_NOT_ALLOWED"
    COMFY_UNAVAILABLE = "COMFY_UNAVAILABLE"
    WORKFLOW_INVALID = "WORKFLOW_INVALID"
    GENERATION_FAILED = "GENERATION_FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    OUTPUT_INVALID = "OUTPUT_INVALID"
    STORAGE_ERROR = "STORAGE_ERROR"
    CONFIG_INVALID = "CONFIG_INVALID"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class WorkerError(Exception):
    """A failure a user can act on: a stable code, a message, optional details.

    ``refresh_worker`` asks RunPod to recycle this worker after the job (GPU out of
    memory, a ComfyUI that stopped answering): the next job gets a fresh process.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        refresh_worker: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details = details or {}
        self.refresh_worker = refresh_worker

    def to_result(self) -> dict[str, Any]:
        """The job's failure as the worker reports it: ``error`` (the message), ``error_code``,
        ``details``; ``for_runpod`` turns it into what the handler returns."""
        result: dict[str, Any] = {
            "error": self.message,
            "error_code": self.code.value,
            "details": self.details,
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
