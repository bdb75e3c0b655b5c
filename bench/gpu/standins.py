"""Stand-ins for the custom-node classes of the pinned graph, used when their pack is not loaded.

Each has the real node's inputs (so ComfyUI validates the graph unchanged) and returns outputs of
the real types and shapes, so every core node downstream (WanAnimateToVideo above all) does its
real amount of work. Their own time is NOT the real node's: the table marks those stages
"stand-in, not measured" and plan.WHY_NOT_MEASURED says why.

--tiny also replaces CLIPLoader/CLIPTextEncode: umt5-xxl exists in one size only (5.7 B params).
"""

from __future__ import annotations

from typing import Any

import torch

FACE_SIZE = 512


def _box(width: int, height: int) -> tuple[int, int, int, int]:
    """A centred person-sized box (x0, y0, x1, y1)."""
    return width // 3, height // 8, width * 2 // 3, height * 7 // 8


def _person_masks(frames: int, height: int, width: int) -> torch.Tensor:
    masks = torch.zeros((frames, height, width))
    x0, y0, x1, y1 = _box(width, height)
    masks[:, y0:y1, x0:x1] = 1.0
    return masks


class StandIn:
    CATEGORY = "gpu-bench stand-ins"
    FUNCTION = "run"


class ImageResizeKJv2(StandIn):
    RETURN_TYPES = ("IMAGE", "INT", "INT", "MASK")
    RETURN_NAMES = ("IMAGE", "width", "height", "mask")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "width": ("INT", {"default": 512, "min": 0, "max": 16384}),
                "height": ("INT", {"default": 512, "min": 0, "max": 16384}),
                "upscale_method": (["nearest-exact", "bilinear", "area", "bicubic", "lanczos"],),
                "keep_proportion": (["stretch", "resize", "pad", "pad_edge", "pad_edge_pixel", "crop"],),
                "pad_color": ("STRING", {"default": "0, 0, 0"}),
                "crop_position": (["center", "top", "bottom", "left", "right"],),
                "divisible_by": ("INT", {"default": 2, "min": 0, "max": 512}),
            },
            "optional": {"mask": ("MASK",), "device": (["cpu", "gpu"],)},
        }

    def run(
        self, image: torch.Tensor, width: int, height: int, upscale_method: str, **_: Any
    ) -> tuple[Any, ...]:
        import comfy.utils

        method = "bilinear" if upscale_method == "lanczos" else upscale_method
        resized = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, method, "disabled").movedim(
            1, -1
        )
        return resized, width, height, torch.ones((image.shape[0], height, width))


