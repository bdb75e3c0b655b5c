"""How long a job will take, so one that cannot finish within ``JOB_TIMEOUT_S`` is refused at once.

A 30-second clip on the pinned workflow needs ~12 windows of ~84 GPU-s each: with the default
deadline it would run for 19 minutes and then fail. The model below prices a job from its frame
count before anything is downloaded (the driving video's duration is read from its header through
a presigned URL) and again, exactly, once the video is conformed; ``JobRunner`` refuses a job whose
estimate exceeds the deadline with ``INPUT_TOO_LARGE``, naming the estimate and the longest video
that fits. Every result carries the estimate beside the measured timings, so the model can be
checked against real runs.

Figures ([M] measured, [A] assumed; see bench/README.md "Measured: one H100"):

* sampler: ``sampler_step_s`` per step of a 77-frame window (H100, cuDNN: 12.03 s [M]); a shorter
  window (``last_window: fit``) is priced with attention as 71 % of a step, quadratic in tokens,
  the rest linear (workflows/README.md);
* per window, outside the sampler: conditioning 6.7 s + decode 4.4 s [M], in proportion to frames;
* per padded driving frame: pose/face detection, SAM2 and the masks, ``preprocess_frame_s``
  (0.15 s [A]: not measured on a GPU yet, ``bench/gpu/run_device_packs.sh`` will);
* per driving frame a prompt loads (its slice: a chunk's, or the clip's): decoding it (2.5 s /
  240 frames [M]);
* the H.264 encode of the output frames (SaveVideo's 16.5 s / 240 frames at CRF 23 on the H100
  host [M]; CRF 17 is ~15 % slower [A]): now the worker's, overlapping the next chunk's prompt, so
  only the last chunk's encode is on the job's path (``encode_frame_s``);
* per job: text + CLIP-vision encode 3.3 s and the first sampler step's weight upload 2.4 s [M],
  model loads from disk 30 s [A] (measured from /dev/shm only);
* per chunk after the first (``worker.graph.chunks``): 5 s [A] for what a new prompt does again (SAM2
  loaded to the GPU and released, the ONNX sessions re-created, the continuation frames loaded)
  and 2 s [A] of the worker's own (inputs in place, the raw frames moved out); the frames a chunk
  re-generates from the one before are in the windows' cost already, and each chunk's slice is
  preprocessed, so the 5 frames of each join are preprocessed twice;
* the worker's own stages (download, conform, finalize, upload): 1 s + 0.05 s per frame [A], about
  twice what ``make bench`` measured on 2 idle cores, for the colour conversion and a busy host.

Workflows without windows (the model-free stand-in) are priced with the worker's own stages only.
Unknown GPUs use the H100 figures (logged); ``ESTIMATE_SAMPLER_STEP_S`` and
``ESTIMATE_PREPROCESS_FRAME_S`` override the two that matter most.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from worker.graph.chunks import Chunk

FULL_WINDOW_FRAMES = 77
ATTENTION_SHARE = 0.71  # of a sampler step at 75,600 tokens (issue 14's profile of the pinned graph)


@dataclass(frozen=True)
class GpuFigures:
    name: str
    sampler_step_s: float  # one step of a 77-frame 1280x720 window
    window_other_s: float  # conditioning + decode of a 77-frame window
    preprocess_frame_s: float  # pose/face + SAM2 + masks, per padded driving frame
    decode_frame_s: float  # the driving frames a prompt loads, per frame
    encode_frame_s: float  # H.264 encode of the output, per frame (the last chunk's is on the path)
    job_fixed_s: float  # text/CLIP encode, first-step upload, model loads
    chunk_fixed_s: float  # what each chunk's prompt after the first does again
    measured: bool  # False: another GPU's figures stand in


H100 = GpuFigures(
    name="H100",
    sampler_step_s=12.03,
    window_other_s=6.7 + 4.4,
    preprocess_frame_s=0.15,
    decode_frame_s=2.5 / 240,
    encode_frame_s=16.5 * 1.15 / 240,
    job_fixed_s=3.3 + 2.4 + 30.0,
    chunk_fixed_s=5.0,
    measured=True,
)
KNOWN_GPUS = {"H100": H100}
WORKER_FIXED_S = 1.0
WORKER_FRAME_S = 0.05
WORKER_CHUNK_S = 2.0


def figures_for(device_name: str | None) -> GpuFigures:
    """The figures of the GPU ComfyUI reports (``/system_stats`` device name), H100's otherwise."""
    for key, figures in KNOWN_GPUS.items():
        if device_name and key.lower() in device_name.lower():
            return figures
    return GpuFigures(
        **{**asdict(H100), "name": f"{device_name or 'unknown GPU'} (H100 figures)", "measured": False}
    )


@dataclass(frozen=True)
class Estimate:
    total_s: float
    gpu_s: float
    worker_s: float
    windows: int
    frames: int
    gpu: str
    chunks: int = 1

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "total": round(self.total_s, 1),
            "gpu": round(self.gpu_s, 1),
            "worker": round(self.worker_s, 1),
            "windows": self.windows,
            "chunks": self.chunks,
            "frames": self.frames,
            "gpu_figures": self.gpu,
        }


@dataclass(frozen=True)
class TimeModel:
    figures: GpuFigures
    steps: int
    chunks: Callable[[int], list[Chunk]] | None  # the workflow's chunk plan; None: no windows

    def estimate(self, frames: int) -> Estimate:
        worker_s = WORKER_FIXED_S + WORKER_FRAME_S * frames
        if self.chunks is None:
            return Estimate(worker_s, 0.0, worker_s, 0, frames, self.figures.name)
        chunks = self.chunks(frames)
        f = self.figures
        loaded = sum(chunk.slice_frames for chunk in chunks)
        gpu_s = f.job_fixed_s + (f.decode_frame_s + f.preprocess_frame_s) * loaded
        gpu_s += f.chunk_fixed_s * (len(chunks) - 1)
        gpu_s += sum(self.window_s(window.length) for chunk in chunks for window in chunk.windows)
        # Each chunk's encode overlaps the next chunk's prompt: only the last one's is on the path.
        worker_s += WORKER_CHUNK_S * (len(chunks) - 1) + f.encode_frame_s * chunks[-1].frames
        windows = sum(len(chunk.windows) for chunk in chunks)
        return Estimate(gpu_s + worker_s, gpu_s, worker_s, windows, frames, f.name, len(chunks))

    def window_s(self, length: int) -> float:
        """GPU seconds of one window of ``length`` frames (77 = the measured one)."""
        full_tokens = (FULL_WINDOW_FRAMES - 1) // 4 + 2  # latent frames incl. the reference
        ratio = ((length - 1) // 4 + 2) / full_tokens
        step = self.figures.sampler_step_s * ((1 - ATTENTION_SHARE) * ratio + ATTENTION_SHARE * ratio**2)
        return self.steps * step + self.figures.window_other_s * length / FULL_WINDOW_FRAMES

    def longest_fitting(self, budget_s: float, *, upper: int = 24 * 3600 * 24) -> int:
        """The most frames whose estimate stays within ``budget_s`` (0 when none does)."""
        if self.estimate(1).total_s > budget_s:
            return 0
        low, high = 1, 2
        while high < upper and self.estimate(high).total_s <= budget_s:
            low, high = high, high * 2
        high = min(high, upper)
        while high - low > 1:  # estimate(low) fits, estimate(high) does not (or is the cap)
            middle = (low + high) // 2
            if self.estimate(middle).total_s <= budget_s:
                low = middle
            else:
                high = middle
        return high if self.estimate(high).total_s <= budget_s else low
