"""worker.errors: what a failed result says beyond its code (retryable, bounded echoes, a full disk)."""

from __future__ import annotations

import errno
import json

import pytest

from worker.errors import (
    MAX_DETAIL_ITEMS,
    MAX_MESSAGE_CHARS,
    RETRYABLE_CODES,
    ErrorCode,
    WorkerError,
    disk_full_error,
    is_disk_full,
    mentions_disk_full,
)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_result_says_whether_retrying_can_help(code: ErrorCode) -> None:
    result = WorkerError(code, "x").to_result()
    assert result["details"]["retryable"] is (code in RETRYABLE_CODES)


def test_an_error_can_say_otherwise_than_its_code() -> None:
    assert WorkerError(ErrorCode.TIMEOUT, "slow source", retryable=True).to_result()["details"]["retryable"]
    assert not WorkerError(ErrorCode.SOURCE_UNAVAILABLE, "bad certificate", retryable=False).retryable


def test_the_input_problems_are_not_retryable_and_the_outages_are() -> None:
    for code in (
        "INVALID_INPUT",
        "INPUT_NOT_FOUND",
        "INVALID_MEDIA",
        "STORAGE_MISCONFIGURED",
        "CONFIG_INVALID",
    ):
        assert ErrorCode(code) not in RETRYABLE_CODES
    for code in ("SOURCE_UNAVAILABLE", "STORAGE_UNAVAILABLE", "COMFY_UNAVAILABLE", "WORKER_DISK_FULL"):
        assert ErrorCode(code) in RETRYABLE_CODES


def test_what_an_error_echoes_is_bounded() -> None:
    error = WorkerError(
        ErrorCode.INVALID_INPUT,
        "m" * 100_000,
        details={"names": [f"n{index}" for index in range(10_000)], "text": "t" * 100_000, "n": 3},
    )
    result = error.to_result()
    assert len(json.dumps(result)) < 10_000
    assert len(result["error"]) <= MAX_MESSAGE_CHARS and "chars cut" in result["error"]
    assert len(result["details"]["names"]) == MAX_DETAIL_ITEMS
    assert result["details"]["names_left_out"] == 10_000 - MAX_DETAIL_ITEMS
    assert result["details"]["n"] == 3


def test_small_details_are_kept_as_they_are() -> None:
    details = {"field": "seed", "problems": ["a", "b"], "size": (1, 2), "nested": {"k": [1, 2]}}
    assert WorkerError(ErrorCode.INVALID_INPUT, "x", details=details).details == details


def test_a_full_disk_is_found_through_the_exceptions_it_caused() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise full
        except OSError as exc:
            raise WorkerError(
                ErrorCode.COMFY_UNAVAILABLE, "cannot write into ComfyUI's input folder"
            ) from exc
    except WorkerError as wrapped:
        assert is_disk_full(wrapped)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("x"))
    assert mentions_disk_full("Error writing trailer of x.mp4: No space left on device")
    assert not mentions_disk_full("moov atom not found")


def test_a_full_disk_is_the_workers_own_problem_and_replaces_the_worker() -> None:
    result = disk_full_error("downloading driving_video_path").to_result()
    assert result["error_code"] == "WORKER_DISK_FULL"
    assert result["refresh_worker"] is True
    assert result["details"]["retryable"] is True
    assert "worker's own disk" in result["error"] and "not of the input" in result["error"]
