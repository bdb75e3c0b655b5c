"""What the worker promises its callers, written once.

* the output: H.264 yuv420p MP4, exactly 1280x720 at 24/1 fps, one frame per conformed driving frame,
  the driving audio kept;
* the frame-count rule: a driving video whose video stream lasts D seconds has N = floor(D * 24 + 1/2)
  frames once conformed, at least 1;
* where the output goes: ``{prefix}/{user}/{avatar}/{job}.mp4``, each id sanitised to one key segment,
  an absent id replaced by a fixed placeholder so the layout never shifts;
* the metadata stored with each output, and the shape of a successful result.

The worker (job, media, workflow), the smoke test and the tests import it; the smoke test still
measures the output file on its own.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict


@dataclass(frozen=True)
class OutputPromise:
    width: int = 1280
    height: int = 720
    fps: int = 24
    codec: str = "h264"
    pix_fmt: str = "yuv420p"
    container: str = "mp4"
    content_type: str = "video/mp4"


OUTPUT = OutputPromise()


def frames_for(duration_s: float, fps: int = OUTPUT.fps) -> int:
    """Frames of a video stream lasting ``duration_s`` once conformed to ``fps``: floor(D * fps + 1/2),
    at least 1 (a 5 s clip gives 120 frames at 24 fps)."""
    return max(1, math.floor(duration_s * fps + 0.5))


# -- ids and the output key -----------------------------------------------------------------------

MAX_ID_CHARS = 128
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# A sanitised id never starts with '_' (leading '.' and '_' are stripped), so these can never be
# a real user's or avatar's segment.
NO_USER, NO_AVATAR = "_no-user", "_no-avatar"


class IdError(ValueError):
    """An id that cannot become a key segment; the message says why."""


def sanitize_id(value: str) -> str:
    """An id as one key segment: each run of characters other than letters, digits, '.', '_' and
    '-' becomes one '_', and leading and trailing '.' and '_' are removed (``a::b`` -> ``a_b``).
    Empty when nothing usable is left."""
    return _UNSAFE_ID_CHARS.sub("_", value).strip("._")


def key_segment(value: str, *, name: str) -> str:
    """``sanitize_id`` for an id that must be usable: IdError when nothing is left or the result is
    longer than MAX_ID_CHARS (two long ids cut to one length could name the same object)."""
    cleaned = sanitize_id(value)
    if not cleaned:
        raise IdError(f"{name} {value!r:.80} has no characters usable in an object key")
    if len(cleaned) > MAX_ID_CHARS:
        raise IdError(
            f"{name} is {len(cleaned)} characters once sanitised; at most {MAX_ID_CHARS} are allowed"
        )
    return cleaned


def normalize_prefix(raw: str) -> str:
    """A key prefix without leading or trailing '/'; ValueError when empty or with '..'."""
    value = raw.strip().strip("/")
    if not value or ".." in value.split("/") or "//" in value:
        raise ValueError("expected a key prefix such as 'outputs' (no '..', no empty segments)")
    return value


def output_key(prefix: str, job_id: str, user_id: str | None, avatar_id: str | None) -> str:
    """``{prefix}/{user_id}/{avatar_id}/{job_id}.mp4``; ``user_id`` and ``avatar_id`` are already
    sanitised segments (or None: NO_USER / NO_AVATAR take their place)."""
    job = key_segment(job_id, name="job id")
    return f"{prefix}/{user_id or NO_USER}/{avatar_id or NO_AVATAR}/{job}.{OUTPUT.container}"


# -- what is stored and returned ------------------------------------------------------------------

# S3 metadata stored with each output (``x-amz-meta-…``), so a job delivered again can check it;
# the fingerprint of the request that made it (kept chunks carry it too): reused only for the same.
META_FRAMES, META_AUDIO, META_WORKFLOW = "frames", "has-audio", "workflow-sha256"
META_FINGERPRINT = "fingerprint"


class VideoFacts(TypedDict):
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    has_audio: bool
    size_bytes: int


class JobResult(TypedDict):
    """A successful job's output (the README's "Output" section)."""

    minio_key: str
    video: VideoFacts
    timings_s: dict[str, float]
    cost: dict[str, Any]  # worker/cost.py's Pricing.job_cost
    estimate_s: dict[str, Any]
    workflow: dict[str, str]
    seed: int
    reused: bool
    chunks: dict[str, int]
    attention_backend: Any
    onnx_providers: Any
    presigned_url: NotRequired[str]
