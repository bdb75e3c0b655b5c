"""``ImageBatchReflectPad``: the driving frames padded to the frames the windows condition on,
by reflection, as the official Wan2.2 Animate pipeline pads its conditioning videos.

The windows of a clip cover more frames than the clip has (the last window runs past the
end). The official pipeline (Wan-Video/Wan2.2 ``wan/animate.py``, ``inputs_padding``) pads the
pose, face, background and mask videos to the covered length by walking back and forth over
the real frames: 0, 1, ..., n-1, n-2, ..., 0, 1, ... Padding the driving frames before pose
detection, SAM2 and the background drawing gives all four the same reflected frames. Without
it the core node pads the pose video with its last frame, leaves the face video short, the
background grey and the mask "generate everything". The output is cut back to N frames.
"""

from __future__ import annotations

from typing import Any

NODE_ID = "ImageBatchReflectPad"


def reflect_indices(frames: int, length: int) -> list[int]:
    """Source frame of each of ``length`` output frames: 0..n-1, then back and forth, no frame
    repeated at a turn; the first ``length`` frames when there are more."""
    if frames < 1 or length < 1:
        raise ValueError(f"need at least one frame and a length of at least 1, not {frames}, {length}")
    if frames == 1:
        return [0] * length
    period = 2 * (frames - 1)
    return [i % period if i % period < frames else period - i % period for i in range(length)]


class ImageBatchReflectPad:
    """V1 node: IMAGE (frames, H, W, C) -> exactly ``length`` frames."""

    CATEGORY = "image/batch"
    FUNCTION = "pad"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    DESCRIPTION = (
        "Pads (or cuts) an image batch to exactly `length` frames by reflection, as Wan Animate does."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE",),
                "length": ("INT", {"default": 77, "min": 1, "max": 1_000_000, "step": 1}),
            }
        }

    def pad(self, images: Any, length: int) -> tuple[Any]:
        import torch

        index = torch.tensor(reflect_indices(images.shape[0], length), device=images.device)
        return (images.index_select(0, index),)
