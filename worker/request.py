"""The job's ``input`` contract: parsed and checked before anything is downloaded.

Field names are the platform's and must not change. Unknown fields are rejected by name
(a typo such as ``driving_video_key`` must not be silently ignored).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from worker.contract import IdError, key_segment
from worker.errors import ErrorCode, WorkerError
from worker.media import FRAMINGS
from worker.storage import validate_key

FIELDS = (
    "input_image_minio_path",
    "input_image_url",
    "driving_video_path",
    "user_id",
    "avatar_id",
    "seed",
    "prompt",
    "negative_prompt",
    "return_presigned_url",
    "framing",
)
# How a driving video of another shape becomes 1280x720: "fit" (the whole picture, black bars)
# or "crop" (scaled to cover, centre-cropped); see worker.media.
DEFAULT_FRAMING = "fit"
MAX_PROMPT_CHARS = 4000
MAX_SEED = 2**64 - 1
# An error names at most this many unknown fields, each cut to this length (a request with 10,000 of
# them must not come back as a 200 KB error); ``unknown_fields_left_out`` counts the rest.
MAX_ECHOED_NAMES = 20
MAX_ECHOED_NAME_CHARS = 64


@dataclass(frozen=True)
class JobRequest:
    image_key: str | None
    image_url: str | None
    driving_video_key: str
    user_id: str | None
    avatar_id: str | None
    seed: int | None
    prompt: str | None
    negative_prompt: str | None
    return_presigned_url: bool
    framing: str = DEFAULT_FRAMING


def parse_request(raw: Any, *, default_driving_video: str | None) -> JobRequest:
    if not isinstance(raw, dict):
        raise _invalid('the job must be {"input": {...}} with an object as input')
    unknown = sorted(str(name)[:MAX_ECHOED_NAME_CHARS] for name in set(raw) - set(FIELDS))
    if unknown:
        shown, left_out = unknown[:MAX_ECHOED_NAMES], len(unknown) - MAX_ECHOED_NAMES
        raise _invalid(
            "unknown input field(s): "
            + ", ".join(_with_suggestion(name) for name in shown)
            + (f" and {left_out} more" if left_out > 0 else ""),
            unknown_fields=shown,
            unknown_fields_left_out=max(0, left_out),
            allowed_fields=list(FIELDS),
        )

    image_key = _optional_source(raw, "input_image_minio_path", when_absent="then give input_image_url")
    image_url = _optional_source(raw, "input_image_url", when_absent="then give input_image_minio_path")
    if (image_key is None) == (image_url is None):
        raise _invalid("give exactly one of input_image_minio_path (a MinIO key) or input_image_url")
    if image_key is not None:
        image_key = validate_key(image_key, field="input_image_minio_path")
    if image_url is not None:
        scheme = urlsplit(image_url).scheme.lower()
        if scheme not in ("http", "https"):
            raise WorkerError(
                ErrorCode.URL_NOT_ALLOWED,
                f"input_image_url must be an http(s) URL, not {scheme or 'a bare path'!r}",
                details={"field": "input_image_url"},
            )

    video_key = (
        _optional_source(raw, "driving_video_path", when_absent="DEFAULT_DRIVING_VIDEO_PATH is then used")
        or default_driving_video
    )
    if not video_key:
        raise _invalid("driving_video_path is required (no DEFAULT_DRIVING_VIDEO_PATH is configured)")
    video_key = validate_key(video_key, field="driving_video_path")

    return JobRequest(
        image_key=image_key,
        image_url=image_url,
        driving_video_key=video_key,
        user_id=_optional_id(raw, "user_id"),
        avatar_id=_optional_id(raw, "avatar_id"),
        seed=_optional_seed(raw),
        prompt=_optional_prompt(raw, "prompt"),
        negative_prompt=_optional_prompt(raw, "negative_prompt"),
        return_presigned_url=_optional_bool(raw, "return_presigned_url"),
        framing=_optional_framing(raw),
    )


def _optional_str(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string, got {type(value).__name__}", field=name)
    value = value.strip()
    return value or None


def _optional_source(raw: dict[str, Any], name: str, *, when_absent: str) -> str | None:
    """A MinIO key or URL field: absent (or null) is None; given but empty is an error, never
    taken for absent (an empty driving_video_path must not quietly become the default video)."""
    value = _optional_str(raw, name)
    if value is None and name in raw and raw[name] is not None:
        raise _invalid(f"{name} is empty: give a value, or leave the field out ({when_absent})", field=name)
    return value


def _optional_id(raw: dict[str, Any], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid(f"{name} must be a string or an integer", field=name)
    text = str(value).strip()
    if not text:
        return None
    try:
        return key_segment(text, name=name)
    except IdError as exc:
        raise _invalid(str(exc), field=name) from exc


def _optional_seed(raw: dict[str, Any]) -> int | None:
    value = raw.get("seed")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise _invalid(f"seed must be an integer between 0 and {MAX_SEED}", field="seed")
    return value


def _optional_prompt(raw: dict[str, Any], name: str) -> str | None:
    value = _optional_str(raw, name)
    if value is not None and len(value) > MAX_PROMPT_CHARS:
        raise _invalid(f"{name} is longer than {MAX_PROMPT_CHARS} characters", field=name)
    return value


def _optional_framing(raw: dict[str, Any]) -> str:
    value = raw.get("framing")
    if value is None:
        return DEFAULT_FRAMING
    if not isinstance(value, str) or value.strip().lower() not in FRAMINGS:
        raise _invalid(
            f"framing must be one of {', '.join(map(repr, FRAMINGS))}, got {value!r}",
            field="framing",
            allowed=list(FRAMINGS),
        )
    return value.strip().lower()


def _optional_bool(raw: dict[str, Any], name: str) -> bool:
    value = raw.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be true or false", field=name)
    return value


def _with_suggestion(name: str) -> str:
    close = difflib.get_close_matches(name, FIELDS, n=1)
    return f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name)


def _invalid(message: str, **details: Any) -> WorkerError:
    return WorkerError(ErrorCode.INVALID_INPUT, message, details=details)
