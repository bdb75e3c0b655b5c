"""A chunk's output and the frames the next chunk continues from (issue 10).

A long video is generated as consecutive ComfyUI prompts ("chunks") of a few windows each, so a
prompt's host RAM is bounded by the chunk, not the clip. Inside a prompt a window continues from
the previous window's last 5 decoded frames (``WanAnimateToVideo.continue_motion``); across
prompts those frames travel through two files:

``WanWorkerSaveChunk`` (output node) writes

* ``<prefix>_<counter>_.rgb``: the chunk's frames as raw 8-bit RGB, quantised as core
  ``SaveVideo`` quantises them (``(x * 255).clamp(0, 255)`` truncated to uint8). The worker encodes
  this file to H.264 in its own process while the GPU runs the next chunk, instead of ComfyUI's
  ``SaveVideo`` encoding on the CPU inside the prompt while the GPU waits;
* with ``motion`` connected (every chunk but the last), ``<prefix>_<counter>_.motion.safetensors``:
  the last ``motion_frames`` frames of ``motion`` (the last window's decode), float32, exactly as
  the next window would have received them inside one prompt: no 8-bit round trip.

It reports ``{"images": [rgb file, motion file], "wan_chunk": [{"width", "height", "frames",
"motion_frames"}]}``.

``WanWorkerLoadMotionFrames`` reads such a motion file from ComfyUI's input folder as an IMAGE.
"""

from __future__ import annotations

import os
from typing import Any

SAVE_NODE_ID = "WanWorkerSaveChunk"
LOAD_NODE_ID = "WanWorkerLoadMotionFrames"
MOTION_TENSOR = "motion"
FRAMES_SUFFIX = ".rgb"
MOTION_SUFFIX = ".motion.safetensors"
SAVE_BLOCK_FRAMES = 16


def quantize(images: Any) -> Any:
    """IMAGE (float, 0..1) -> uint8, as core SaveVideo does before encoding."""
    import torch

    return (images * 255).clamp(0, 255).to(torch.uint8)


class WanWorkerSaveChunk:
    CATEGORY = "wan_worker"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES: tuple[str, ...] = ()
    DESCRIPTION = (
        "Saves a chunk's frames as raw RGB for the worker to encode, and the frames the next chunk "
        "continues from (float32)."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "filename_prefix": ("STRING", {"default": "wan-worker/chunk"}),
                "motion_frames": ("INT", {"default": 5, "min": 1, "max": 81, "step": 4}),
            },
            "optional": {"motion": ("IMAGE",)},
        }

    def save(
        self, images: Any, filename_prefix: str, motion_frames: int, motion: Any = None
    ) -> dict[str, Any]:
        import folder_paths
        from safetensors.torch import save_file

        count, height, width = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height
        )
        stem = f"{name}_{counter:05}_"
        files = [{"filename": stem + FRAMES_SUFFIX, "subfolder": subfolder, "type": "output"}]
        _write_atomic(os.path.join(folder, stem + FRAMES_SUFFIX), lambda path: _write_frames(images, path))
        saved_motion = 0
        if motion is not None:
            tail = motion[-motion_frames:, :, :, :3].float().contiguous().cpu()
            saved_motion = int(tail.shape[0])
            _write_atomic(
                os.path.join(folder, stem + MOTION_SUFFIX),
                lambda path: save_file({MOTION_TENSOR: tail}, path),
            )
            files.append({"filename": stem + MOTION_SUFFIX, "subfolder": subfolder, "type": "output"})
        meta = {"width": width, "height": height, "frames": count, "motion_frames": saved_motion}
        return {"ui": {"images": files, "wan_chunk": [meta]}}


class WanWorkerLoadMotionFrames:
    CATEGORY = "wan_worker"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    DESCRIPTION = "Loads the frames a chunk continues from (written by WanWorkerSaveChunk)."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"file": ("STRING", {"default": "motion.safetensors"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, file: str) -> bool | str:
        try:
            _input_path(file)
        except ValueError as exc:
            return str(exc)
        return True

    @classmethod
    def IS_CHANGED(cls, file: str) -> str:
        path = _input_path(file)
        stat = os.stat(path)
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def load(self, file: str) -> tuple[Any]:
        from safetensors.torch import load_file

        tensors = load_file(_input_path(file))
        if MOTION_TENSOR not in tensors or tensors[MOTION_TENSOR].ndim != 4:
            raise ValueError(f"{file} holds no '{MOTION_TENSOR}' IMAGE tensor (frames, H, W, C)")
        return (tensors[MOTION_TENSOR].float(),)


def _write_frames(images: Any, path: str) -> None:
    """Raw RGB, a block of frames at a time: quantising the whole chunk at once would hold two
    float32 copies of it (``x * 255`` and its clamp) at the prompt's peak, ~22 MB a 1280x720 frame."""
    with open(path, "wb") as handle:
        for first in range(0, int(images.shape[0]), SAVE_BLOCK_FRAMES):
            block = images[first : first + SAVE_BLOCK_FRAMES, :, :, :3]
            handle.write(quantize(block).cpu().numpy().tobytes())


def _input_path(file: str) -> str:
    import folder_paths

    root = os.path.realpath(folder_paths.get_input_directory())
    path = os.path.realpath(os.path.join(root, file))
    if os.path.commonpath([root, path]) != root:
        raise ValueError(f"{file!r} is outside ComfyUI's input folder")
    if not os.path.isfile(path):
        raise ValueError(f"motion frames file {file!r} is not in ComfyUI's input folder")
    return path


def _write_atomic(path: str, write: Any) -> None:
    partial = path + ".part"
    try:
        write(partial)
        os.chmod(partial, 0o644)  # safetensors writes 0600; the worker may run as another user
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
