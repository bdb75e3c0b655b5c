"""The official Wan2.2 Animate replacement layout, restated for the tests.

Source: Wan-Video/Wan2.2 ``wan/animate.py`` (``WanAnimate.get_i2v_mask`` and the replace-mode
branches of ``generate``). Written here as an explicit index rule, independently of
``comfyui_nodes/wan_worker_nodes/mask_layout.py`` (which packs with cat/view like the official
code): the official code repeats pixel frame 0's row four times and appends frames 1..T-1, so
latent frame j, channel c holds pixel frame max(0, 4j + c - 3). Its mask is "known" = 1; it is
built from ``1 - character_mask`` with the first ``mask_len`` (motion) frames set known.

Also the core ComfyUI 0.33.0 layout, for contrast: latent j, channel c holds pixel frame 4j + c,
rows past the window are "generate", and in an extension window rows 0..4m-1 (m motion
latents) are known before rows 4m-3.. are overwritten by the character mask.
"""

from __future__ import annotations

import torch


def official_known_mask(character_mask: torch.Tensor, *, length: int, motion_frames: int) -> torch.Tensor:
    """(4, latent_length, h, w), 1 = known, for a window whose pixel frames 0..length-1 have
    ``character_mask[f]`` (1 = the character) at latent resolution."""
    latent_length = (length - 1) // 4 + 1
    _, h, w = character_mask.shape
    known = torch.empty((4, latent_length, h, w))
    for j in range(latent_length):
        for c in range(4):
            frame = max(0, 4 * j + c - 3)
            if frame < motion_frames:
                known[c, j] = 1.0
            else:
                known[c, j] = 1.0 - character_mask[frame]
    return known


def core_generate_mask(character_mask: torch.Tensor, *, length: int, motion_latents: int) -> torch.Tensor:
    """(4, latent_length, h, w), 1 = generate: what ComfyUI 0.33.0's core node builds."""
    latent_length = (length - 1) // 4 + 1
    _, h, w = character_mask.shape
    rows = torch.ones((latent_length * 4, h, w))
    rows[: motion_latents * 4] = 0.0
    first_masked = max(0, motion_latents * 4 - 3)
    frames = min(length, character_mask.shape[0])
    rows[first_masked:frames] = character_mask[first_masked:frames]
    return rows.view(latent_length, 4, h, w).transpose(0, 1)


def official_padding_indices(frames: int, target: int) -> list[int]:
    """Which real frame each padded conditioning frame is, as ``WanAnimate.inputs_padding``
    walks: forward from frame 0, turning at either end (the end frame is not repeated)."""
    if frames == 1:
        return [0] * target  # the official loop fails on one frame; repeating it is the only reading
    out: list[int] = []
    index, step = 0, 1
    while len(out) < target:
        out.append(index)
        index += step
        if index in (0, frames - 1):
            step = -step
    return out


def official_target_frames(frames: int, clip_len: int = 77, motion_frames: int = 5) -> int:
    """``WanAnimate.get_valid_len``: the padded length the official windows cover (refert_num = 5)."""
    step = clip_len - motion_frames
    remainder = (frames - motion_frames) % step
    return frames + (0 if remainder == 0 else step - remainder)
