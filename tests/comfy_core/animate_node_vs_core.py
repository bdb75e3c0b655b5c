"""Runs inside a real ComfyUI (the pinned checkout, CPU): our WanAnimateToVideoOfficialMask against
the core WanAnimateToVideo on the same inputs. Prints one JSON object per scenario:

    {"scenario": {"differences": [...], "mask_is_official": true, "core_mask_is_official": false}}

``differences`` lists every output that is not identical to the core node's, concat_mask
excepted; ``mask_is_official`` compares our concat_mask with the official Wan2.2 layout
(tests/support/wan_official.py). Used by tests/test_comfy_core_nodes.py.

    WAN_BENCH_PYTHON tests/comfy_core/animate_node_vs_core.py --comfy /path/to/ComfyUI
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.gpu.runtime import ComfyRuntime  # noqa: E402

WIDTH, HEIGHT = 64, 32  # latent 8 x 4
FRAMES = 40


class ToyVAE:
    """Deterministic stand-in for the Wan VAE's encode: 8x spatial, 1 + 4n temporal packing."""

    def encode(self, pixels: Any) -> Any:
        import torch
        import torch.nn.functional as F

        frames = pixels.shape[0]
        pooled = F.avg_pool2d(pixels.movedim(-1, 1).float(), 8)
        index = [0] + [min(frames - 1, 4 * j) for j in range(1, (frames - 1) // 4 + 1)]
        latent = pooled[index].repeat(1, 6, 1, 1)[:, :16]
        return latent.movedim(0, 1).unsqueeze(0).to(torch.float32)


def load_file(name: str, path: Path) -> Any:
    """A module by path: ComfyUI's own ``tests`` package shadows this repository's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(ours: Any, core: Any, path: str, out: list[str]) -> None:
    import torch

    if isinstance(core, torch.Tensor):
        if not (isinstance(ours, torch.Tensor) and ours.shape == core.shape and torch.equal(ours, core)):
            out.append(path)
    elif isinstance(core, dict):
        if set(ours) != set(core):
            out.append(f"{path}: keys {sorted(set(ours) ^ set(core))}")
        for key in core:
            if key != "concat_mask" and key in ours:
                compare(ours[key], core[key], f"{path}.{key}", out)
    elif isinstance(core, list | tuple):
        if len(ours) != len(core):
            out.append(f"{path}: length")
        for i, (a, b) in enumerate(zip(ours, core, strict=False)):
            compare(a, b, f"{path}[{i}]", out)
    elif ours is not core and ours != core:
        out.append(f"{path}: {ours!r} != {core!r}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--comfy", type=Path, required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="animate-node-"))
    runtime = ComfyRuntime(args.comfy, cpu=True, work_dir=work)
    runtime.start()
    import nodes
    import torch

    official = load_file("wan_official_under_test", REPO / "tests" / "support" / "wan_official.py")
    official_known_mask, core_generate_mask = official.official_known_mask, official.core_generate_mask

    runtime.load_custom_node(REPO / "comfyui_nodes" / "wan_worker_nodes")
    core_cls = nodes.NODE_CLASS_MAPPINGS["WanAnimateToVideo"]
    ours_cls = nodes.NODE_CLASS_MAPPINGS["WanAnimateToVideoOfficialMask"]

    g = torch.Generator().manual_seed(7)
    latent_masks = (torch.rand((FRAMES, HEIGHT // 8, WIDTH // 8), generator=g) > 0.5).float()
    latent_masks[:, 0, 0] = torch.arange(FRAMES) % 2
    # Block masks (as BlockifyMask makes them): any nearest sampling gives the latent mask back.
    pixel_masks = latent_masks.repeat_interleave(8, dim=1).repeat_interleave(8, dim=2)

    def video(frames: int = FRAMES, h: int = HEIGHT, w: int = WIDTH) -> Any:
        return torch.rand((frames, h, w, 3), generator=g)

    conditioning = [[torch.rand((1, 4, 8), generator=g), {"pooled_output": None}]]
    common = {
        "positive": conditioning,
        "negative": [[torch.rand((1, 4, 8), generator=g), {}]],
        "vae": ToyVAE(),
        "width": WIDTH,
        "height": HEIGHT,
        "batch_size": 1,
        "continue_motion_max_frames": 5,
        "reference_image": video(1),
        "face_video": video(h=512 // 8, w=512 // 8),
        "pose_video": video(),
        "background_video": video(),
    }
    previous_window = video(13)
    scenarios: dict[str, dict[str, Any]] = {
        "first window": {"length": 13, "video_frame_offset": 0, "character_mask": pixel_masks},
        "extension window (5 motion frames)": {
            "length": 13,
            "video_frame_offset": 13,
            "continue_motion": previous_window,
            "character_mask": pixel_masks,
        },
        "extension window further into the clip": {
            "length": 17,
            "video_frame_offset": 21,
            "continue_motion": previous_window,
            "character_mask": pixel_masks,
        },
        "one-frame mask": {"length": 9, "video_frame_offset": 0, "character_mask": pixel_masks[:1]},
        "move mode (no mask, no background)": {
            "length": 13,
            "video_frame_offset": 13,
            "continue_motion": previous_window,
            "background_video": None,
        },
    }
    report: dict[str, Any] = {}
    for name, extra in scenarios.items():
        inputs = {**common, **extra}
        core = core_cls.execute(**inputs).args
        ours = ours_cls.execute(**inputs).args
        differences: list[str] = []
        compare(list(ours), list(core), "outputs", differences)
        entry: dict[str, Any] = {"differences": differences}
        mask = inputs.get("character_mask")
        our_masks = {c[1]["concat_mask"].data_ptr() for c in (*ours[0], *ours[1])}
        entry["same_mask_on_both_conditionings"] = len(our_masks) == 1
        ours_mask, core_mask = ours[0][0][1]["concat_mask"], core[0][0][1]["concat_mask"]
        if mask is not None:
            length = inputs["length"]
            motion = 5 if "continue_motion" in inputs else 0
            start = max(0, inputs["video_frame_offset"] - motion)
            window = latent_masks[:1].repeat(length, 1, 1) if mask.shape[0] == 1 else latent_masks[start:]
            window = window[:length]
            expected = torch.cat(
                (
                    torch.zeros((4, 1, *window.shape[1:])),
                    1.0 - official_known_mask(window, length=length, motion_frames=motion),
                ),
                dim=1,
            ).unsqueeze(0)
            entry["mask_is_official"] = bool(torch.equal(ours_mask, expected))
            entry["core_mask_is_official"] = bool(torch.equal(core_mask, expected))
            core_restated = core_generate_mask(
                window, length=length, motion_latents=(motion - 1) // 4 + 1 if motion else 0
            )
            entry["core_mask_is_as_restated"] = bool(torch.equal(core_mask[0, :, 1:], core_restated))
        else:
            entry["mask_equals_core"] = bool(torch.equal(ours_mask, core_mask))
        report[name] = entry
    schema = ours_cls.GET_NODE_INFO_V1()
    core_schema = core_cls.GET_NODE_INFO_V1()
    report["schema"] = {
        "inputs_equal_core": schema["input"] == core_schema["input"],
        "outputs_equal_core": (schema["output"], schema["output_name"])
        == (core_schema["output"], core_schema["output_name"]),
        "name": schema["name"],
        "object_info": json.loads(json.dumps(schema, default=str)),
    }
    pad_cls = nodes.NODE_CLASS_MAPPINGS["ImageBatchReflectPad"]
    report["reflect_pad"] = {
        # What the server's /object_info serves for a V1 node (server.py node_info).
        "input": pad_cls.INPUT_TYPES(),
        "output": list(pad_cls.RETURN_TYPES),
        "output_name": list(pad_cls.RETURN_NAMES),
        "padded": pad_cls().pad(torch.arange(4.0).view(4, 1, 1, 1), 9)[0].flatten().tolist(),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
