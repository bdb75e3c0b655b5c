"""``WanAnimateToVideoOfficialMask``: ComfyUI's core ``WanAnimateToVideo`` with the character
mask laid out as the official Wan2.2 Animate pipeline lays it out (see mask_layout.py).

It is the core node (same inputs, outputs and everything it computes) with one change: in
replacement mode (a ``character_mask`` connected) the ``concat_mask`` it puts on both
conditionings is rebuilt with ``window_concat_mask``. Without a character mask (move mode)
the core node's layout already equals the official one and nothing is changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import comfy.utils
import node_helpers
import torch
from comfy_api.latest import io
from comfy_extras.nodes_wan import WanAnimateToVideo

from .mask_layout import window_concat_mask

NODE_ID = "WanAnimateToVideoOfficialMask"


class WanAnimateToVideoOfficialMask(WanAnimateToVideo):
    @classmethod
    def define_schema(cls) -> io.Schema:
        core = super().define_schema()
        return dataclasses.replace(
            core,
            node_id=NODE_ID,
            display_name="WanAnimateToVideo (official mask layout)",
            description=(
                "Core WanAnimateToVideo with the replacement mask packed as the official Wan2.2 "
                "Animate pipeline packs it (frame 0 four times, then frames 1..N-1; motion frames "
                "kept in all four rows)."
            ),
        )

    @classmethod
    def execute(  # type: ignore[override]
        cls,
        positive: Any,
        negative: Any,
        vae: Any,
        width: int,
        height: int,
        length: int,
        batch_size: int,
        continue_motion_max_frames: int,
        video_frame_offset: int,
        reference_image: torch.Tensor | None = None,
        clip_vision_output: Any = None,
        face_video: torch.Tensor | None = None,
        pose_video: torch.Tensor | None = None,
        continue_motion: torch.Tensor | None = None,
        background_video: torch.Tensor | None = None,
        character_mask: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        out = super().execute(
            positive,
            negative,
            vae,
            width,
            height,
            length,
            batch_size,
            continue_motion_max_frames,
            video_frame_offset,
            reference_image=reference_image,
            clip_vision_output=clip_vision_output,
            face_video=face_video,
            pose_video=pose_video,
            continue_motion=continue_motion,
            background_video=background_video,
            character_mask=character_mask,
        )
        if character_mask is None:
            return out
        new_positive, new_negative, *rest = out.args
        core_mask = new_positive[0][1]["concat_mask"]
        motion = 0 if continue_motion is None else min(continue_motion.shape[0], continue_motion_max_frames)
        start = max(0, video_frame_offset - motion) if continue_motion is not None else video_frame_offset
        frames = window_frames(character_mask, start=start, length=length)
        if frames is not None:
            frames = comfy.utils.common_upscale(
                frames.unsqueeze(1), core_mask.shape[-1], core_mask.shape[-2], "nearest-exact", "center"
            ).squeeze(1)
        mask = window_concat_mask(
            frames,
            length=length,
            motion_frames=motion,
            latent_height=core_mask.shape[-2],
            latent_width=core_mask.shape[-1],
            reference_latents=core_mask.shape[2] - ((length - 1) // 4 + 1),
            dtype=core_mask.dtype,
            device=core_mask.device,
        )
        if mask.shape != core_mask.shape:
            raise RuntimeError(f"{NODE_ID}: mask shape {tuple(mask.shape)} != core {tuple(core_mask.shape)}")
        new_positive = node_helpers.conditioning_set_values(new_positive, {"concat_mask": mask})
        new_negative = node_helpers.conditioning_set_values(new_negative, {"concat_mask": mask})
        return io.NodeOutput(new_positive, new_negative, *rest)


def window_frames(character_mask: torch.Tensor, *, start: int, length: int) -> torch.Tensor | None:
    """The mask frames of a window starting at driving frame ``start`` (a one-frame mask is
    every frame's), (T <= length, H, W); None when the mask ends before the window (the core
    node then generates the whole window)."""
    if character_mask.ndim == 2:
        character_mask = character_mask.unsqueeze(0)
    if character_mask.ndim != 3:
        raise ValueError(
            f"{NODE_ID}: character_mask must be (frames, height, width), not {character_mask.shape}"
        )
    if character_mask.shape[0] == 1:
        return character_mask.repeat(length, 1, 1)
    if character_mask.shape[0] <= start:
        return None
    return character_mask[start : start + length]
