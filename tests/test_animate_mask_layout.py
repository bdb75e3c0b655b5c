"""The replacement mask of comfyui_nodes/wan_worker_nodes equals the official Wan2.2 Animate
layout, element by element, for a first window and for an extension window (5 motion frames).

CPU only, no ComfyUI: the layout function is pure PyTorch. The node itself, run against the
pinned core node inside a real ComfyUI, is tested in tests/test_comfy_core_nodes.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.nodes import load_node_module
from tests.support.wan_official import core_generate_mask, official_known_mask

NODE_DIR = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "wan_worker_nodes"


layout = load_node_module("mask_layout.py")


def character_masks(frames: int, h: int = 6, w: int = 10, seed: int = 0) -> torch.Tensor:
    """Random per-frame masks (1 = character) where every frame differs from its neighbours."""
    generator = torch.Generator().manual_seed(seed)
    masks = (torch.rand((frames, h, w), generator=generator) > 0.5).float()
    masks[:, 0, 0] = torch.arange(frames) % 2  # neighbouring frames always differ somewhere
    return masks


@pytest.mark.parametrize(("length", "motion"), [(77, 0), (77, 5), (25, 5), (9, 5), (5, 0), (1, 0)])
def test_layout_equals_the_official_one(length: int, motion: int) -> None:
    masks = character_masks(length)
    ours = layout.window_concat_mask(
        masks, length=length, motion_frames=motion, latent_height=6, latent_width=10
    )
    latent_length = (length - 1) // 4 + 1
    assert ours.shape == (1, 4, 1 + latent_length, 6, 10)
    assert torch.equal(ours[0, :, 0], torch.zeros(4, 6, 10))  # the reference latent is known
    official = official_known_mask(masks, length=length, motion_frames=motion)
    assert torch.equal(1.0 - ours[0, :, 1:], official)


def test_first_window_latent_one_holds_pixel_frames_one_to_four() -> None:
    masks = torch.zeros((77, 1, 1))
    masks[3, 0, 0] = 1.0  # only pixel frame 3 has the character
    ours = layout.window_concat_mask(masks, length=77, motion_frames=0, latent_height=1, latent_width=1)
    generate = ours[0, :, 1:, 0, 0]  # (channel, latent)
    assert generate[:, 1].tolist() == [0.0, 0.0, 1.0, 0.0]  # frames 1, 2, 3, 4 -> channel 2
    assert generate[:, 0].sum() == 0 and generate[:, 2:].sum() == 0


def test_extension_window_keeps_all_five_motion_frames_in_all_four_rows() -> None:
    masks = torch.ones((77, 2, 2))  # the character everywhere
    ours = layout.window_concat_mask(masks, length=77, motion_frames=5, latent_height=2, latent_width=2)
    generate = ours[0, :, 1:]
    assert generate[:, :2].sum() == 0  # latents 0 and 1 = pixel frames 0..4: known
    assert torch.equal(generate[:, 2:], torch.ones_like(generate[:, 2:]))


def test_the_core_layout_differs_so_these_tests_can_fail() -> None:
    masks = character_masks(77)
    for motion, motion_latents in ((0, 0), (5, 2)):
        official = official_known_mask(masks, length=77, motion_frames=motion)
        core = core_generate_mask(masks, length=77, motion_latents=motion_latents)
        assert not torch.equal(1.0 - core, official)
    # The core node's last latent: three of its four rows say "generate everything".
    core = core_generate_mask(torch.zeros((77, 1, 1)), length=77, motion_latents=0)
    assert core[:, -1, 0, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    ours = layout.window_concat_mask(
        torch.zeros((77, 1, 1)), length=77, motion_frames=0, latent_height=1, latent_width=1
    )
    assert ours[0, :, -1, 0, 0].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_frames_past_the_mask_are_generated_and_bad_lengths_refused() -> None:
    ours = layout.window_concat_mask(
        torch.zeros((3, 1, 1)), length=9, motion_frames=0, latent_height=1, latent_width=1
    )
    # pixel frames 0..2 known, 3..8 (no mask) generated; latent 1 holds frames 1, 2, 3, 4
    assert ours[0, :, 1:, 0, 0].tolist() == [
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
        [0.0, 1.0, 1.0],
        [0.0, 1.0, 1.0],
    ]
    ours = layout.window_concat_mask(None, length=9, motion_frames=5, latent_height=1, latent_width=1)
    assert ours[0, :, 1:, 0, 0].tolist() == [[0.0, 0.0, 1.0]] * 4
    with pytest.raises(ValueError, match="4n\\+1"):
        layout.window_concat_mask(None, length=8, motion_frames=0, latent_height=1, latent_width=1)
