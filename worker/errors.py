"""The one error type of the worker, carrying a stable, machine-readable code."""

from __future__ import annotations

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
        """The dict the handler returns; RunPod marks the job FAILED because of ``error``."""
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
