"""The replacement mask of one Wan Animate window, laid out as the official pipeline lays it out.

Pure PyTorch (no ComfyUI import), so it is tested on the CPU against the official layout.

Wan's VAE packs pixel frames into latent frames as ``1, 4, 4, ...``: latent 0 holds pixel
frame 0 alone, latent j >= 1 holds pixel frames 4j-3 .. 4j. The mask channels follow the
same packing: the official ``WanAnimate.get_i2v_mask`` (Wan-Video/Wan2.2 ``wan/animate.py``)
repeats pixel frame 0's mask four times, appends frames 1 .. T-1 and groups the rows by four,
after marking the first ``mask_len`` pixel frames (the motion frames continued from the
previous window) as known.

ComfyUI 0.33.0's core ``WanAnimateToVideo`` instead writes pixel frame f's mask to row f and
groups rows by four, so latent j carries pixel frames 4j .. 4j+3: the mask leads the video by
three frames, three of the four rows of a window's last latent are "generate everything", and
in an extension window the kept motion frames lose their "known" mark in three rows of
latent 1 (ComfyUI PRs #15153, #16406; not in the pinned commit).

Conventions here are ComfyUI's: 1 = generate, 0 = keep (ComfyUI's model inverts the mask
before it reaches the network; the official code builds the inverted one directly).
"""

from __future__ import annotations

import torch


def window_concat_mask(
    frame_masks: torch.Tensor | None,
    *,
    length: int,
    motion_frames: int,
    latent_height: int,
    latent_width: int,
    reference_latents: int = 1,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``concat_mask`` of one window: shape (1, 4, reference_latents + latent_length, h, w).

    ``frame_masks``: the window's character mask, one row per pixel frame of the window
    (frame 0 = the window's first frame), already at latent resolution (h, w), 1 = the
    character (generate). Frames past its end are generated whole, as the core node does.
    ``motion_frames``: how many of the window's first frames are continued from the previous
    window (0 for the first window): known everywhere.
    """
    if length < 1 or (length - 1) % 4:
        raise ValueError(f"a Wan window length is 4n+1, not {length}")
    if not 0 <= motion_frames <= length:
        raise ValueError(f"motion_frames must be within 0..{length}, not {motion_frames}")
    latent_length = (length - 1) // 4 + 1
    generate = torch.ones((length, latent_height, latent_width), dtype=dtype, device=device)
    if frame_masks is not None:
        rows = min(length, frame_masks.shape[0])
        generate[:rows] = frame_masks[:rows].to(dtype=dtype, device=device)
    generate[:motion_frames] = 0.0
    # Pixel frame 0 four times, then frames 1 .. length-1: 4 rows per latent frame.
    packed = torch.cat((generate[:1].repeat(4, 1, 1), generate[1:]), dim=0)
    packed = packed.view(latent_length, 4, latent_height, latent_width).transpose(0, 1)
    reference = torch.zeros((4, reference_latents, latent_height, latent_width), dtype=dtype, device=device)
    return torch.cat((reference, packed), dim=1).unsqueeze(0)
