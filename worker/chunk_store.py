"""Finished chunks of a running job, kept in MinIO so a job delivered again resumes.

Layout, under ``SCRATCH_PREFIX`` (default ``wan-worker-scratch``)::

    {SCRATCH_PREFIX}/{job id}/chunk-0001.mp4                   # the chunk's encoded frames
    {SCRATCH_PREFIX}/{job id}/chunk-0001.motion.safetensors    # what chunk 2 continues from

Each object carries the job's fingerprint (``x-amz-meta-fingerprint``): the sha256 of everything
that decides the frames (the workflow and its settings, the inputs' bytes, seed, prompts,
framing, the chunk plan). A chunk counts as finished when its video is there with this job's
fingerprint (and, unless it is the last, its motion frames): the video is uploaded last, so its
presence means the chunk is whole. Objects of another fingerprint (the same job id with other
inputs or settings) are deleted before anything runs: chunks of different inputs never mix.
Everything under the job's folder is deleted once its output is uploaded; what a job that
never comes back leaves is for a bucket lifecycle rule (README: "Long videos").
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from worker.chunk_media import check_chunk
from worker.contract import META_FINGERPRINT, META_FRAMES, sanitize_id
from worker.graph.chunks import Chunk
from worker.logs import log_event
from worker.storage import Storage

MOTION_SUFFIX = ".motion.safetensors"  # WanWorkerSaveChunk's (comfyui_nodes/wan_worker_nodes/chunk_io.py)
MAX_CHUNK_BYTES = 8 * 1024**3


def fingerprint(parts: dict[str, Any]) -> str:
    """The sha256 of ``parts`` (JSON values) in a canonical form."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ChunkStore:
    def __init__(
        self,
        storage: Storage,
        prefix: str,
        job_id: str,
        job_fingerprint: str,
        *,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.storage = storage
        self.folder = f"{prefix}/{sanitize_id(job_id)}/"
        self.fingerprint = job_fingerprint
        self.job_id = job_id
        self.deadline = deadline  # the job's: a kept chunk's download ends there (TIMEOUT)
        self.cancel = cancel  # the job's: a kept chunk's download ends when it is set (CANCELLED)

    def video_key(self, chunk: Chunk) -> str:
        return f"{self.folder}chunk-{chunk.index:04d}.mp4"

    def motion_key(self, chunk: Chunk) -> str:
        return f"{self.folder}chunk-{chunk.index:04d}{MOTION_SUFFIX}"

    def finished(self, chunks: list[Chunk]) -> int:
        """How many chunks, from the first, are already there for this fingerprint; anything of
        another fingerprint is deleted first."""
        keys = self.storage.list_keys(self.folder)
        if not keys:
            return 0
        foreign = [
            key
            for key in keys
            if (info := self.storage.stat(key)) is not None
            and info.metadata.get(META_FINGERPRINT) != self.fingerprint
        ]
        if foreign:
            log_event("chunks_discarded", self.job_id, objects=len(foreign), reason="fingerprint differs")
            self.storage.delete(foreign)
            keys = [key for key in keys if key not in foreign]
        done = 0
        for chunk, following in zip(chunks, [*chunks[1:], None], strict=True):
            needs_motion = following is not None and following.continues
            if self.video_key(chunk) not in keys or (needs_motion and self.motion_key(chunk) not in keys):
                break
            done = chunk.index
        if done:
            log_event("chunks_found", self.job_id, finished=done, chunks=len(chunks))
        return done

    def save(self, chunk: Chunk, video: Path, motion: Path | None) -> None:
        """Keeps a finished chunk: the frames the next chunk continues from first (when it has
        them), then its video (the mark of a whole chunk)."""
        metadata = {META_FINGERPRINT: self.fingerprint, META_FRAMES: str(chunk.frames)}
        if motion is not None:
            self.storage.upload(
                motion, self.motion_key(chunk), content_type="application/octet-stream", metadata=metadata
            )
        self.storage.upload(video, self.video_key(chunk), content_type="video/mp4", metadata=metadata)

    def fetch_video(self, chunk: Chunk, dest: Path, *, width: int, height: int) -> None:
        self.storage.download(
            self.video_key(chunk),
            dest,
            max_bytes=MAX_CHUNK_BYTES,
            field="chunk",
            deadline=self.deadline,
            cancel=self.cancel,
        )
        check_chunk(dest, frames=chunk.frames, width=width, height=height)

    def fetch_motion(self, chunk: Chunk, dest: Path) -> None:
        self.storage.download(
            self.motion_key(chunk),
            dest,
            max_bytes=MAX_CHUNK_BYTES,
            field="chunk",
            deadline=self.deadline,
            cancel=self.cancel,
        )

    def clear(self) -> None:
        """Removes the job's chunks (after its output is uploaded)."""
        self.storage.delete(self.storage.list_keys(self.folder))
