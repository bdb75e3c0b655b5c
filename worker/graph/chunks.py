"""A job as consecutive chunks: one ComfyUI prompt each, so a prompt's host RAM is bounded.

One prompt holding a whole clip keeps every intermediate (driving frames, pose, background,
masks, each window's decode, the joined batch) in host RAM at full length: ~115 MB per driving
frame (``bench/host_ram.py``). A chunk is ``K`` consecutive windows of the clip's window plan
(``worker.graph.windows``), run as its own prompt over its own slice of the driving video:

* the slice starts at the chunk's first window's first driving frame and ends where its last
  window ends; the last chunk's slice runs to the end of the video and is reflect-padded, as the
  whole clip's conditioning would be (``reflect_indices`` over the *clip*, so the padded frames
  are the same ones a single prompt would see);
* every chunk but the first starts with a window that continues from the previous chunk's last
  ``motion_frames`` decoded frames, exactly as a window continues inside a prompt: same seed, same
  conditioning frames, the same continuation frames (saved as float32, not re-quantised), and the
  same re-generated frames dropped; its ``video_frame_offset`` is ``motion_frames``, which seeks
  the slice to 0 (the core node subtracts the continuation frames);
* a chunk adds the new frames of its windows, so the chunks' frames joined in order are exactly
  the clip's N frames.

What a chunk join shares with a window join: everything the model sees, except that SAM2's video
tracking is re-prompted at each chunk's first frame (its tracker memory does not cross prompts;
the official pipeline itself segments in independent 400-frame runs). Workflows without windows
(the model-free stand-ins) are chunked by a fixed frame count with no continuation.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.graph.windows import Window, covered_frames, plan_windows, reflect_indices


@dataclass(frozen=True)
class Chunk:
    index: int  # 1-based
    count: int  # chunks in the job
    first_window: int  # the clip's 1-based number of this chunk's first window (0: no windows)
    windows: tuple[Window, ...]  # this chunk's windows, starts relative to ``start``
    start: int  # the driving frame its slice starts at
    real_frames: int  # driving frames of the clip in its slice: start .. start + real_frames - 1
    reflected: int  # reflect-padded frames after them (the last chunk only)
    frames: int  # output frames it adds
    output_start: int  # its first output frame in the clip

    @property
    def slice_frames(self) -> int:
        """Driving frames its prompt conditions on (the real ones and the reflected ones)."""
        return self.real_frames + self.reflected

    @property
    def continues(self) -> bool:
        """Its first window continues from the previous chunk's last decoded frames."""
        return self.first_window > 1

    @property
    def last(self) -> bool:
        return self.index == self.count

    def as_dict(self) -> dict[str, int]:
        return {
            "chunk": self.index,
            "chunks": self.count,
            "first_window": self.first_window,
            "windows": len(self.windows),
            "start": self.start,
            "slice_frames": self.slice_frames,
            "frames": self.frames,
        }


def slice_indices(chunk: Chunk, total_frames: int) -> list[int]:
    """The clip's driving frame behind each frame of the chunk's slice (reflection included)."""
    end = chunk.start + chunk.slice_frames
    return reflect_indices(total_frames, end)[chunk.start : end]


def plan_window_chunks(
    frames: int,
    *,
    chunk_windows: int,
    window_frames: int = 77,
    motion_frames: int = 5,
    last_window: str = "full",
) -> list[Chunk]:
    """The chunks of ``chunk_windows`` windows each that make a clip of ``frames`` frames."""
    if chunk_windows < 1:
        raise ValueError("chunk_windows must be at least 1")
    plan = plan_windows(
        frames, window_frames=window_frames, motion_frames=motion_frames, last_window=last_window
    )
    groups = [plan[i : i + chunk_windows] for i in range(0, len(plan), chunk_windows)]
    chunks: list[Chunk] = []
    produced = 0
    for number, group in enumerate(groups, start=1):
        start = group[0].start
        end = covered_frames(group)  # starts are the clip's here
        real = min(end, frames) - start
        local = tuple(
            Window(
                index=i,
                start=w.start - start,
                length=w.length,
                trim=w.trim,
                new_frames=w.new_frames,
            )
            for i, w in enumerate(group, start=1)
        )
        added = sum(w.new_frames for w in group)
        chunks.append(
            Chunk(
                index=number,
                count=len(groups),
                first_window=group[0].index,
                windows=local,
                start=start,
                real_frames=real,
                reflected=end - start - real,
                frames=added,
                output_start=produced,
            )
        )
        produced += added
    return chunks


def plan_frame_chunks(frames: int, *, chunk_frames: int) -> list[Chunk]:
    """Chunks of ``chunk_frames`` driving frames each, for workflows without windows."""
    if chunk_frames < 1:
        raise ValueError("chunk_frames must be at least 1")
    starts = list(range(0, frames, chunk_frames))
    return [
        Chunk(
            index=number,
            count=len(starts),
            first_window=0,
            windows=(),
            start=start,
            real_frames=min(chunk_frames, frames - start),
            reflected=0,
            frames=min(chunk_frames, frames - start),
            output_start=start,
        )
        for number, start in enumerate(starts, start=1)
    ]