class OnnxDetectionModelLoader(StandIn):
    RETURN_TYPES = ("POSEMODEL",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        models = ["vitpose-l-wholebody.onnx", "yolov10m.onnx"]
        return {
            "required": {
                "vitpose_model": (models,),
                "yolo_model": (models,),
                "onnx_device": (["CUDAExecutionProvider", "CPUExecutionProvider"],),
            }
        }

    def run(self, onnx_device: str = "CPUExecutionProvider", **_: Any) -> tuple[Any, ...]:
        # What the repo's OnnxDetectionModelLoaderChecked inspects: a session per model, and reinit.
        return ({"vitpose": _Runner(onnx_device), "yolo": _Runner(onnx_device)},)

    def loadmodel(self, vitpose_model: str, yolo_model: str, onnx_device: str) -> tuple[Any, ...]:
        return self.run(onnx_device=onnx_device)


class _Session:
    def __init__(self, provider: str) -> None:
        self.provider = provider

    def get_providers(self) -> list[str]:
        return [self.provider]


class _Runner:
    """Stands for the pack's ViTPose/Yolo wrappers: a ``session`` with its providers, ``reinit``."""

    def __init__(self, provider: str) -> None:
        self.session = _Session(provider)

    def reinit(self, provider: Any = None) -> None:
        pass


class PoseAndFaceDetection(StandIn):
    RETURN_TYPES = ("POSEDATA", "IMAGE", "STRING", "BBOX", "BBOX")
    RETURN_NAMES = ("pose_data", "face_images", "key_frame_body_points", "bboxes", "face_bboxes")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("POSEMODEL",),
                "images": ("IMAGE",),
                "width": ("INT", {"default": 832, "min": 64, "max": 2048}),
                "height": ("INT", {"default": 480, "min": 64, "max": 2048}),
            },
            "optional": {
                "retarget_image": ("IMAGE",),
                "face_padding": ("INT", {"default": 0, "min": 0, "max": 512}),
            },
        }

    def run(self, model: Any, images: torch.Tensor, width: int, height: int, **_: Any) -> tuple[Any, ...]:
        frames = images.shape[0]
        x0, y0, x1, y1 = _box(images.shape[2], images.shape[1])
        faces = torch.nn.functional.interpolate(
            images[:, y0 : y0 + (y1 - y0) // 4, x0:x1].movedim(-1, 1),
            size=(FACE_SIZE, FACE_SIZE),
            mode="bilinear",
        ).movedim(1, -1)
        pose = {"frames": frames, "width": width, "height": height}
        return pose, faces, "[]", [(x0, y0, x1, y1)], [(x0, y0, x1, y0 + (y1 - y0) // 4)] * frames


class DrawViTPose(StandIn):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "pose_data": ("POSEDATA",),
                "width": ("INT", {"default": 832, "min": 64, "max": 2048}),
                "height": ("INT", {"default": 480, "min": 64, "max": 2048}),
                "retarget_padding": ("INT", {"default": 16, "min": 0, "max": 512}),
                "body_stick_width": ("INT", {"default": -1, "min": -1, "max": 20}),
                "hand_stick_width": ("INT", {"default": -1, "min": -1, "max": 20}),
                "draw_head": ("BOOLEAN", {"default": True}),
            }
        }

    def run(self, pose_data: dict[str, Any], width: int, height: int, **_: Any) -> tuple[Any, ...]:
        images = torch.zeros((pose_data["frames"], height, width, 3))
        x0, y0, x1, y1 = _box(width, height)
        images[:, y0:y1, (x0 + x1) // 2 - 2 : (x0 + x1) // 2 + 2] = 1.0  # a "spine"
        return (images,)


class DownloadAndLoadSAM2Model(StandIn):
    RETURN_TYPES = ("SAM2MODEL",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = [
            f"sam2{v}_hiera_{s}.safetensors"
            for v in ("", ".1")
            for s in ("base_plus", "large", "small", "tiny")
        ]
        return {
            "required": {
                "model": (names,),
                "segmentor": (["single_image", "video", "automaskgenerator"],),
                "device": (["cuda", "cpu", "mps"],),
                "precision": (["fp16", "bf16", "fp32"],),
            }
        }

    def run(self, **_: Any) -> tuple[Any, ...]:
        return ({"stand_in": "sam2"},)


class Sam2Segmentation(StandIn):
    RETURN_TYPES = ("MASK",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "sam2_model": ("SAM2MODEL",),
                "image": ("IMAGE",),
                "keep_model_loaded": ("BOOLEAN",),
            },
            "optional": {
                "coordinates_positive": ("STRING", {"forceInput": True}),
                "coordinates_negative": ("STRING", {"forceInput": True}),
                "bboxes": ("BBOX",),
                "individual_objects": ("BOOLEAN", {"default": False}),
                "mask": ("MASK",),
            },
        }

    def run(self, sam2_model: Any, image: torch.Tensor, **_: Any) -> tuple[Any, ...]:
        return (_person_masks(image.shape[0], image.shape[1], image.shape[2]),)

    def segment(self, **inputs: Any) -> tuple[Any, ...]:  # what Sam2SegmentationReleased calls
        return self.run(**inputs)


class GrowMaskWithBlur(StandIn):
    RETURN_TYPES = ("MASK", "MASK")
    RETURN_NAMES = ("mask", "mask_inverted")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK",),
                "expand": ("INT", {"default": 0, "min": -16384, "max": 16384}),
                "incremental_expandrate": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0}),
                "tapered_corners": ("BOOLEAN", {"default": True}),
                "flip_input": ("BOOLEAN", {"default": False}),
                "blur_radius": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100}),
                "lerp_alpha": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}),
                "decay_factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}),
            },
            "optional": {"fill_holes": ("BOOLEAN", {"default": False})},
        }

    def run(self, mask: torch.Tensor, expand: int, **_: Any) -> tuple[Any, ...]:
        size = 2 * abs(expand) + 1
        grown = torch.nn.functional.max_pool2d(mask[:, None], size, stride=1, padding=abs(expand))[:, 0]
        return grown, 1.0 - grown


class BlockifyMask(StandIn):
    RETURN_TYPES = ("MASK",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"masks": ("MASK",), "block_size": ("INT", {"default": 32, "min": 8, "max": 512})},
            "optional": {"device": (["cpu", "gpu"],)},
        }

    def run(self, masks: torch.Tensor, block_size: int, **_: Any) -> tuple[Any, ...]:
        height, width = masks.shape[1:]
        pooled = torch.nn.functional.max_pool2d(masks[:, None], block_size, ceil_mode=True)
        return (torch.nn.functional.interpolate(pooled, scale_factor=block_size)[:, 0, :height, :width],)


class DrawMaskOnImage(StandIn):
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"image": ("IMAGE",), "mask": ("MASK",), "color": ("STRING", {"default": "0, 0, 0"})},
            "optional": {"device": (["cpu", "gpu"],)},
        }

    def run(self, image: torch.Tensor, mask: torch.Tensor, **_: Any) -> tuple[Any, ...]:
        return (image * (1.0 - mask[..., None]),)


class CLIPLoader(StandIn):
    """--tiny only: no text encoder is loaded."""

    RETURN_TYPES = ("CLIP",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"clip_name": ("STRING",), "type": ("STRING",)},
            "optional": {"device": ("STRING",)},
        }

    def run(self, **_: Any) -> tuple[Any, ...]:
        return ({"stand_in": "umt5"},)


class CLIPTextEncode(StandIn):
    """--tiny only: random conditioning of umt5-xxl's shape (512 tokens x 4096)."""

    RETURN_TYPES = ("CONDITIONING",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}}

    def run(self, text: str, clip: Any) -> tuple[Any, ...]:
        generator = torch.Generator().manual_seed(len(text))
        return ([[torch.randn((1, 512, 4096), generator=generator) * 0.1, {}]],)


PACK_STAND_INS = {
    cls.__name__: cls
    for cls in (
        ImageResizeKJv2,
        OnnxDetectionModelLoader,
        PoseAndFaceDetection,
        DrawViTPose,
        DownloadAndLoadSAM2Model,
        Sam2Segmentation,
        GrowMaskWithBlur,
        BlockifyMask,
        DrawMaskOnImage,
    )
}
TINY_TEXT_STAND_INS = {"CLIPLoader": CLIPLoader, "CLIPTextEncode": CLIPTextEncode}
