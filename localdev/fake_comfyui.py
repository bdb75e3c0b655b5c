"""A FAKE ComfyUI: a stand-in for ComfyUI 0.33.0 used by the tests and the local demo. No models.

It speaks ComfyUI's HTTP + websocket API as recorded from a real 0.33.0 server
(``/work/shared/comfyui/PROTOCOL.md`` and ``captures/*.json``): the same message types,
shapes and order, the same validation error bodies, the same queue, cache, interrupt and
reconnect behaviour. It is written from those observations; no ComfyUI code is used.

It really executes the model-free node classes of ``workflows/model_free_still.json`` and
``workflows/model_free_chunked.json`` (LoadImage, LoadVideo, GetVideoComponents, ImageScale,
RepeatImageBatch, ImageFromBatch, ImageCompositeMasked, CreateVideo, SaveVideo, and this
repository's WanWorkerSaveChunk): images are decoded with Pillow, videos probed with ffprobe;
frames are made lazily, when a save node renders them with ffmpeg. SaveVideo writes a real
H.264/yuv420p MP4 (AAC audio when the graph has audio); WanWorkerSaveChunk writes the frames as
raw rgb24 (``<prefix>_00001_.rgb``, reported with ``wan_chunk: [{width, height, frames,
motion_frames: 0}]``; a connected ``motion`` input fails: the stand-in writes no motion frames).
ImageCompositeMasked pastes a still, without mask or resize; ImageFromBatch cuts a range as the
real node does. Any other ``class_type`` is rejected with ``missing_node_type``, as a real server
without that node would do.

Differences from a real server, on purpose: ``/system_stats`` reports
``comfyui_version "0.33.0-fake"``; there is no frontend, no model folder and no preview
decoding; and a control endpoint a real server does not have, ``POST /fake/fault``, injects
faults (also ``FakeComfyUI.set_fault`` in Python):

=================  ====================================================================
kind               effect and params. Each fault applies to the next ``times`` prompts
                   (default 1; ``times: null`` = until cleared). ``node`` defaults to
                   the output node; a fault aimed at a cached node does not fire.
=================  ====================================================================
reject             ``POST /prompt`` -> 400 ``value_not_in_list`` (like a model file that is
                   not installed). ``node`` (default: the first), ``input_name``,
                   ``received_value``
partial_reject     ``POST /prompt`` -> 200 with non-empty ``node_errors``; the prompt runs
runtime_error      ``execution_error`` in ``node``; ``exception_type``, ``exception_message``
oom                ``execution_error`` in ``node``: ``torch.OutOfMemoryError``, "CUDA out of
                   memory. ..."
drop_socket        the prompt's websocket is cut after ``after_node`` finished (default: the
                   first node that runs); the prompt goes on and its events are lost
hang               ``node`` never finishes until interrupted (checked like a sampler loop)
slow               every node that runs takes ``seconds`` (1.0) longer; interrupts are
                   honoured between nodes only, as on a real server
progress           ``node`` emits sampler ``progress`` messages: ``steps`` (4), ``step_s``
                   (0.05), ``preview`` (true: one binary preview frame per step)
wrong_size         the save node (SaveVideo or WanWorkerSaveChunk) writes ``width`` x
                   ``height`` (default: half size); WanWorkerSaveChunk reports that size
wrong_fps          SaveVideo writes at ``fps`` (default: 25, or 30 when 25 was asked);
                   WanWorkerSaveChunk takes the fault and ignores it (raw frames, no fps)
wrong_frames       the save node writes ``frames`` frames (default: one fewer);
                   WanWorkerSaveChunk reports that count (more than it has: the last repeated)
drop_audio         SaveVideo writes no audio track; WanWorkerSaveChunk takes it and ignores it
cached_rerun       the next prompt is answered as if from cache: every node reported
                   cached, the output node re-reports the last file it wrote, no new file
=================  ====================================================================

    python -m localdev.fake_comfyui --host 127.0.0.1 --port 8188 --input-dir D --output-dir D

prints one line when it is ready. In tests: ``FakeComfyUI(input_dir, output_dir).start()``
(a background thread), then ``.url``, ``.set_fault(...)``, ``.stop()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import hashlib
import io
import json
import mimetypes
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image, ImageOps, UnidentifiedImageError

from worker.probe import ProbeError, ffprobe

FAKE_VERSION = "0.33.0-fake"
DEFAULT_MAX_UPLOAD = 100 * 1024 * 1024
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v"}
FAULT_KINDS = (
    "reject",
    "partial_reject",
    "runtime_error",
    "oom",
    "drop_socket",
    "hang",
    "slow",
    "progress",
    "wrong_size",
    "wrong_fps",
    "wrong_frames",
    "drop_audio",
    "cached_rerun",
)
FILE_LIST = "<files in the input folder>"  # placeholder replaced per request
SERVER_FEATURES = {
    "supports_preview_metadata": True,
    "supports_model_type_tags": True,
    "max_upload_size": DEFAULT_MAX_UPLOAD,
    "extension": {"manager": {"supports_v4": False}},
    "node_replacements": True,
    "assets": False,
}
PREVIEW_IMAGE_EVENT, JPEG_FORMAT = 1, 1

# -- node classes, in /object_info's shape -------------------------------------------------

_VIDEO_FORMATS = [
    {"key": key, "inputs": {"required": {}, "optional": {"codec": ["COMFY_DYNAMICCOMBO_V3", {}]}}}
    for key in ("auto", "mp4", "mkv", "webm")
]
NODE_CLASSES: dict[str, dict[str, Any]] = {
    "LoadImage": {
        "input": {"required": {"image": [FILE_LIST, {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_name": ["IMAGE", "MASK"],
        "output_node": False,
        "category": "image",
        "display_name": "Load Image",
        "python_module": "nodes",
    },
    "LoadVideo": {
        "input": {"required": {"file": ["COMBO", {"options": FILE_LIST, "video_upload": True}]}},
        "output": ["VIDEO"],
        "output_name": ["VIDEO"],
        "output_node": False,
        "category": "video",
        "display_name": "Load Video",
        "python_module": "comfy_extras.nodes_video",
    },
    "GetVideoComponents": {
        "input": {"required": {"video": ["VIDEO", {"tooltip": "The video to extract components from."}]}},
        "output": ["IMAGE", "AUDIO", "FLOAT", "INT", "COMBO"],
        "output_name": ["images", "audio", "fps", "bit_depth", "color_space"],
        "output_node": False,
        "category": "video",
        "display_name": "Get Video Components",
        "python_module": "comfy_extras.nodes_video",
    },
    "ImageScale": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
                "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
                "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}],
                "crop": [["disabled", "center"]],
            }
        },
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
        "output_node": False,
        "category": "image/upscaling",
        "display_name": "Upscale Image",
        "python_module": "nodes",
    },
    "RepeatImageBatch": {
        "input": {
            "required": {
                "image": ["IMAGE", {}],
                "amount": ["INT", {"default": 1, "min": 1, "max": 4096}],
            }
        },
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
        "output_node": False,
        "category": "image/batch",
        "display_name": "Repeat Image Batch",
        "python_module": "comfy_extras.nodes_images",
    },
    "CreateVideo": {
        "input": {
            "required": {
                "images": ["IMAGE", {"tooltip": "The images to create a video from."}],
                "fps": ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}],
            },
            "optional": {
                "audio": ["AUDIO", {"tooltip": "The audio to add to the video."}],
                "bit_depth": ["INT", {"default": 8, "min": 8, "max": 10, "step": 2}],
            },
        },
        "output": ["VIDEO"],
        "output_name": ["VIDEO"],
        "output_node": False,
        "category": "video",
        "display_name": "Create Video",
        "python_module": "comfy_extras.nodes_video",
    },
    "SaveVideo": {
        "input": {
            "required": {
                "video": ["VIDEO", {"tooltip": "The video to save."}],
                "filename_prefix": ["STRING", {"default": "video/ComfyUI", "multiline": False}],
                "format": ["COMFY_DYNAMICCOMBO_V3", {"options": _VIDEO_FORMATS}],
            },
            "optional": {"codec": ["COMFY_DYNAMICCOMBO_V3", {"hidden": True}]},
        },
        "output": ["VIDEO"],
        "output_name": ["video"],
        "output_node": True,
        "category": "video",
        "display_name": "Save Video",
        "description": "Saves the input videos to your ComfyUI output directory.",
        "python_module": "comfy_extras.nodes_video",
    },
    # comfy_extras.nodes_images / nodes_mask, from /object_info of the pinned 0.33.0
    # (/work/shared/comfyui/object_info_core_0.33.0.json)
    "ImageFromBatch": {
        "input": {
            "required": {
                "image": ["IMAGE", {}],
                "batch_index": ["INT", {"default": 0, "min": -16384, "max": 16384}],
                "length": ["INT", {"default": 1, "min": 1, "max": 4096}],
            }
        },
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
        "output_node": False,
        "category": "image/batch",
        "display_name": "Get Image from Batch",
        "description": "",
        "python_module": "comfy_extras.nodes_images",
    },
    "ImageCompositeMasked": {
        "input": {
            "required": {
                "destination": ["IMAGE", {}],
                "source": ["IMAGE", {}],
                "x": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
                "y": ["INT", {"default": 0, "min": 0, "max": 16384, "step": 1}],
                "resize_source": ["BOOLEAN", {"default": False}],
            },
            "optional": {"mask": ["MASK", {}]},
        },
        "output": ["IMAGE"],
        "output_name": ["IMAGE"],
        "output_node": False,
        "category": "image/compositing",
        "display_name": "Image Composite Masked",
        "description": "",
        "python_module": "comfy_extras.nodes_mask",
    },
    # This repository's own output node (comfyui_nodes/wan_worker_nodes/chunk_io.py), as its
    # catalogue.json declares it.
    "WanWorkerSaveChunk": {
        "input": {
            "required": {
                "images": ["IMAGE"],
                "filename_prefix": ["STRING", {"default": "wan-worker/chunk"}],
                "motion_frames": ["INT", {"default": 5, "min": 1, "max": 81, "step": 4}],
            },
            "optional": {"motion": ["IMAGE"]},
        },
        "output": [],
        "output_name": [],
        "output_node": True,
        "category": "wan_worker",
        "display_name": "Save chunk (raw frames + motion frames)",
        "description": (
            "Saves a chunk's frames as raw RGB for the worker to encode, and the frames the next chunk "
            "continues from (float32)."
        ),
        "python_module": "custom_nodes.wan_worker_nodes",
    },
}
SAVE_CLASSES = ("SaveVideo", "WanWorkerSaveChunk")  # the wrong_* / drop_audio faults act on these
SCALAR_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def now_ms() -> int:
    return int(time.time() * 1000)


# -- validation (POST /prompt) --------------------------------------------------------------


def _failed_validation_body(node_errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "type": "prompt_outputs_failed_validation",
            "message": "Prompt outputs failed validation",
            "details": "",
            "extra_info": {},
        },
        "node_errors": node_errors,
    }


def _top_error(kind: str, message: str, details: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "error": {"type": kind, "message": message, "details": details, "extra_info": extra},
        "node_errors": {},
    }


class PromptValidator:
    """What ``POST /prompt`` checks: node types, outputs, links, types, ranges, combos, files."""

    def __init__(self, prompt: dict[str, Any], input_dir: Path) -> None:
        self.prompt = prompt
        self.input_dir = input_dir
        self._results: dict[str, tuple[bool, list[tuple[str, list[dict[str, Any]]]]]] = {}

    def validate(self) -> tuple[int, dict[str, Any], list[str]]:
        """(HTTP status, error body or node_errors, outputs to execute)."""
        for node_id, node in self.prompt.items():
            if not isinstance(node, dict) or "class_type" not in node:
                body = _top_error(
                    "invalid_prompt",
                    "Cannot execute because a node is missing the class_type property.",
                    f"Node ID '#{node_id}'",
                )
                return 400, body, []
            class_type = node["class_type"]
            if class_type not in NODE_CLASSES:
                title = (node.get("_meta") or {}).get("title", class_type)
                body = _top_error(
                    "missing_node_type",
                    f"Node '{title}' not found. The custom node may not be installed.",
                    f"Node ID '#{node_id}'",
                    node_id=node_id,
                    class_type=class_type,
                    node_title=title,
                )
                return 400, body, []
        outputs = [
            nid for nid, node in self.prompt.items() if NODE_CLASSES[node["class_type"]]["output_node"]
        ]
        if not outputs:
            return 400, _top_error("prompt_no_outputs", "Prompt has no outputs"), []
        good: list[str] = []
        node_errors: dict[str, Any] = {}
        for output_id in outputs:
            ok, failures = self._validate_node(output_id, set())
            if ok:
                good.append(output_id)
                continue
            for node_id, errors in failures:
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": errors,
                        "dependent_outputs": [],
                        "class_type": self.prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(output_id)
        if not good:
            return 400, _failed_validation_body(node_errors), []
        return 200, node_errors, good

    def _validate_node(
        self, node_id: str, visiting: set[str]
    ) -> tuple[bool, list[tuple[str, list[dict[str, Any]]]]]:
        if node_id in self._results:
            return self._results[node_id]
        if node_id in visiting:
            error = {
                "type": "dependency_cycle",
                "message": "Dependency cycle detected",
                "details": node_id,
                "extra_info": {"node_id": node_id},
            }
            return False, [(node_id, [error])]
        visiting = visiting | {node_id}
        node = self.prompt[node_id]
        spec = NODE_CLASSES[node["class_type"]]["input"]
        inputs = node.setdefault("inputs", {})
        errors: list[dict[str, Any]] = []
        upstream_failures: list[tuple[str, list[dict[str, Any]]]] = []
        for name in spec.get("required", {}):
            if name not in inputs:
                errors.append(
                    {
                        "type": "required_input_missing",
                        "message": "Required input is missing",
                        "details": name,
                        "extra_info": {"input_name": name},
                    }
                )
        declared = {**spec.get("required", {}), **spec.get("optional", {})}
        for name, value in list(inputs.items()):
            config = declared.get(name)
            if config is None:
                continue  # unknown input names are ignored, as on a real server
            config = [config[0], config[1] if len(config) > 1 else {}]
            if is_link(value):
                failures = self._check_link(node_id, name, value, config, visiting, errors)
                upstream_failures.extend(failures)
            else:
                self._check_value(node, name, value, config, errors)
        result_ok = not errors and not upstream_failures
        failures = ([(node_id, errors)] if errors else []) + upstream_failures
        result = (result_ok, failures)
        self._results[node_id] = result
        return result

    def _check_link(
        self,
        node_id: str,
        name: str,
        value: list[Any],
        config: list[Any],
        visiting: set[str],
        errors: list[dict[str, Any]],
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        source_id, slot = str(value[0]), value[1]
        input_type = config[0] if isinstance(config[0], str) else "COMBO"
        source = self.prompt.get(source_id)
        if source is None or slot >= len(NODE_CLASSES[source["class_type"]]["output"]) or slot < 0:
            exception = (
                ("KeyError", f"'{source_id}'")
                if source is None
                else ("IndexError", "list index out of range")
            )
            errors.append(
                {
                    "type": "exception_during_inner_validation",
                    "message": "Exception when validating inner node",
                    "details": exception[1],
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "exception_message": exception[1],
                        "exception_type": exception[0],
                        "traceback": ['  File "localdev/fake_comfyui.py", in PromptValidator (fake)\n'],
                        "linked_node": value,
                    },
                }
            )
            return []
        received = NODE_CLASSES[source["class_type"]]["output"][slot]
        if received != input_type and "*" not in (received, input_type):
            errors.append(
                {
                    "type": "return_type_mismatch",
                    "message": "Return type mismatch between linked nodes",
                    "details": f"{name}, received_type({received}) mismatch input_type({input_type})",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_type": received,
                        "linked_node": value,
                    },
                }
            )
            return []
        ok, failures = self._validate_node(source_id, visiting)
        return [] if ok else failures

    def _check_value(
        self, node: dict[str, Any], name: str, value: Any, config: list[Any], errors: list[dict[str, Any]]
    ) -> None:
        kind = config[0]
        options = config[1] if len(config) > 1 else {}
        if kind == "COMFY_DYNAMICCOMBO_V3":
            return  # DynamicCombo values are not validated by the real server either
        if isinstance(kind, str) and kind in SCALAR_TYPES:
            converted = self._convert(kind, name, value, config, errors)
            if converted is None:
                return
            node["inputs"][name] = converted
            if kind in ("INT", "FLOAT"):
                low, high = options.get("min"), options.get("max")
                if low is not None and converted < low:
                    errors.append(
                        self._range_error(
                            "value_smaller_than_min", "smaller than min", low, name, value, config
                        )
                    )
                if high is not None and converted > high:
                    errors.append(
                        self._range_error(
                            "value_bigger_than_max", "bigger than max", high, name, value, config
                        )
                    )
            return
        choices = kind if isinstance(kind, list) else options.get("options")
        if choices == FILE_LIST or (kind == FILE_LIST):
            if not _input_file_exists(self.input_dir, value):
                what = "image" if node["class_type"] == "LoadImage" else "video"
                errors.append(
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": f"{name} - Invalid {what} file: {value}",
                        "extra_info": {"input_name": name},
                    }
                )
            return
        if isinstance(choices, list) and value not in choices:
            errors.append(
                {
                    "type": "value_not_in_list",
                    "message": "Value not in list",
                    "details": f"{name}: '{value}' not in {choices}",
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value},
                }
            )

    @staticmethod
    def _convert(kind: str, name: str, value: Any, config: list[Any], errors: list[dict[str, Any]]) -> Any:
        converters: dict[str, Callable[[Any], Any]] = {
            "INT": int,
            "FLOAT": float,
            "STRING": str,
            "BOOLEAN": bool,
        }
        try:
            return converters[kind](value)
        except (TypeError, ValueError) as exc:
            errors.append(
                {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {kind} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                }
            )
            return None

    @staticmethod
    def _range_error(
        kind: str, words: str, limit: Any, name: str, value: Any, config: list[Any]
    ) -> dict[str, Any]:
        return {
            "type": kind,
            "message": f"Value {value} {words} of {limit}",
            "details": name,
            "extra_info": {"input_name": name, "input_config": config, "received_value": value},
        }


def _strip_annotation(name: str) -> tuple[str, str]:
    for folder in ("input", "output", "temp"):
        suffix = f" [{folder}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], folder
    return name, "input"


def _input_file_exists(input_dir: Path, name: Any) -> bool:
    if not isinstance(name, str) or not name:
        return False
    name, _ = _strip_annotation(name)
    path = (input_dir / name).resolve()
    return path.is_relative_to(input_dir.resolve()) and path.is_file()


def _list_input_files(input_dir: Path, extensions: set[str]) -> list[str]:
    if not input_dir.is_dir():
        return []
    return sorted(p.name for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in extensions)


# -- values flowing between nodes -------------------------------------------------------------


class NodeFailure(Exception):
    """A failure inside a node: becomes ``execution_error`` with these fields."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.exception_message = message if message.endswith("\n") else message + "\n"


@dataclass(frozen=True)
class VideoFile:
    """LoadVideo's output: a file, opened lazily (a corrupt file fails downstream)."""

    path: Path


@dataclass(frozen=True)
class Scale:
    """ImageScale of a video's frames."""

    width: int
    height: int
    crop: str


@dataclass(frozen=True)
class Paste:
    """ImageCompositeMasked of a still onto every frame, at x, y (cut at the frame's edges)."""

    picture: Image.Image
    x: int
    y: int


@dataclass(frozen=True)
class FrameRange:
    """ImageFromBatch: ``count`` frames from frame ``start`` (of the frames as they are by then)."""

    start: int
    count: int


@dataclass(frozen=True)
class Frames:
    """An IMAGE batch: one still repeated, or the frames of a video file, decoded and changed
    lazily: ``ops`` apply in order when the frames are rendered (ffmpeg filters)."""

    width: int
    height: int
    count: int
    still: Image.Image | None = None
    source: Path | None = None
    source_loops: int = 1
    ops: tuple[Scale | Paste | FrameRange, ...] = ()


@dataclass(frozen=True)
class Audio:
    path: Path


@dataclass(frozen=True)
class VideoSpec:
    """A VIDEO made from frames (CreateVideo): encoded only when saved."""

    frames: Frames
    fps: float
    audio: Audio | None


@dataclass(frozen=True)
class SaveOverrides:
    """What the wrong_* / drop_audio faults change in the written file."""

    size: tuple[int, int] | None = None
    fps: float | None = None
    frames: int | None = None
    drop_audio: bool = False


@dataclass
class NodeContext:
    input_dir: Path
    output_dir: Path
    prompt: dict[str, Any]
    overrides: SaveOverrides = field(default_factory=SaveOverrides)


def _ffprobe(path: Path) -> dict[str, Any]:
    try:
        return ffprobe(path)
    except ProbeError as exc:
        raise NodeFailure(
            "av.error.InvalidDataError",
            "[Errno 1094995529] Invalid data found when processing input: "
            f"'{path}'; last error log: {exc.reason}",
        ) from exc


def _rate(text: str | None) -> float:
    try:
        value = Fraction(text or "0")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(value)


def node_load_image(ctx: NodeContext, image: str) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    name, _ = _strip_annotation(image)
    path = ctx.input_dir / name
    try:
        with Image.open(path) as opened:
            opened.load()
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except UnidentifiedImageError as exc:
        raise NodeFailure("PIL.UnidentifiedImageError", str(exc)) from exc
    except OSError as exc:
        raise NodeFailure(
            f"{type(exc).__module__}.{type(exc).__name__}".removeprefix("builtins."), str(exc)
        ) from exc
    frames = Frames(width=picture.width, height=picture.height, count=1, still=picture)
    return (frames, None), None


def node_load_video(ctx: NodeContext, file: str) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    name, _ = _strip_annotation(file)
    return (VideoFile(ctx.input_dir / name),), None


def node_get_video_components(ctx: NodeContext, video: Any) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    if isinstance(video, VideoSpec):
        return (video.frames, video.audio, float(video.fps), 8, "sRGB"), None
    probe = _ffprobe(video.path)
    streams = probe.get("streams", [])
    picture = next((s for s in streams if s.get("codec_type") == "video"), None)
    if picture is None:
        raise NodeFailure("ValueError", f"No video stream found in '{video.path}'")
    fps = _rate(picture.get("avg_frame_rate")) or _rate(picture.get("r_frame_rate"))
    count = int(picture.get("nb_frames") or 0)
    if count <= 0:
        duration = float(picture.get("duration") or probe.get("format", {}).get("duration") or 0)
        count = max(1, round(duration * fps))
    frames = Frames(
        width=int(picture["width"]), height=int(picture["height"]), count=count, source=video.path
    )
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    audio = Audio(video.path) if has_audio else None
    return (frames, audio, fps, 8, "sRGB"), None


_RESAMPLE = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def node_image_scale(
    ctx: NodeContext, image: Frames, upscale_method: str, width: int, height: int, crop: str
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    if width == 0 and height == 0:
        return (image,), None
    if width == 0:
        width = max(1, round(image.width * height / image.height))
    if height == 0:
        height = max(1, round(image.height * width / image.width))
    if image.still is None:
        scaled = replace(image, width=width, height=height, ops=(*image.ops, Scale(width, height, crop)))
        return (scaled,), None
    picture = image.still
    if crop == "center":
        picture = ImageOps.fit(picture, (width, height), method=_RESAMPLE[upscale_method])
    else:
        picture = picture.resize((width, height), _RESAMPLE[upscale_method])
    return (replace(image, width=width, height=height, still=picture),), None


def node_repeat_image_batch(
    ctx: NodeContext, image: Frames, amount: int
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    # A video's frames repeat by looping the file: right while every op works frame by frame.
    if any(isinstance(op, FrameRange) for op in image.ops):
        raise NodeFailure(
            "NotImplementedError", "the fake ComfyUI cannot repeat a frame range of a video (ImageFromBatch)"
        )
    return (replace(image, count=image.count * amount, source_loops=image.source_loops * amount),), None


def node_image_from_batch(
    ctx: NodeContext, image: Frames, batch_index: int, length: int
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    # As the real node: a negative index counts from the end, then the start is clamped into the
    # batch and the length cut to what is left (at least one frame comes out).
    if batch_index < 0:
        batch_index += image.count
    start = max(0, min(image.count - 1, batch_index))
    count = min(image.count - start, length)
    if image.still is not None:
        return (replace(image, count=count),), None
    return (replace(image, count=count, ops=(*image.ops, FrameRange(start, count))),), None


_NOT_CONNECTED: Any = object()  # an optional input absent from the graph (a connected one may carry None)


def node_image_composite_masked(
    ctx: NodeContext,
    destination: Frames,
    source: Frames,
    x: int,
    y: int,
    resize_source: bool,
    mask: Any = _NOT_CONNECTED,
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    if mask is not _NOT_CONNECTED:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI composites without a mask only")
    if resize_source:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI pastes the source at its own size only")
    if source.still is None:
        raise NodeFailure(
            "NotImplementedError", "the fake ComfyUI pastes a still source only, not a video's frames"
        )
    # The real node repeats the source over the destination's frames (all the same still here) and
    # clamps x, y to the destination: what does not fit is cut, a paste at or past the edge is none.
    x, y = min(x, destination.width), min(y, destination.height)
    visible = (min(source.width, destination.width - x), min(source.height, destination.height - y))
    if 0 in visible:
        return (destination,), None
    picture = source.still.crop((0, 0, *visible))
    if destination.still is None:
        return (replace(destination, ops=(*destination.ops, Paste(picture, x, y))),), None
    composite = destination.still.copy()
    composite.paste(picture, (x, y))
    return (replace(destination, still=composite),), None


def node_create_video(
    ctx: NodeContext, images: Frames, fps: float, audio: Audio | None = None, bit_depth: int = 8
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    return (VideoSpec(frames=images, fps=float(fps), audio=audio),), None


def _next_counter(folder: Path, name: str) -> int:
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)_")
    counters = (
        [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))] if folder.is_dir() else []
    )
    return max(counters, default=0) + 1


def _output_folder(ctx: NodeContext, filename_prefix: str) -> tuple[Path, str, str]:
    """(folder, subfolder, name) of a save node's prefix; refused outside the output folder."""
    normalized = os.path.normpath(filename_prefix)
    subfolder, name = os.path.dirname(normalized), os.path.basename(normalized)
    folder = (ctx.output_dir / subfolder).resolve()
    if not folder.is_relative_to(ctx.output_dir.resolve()):
        raise NodeFailure(
            "Exception",
            "**** ERROR: Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {folder}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder, subfolder, name


def node_save_video(
    ctx: NodeContext, video: Any, filename_prefix: str, format: str = "auto", **nested: Any
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    # The nested DynamicCombo values arrive as dotted keys, as in the API graph.
    encoding = nested.get("format.codec.encoding")
    crf = nested.get("format.codec.encoding.crf") if encoding == "re-encode" else None
    color_space = nested.get("format.codec.encoding.color_space") if encoding == "re-encode" else None
    if color_space not in (None, "auto", "sRGB"):
        raise NodeFailure("NotImplementedError", f"the fake ComfyUI writes SDR only, not {color_space!r}")
    if format not in ("auto", "mp4"):
        if format in ("mkv", "webm"):
            raise NodeFailure("NotImplementedError", f"the fake ComfyUI writes MP4 only, not {format!r}")
        raise NodeFailure("TypeError", "SaveVideo.execute() missing 1 required positional argument: 'format'")
    if isinstance(video, VideoFile):
        frames, audio, fps, *_rest = node_get_video_components(ctx, video)[0]
        video = VideoSpec(frames=frames, fps=fps, audio=audio)
    folder, subfolder, name = _output_folder(ctx, filename_prefix)
    filename = f"{name}_{_next_counter(folder, name):05}_.mp4"
    _encode(ctx, video, folder / filename, crf=crf)
    ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}], "animated": [True]}
    return (video,), ui


def _picture_graph(frames: Frames, scratch: Path, *, rate: Fraction | None = None) -> tuple[list[str], str]:
    """ffmpeg inputs and a filter graph whose pad ``[pictures]`` gives ``frames``' pictures in
    order: the still looped (at ``rate``, when given), or the source video's decoded frames
    (looped ``source_loops`` times) through ``ops``. Inputs after these are the caller's."""
    if frames.still is not None:
        still = scratch / "still.png"
        frames.still.save(still)
        looped = ["-loop", "1", *(["-framerate", str(rate)] if rate is not None else []), "-i", str(still)]
        return looped, "[0:v]null[pictures]"
    assert frames.source is not None
    args = ["-stream_loop", str(frames.source_loops - 1), "-i", str(frames.source)]
    segments: list[str] = []
    pad, chain = "0:v", []
    for op in frames.ops:
        if isinstance(op, Scale):
            w, h = op.width, op.height
            chain.append(
                f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}"
                if op.crop == "center"
                else f"scale={w}:{h}"
            )
        elif isinstance(op, FrameRange):
            end = op.start + op.count
            chain.append(f"trim=start_frame={op.start}:end_frame={end},setpts=PTS-STARTPTS")
        else:
            # The still is one frame at time 0 and overlay repeats a finished input's last frame,
            # so every frame from time 0 on gets it.
            index = args.count("-i")
            picture = scratch / f"paste{index}.png"
            op.picture.save(picture)
            args += ["-i", str(picture)]
            chain.append("setpts=PTS-STARTPTS")
            segments.append(f"[{pad}]{','.join(chain)}[main{index}]")
            segments.append(f"[main{index}][{index}:v]overlay=x={op.x}:y={op.y}:format=rgb[pasted{index}]")
            pad, chain = f"pasted{index}", []
    segments.append(f"[{pad}]{','.join(chain) or 'null'}[pictures]")
    return args, ";".join(segments)


def _run_ffmpeg(args: list[str], partial: Path, exception_type: str) -> None:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-v", "error", *args, str(partial)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise NodeFailure(exception_type, f"ffmpeg failed: {proc.stderr.strip()[-400:]}")


def _encode(ctx: NodeContext, video: VideoSpec, dest: Path, *, crf: float | None = None) -> None:
    """As the real SaveVideo of frames (VideoFromComponents.save_to): RGB to BT.709 limited
    range, tagged BT.709 with an sRGB transfer, libx264 at ``crf`` (x264's default 23 when None).
    The preset is ultrafast (the real one x264's default, medium): the stand-in's speed matters."""
    frames = video.frames
    overrides = _resolve_overrides(ctx.overrides, frames, video.fps)
    fps = Fraction(overrides.fps or video.fps).limit_denominator(1001)
    count = overrides.frames if overrides.frames is not None else frames.count
    width, height = overrides.size or (frames.width, frames.height)
    audio = None if overrides.drop_audio else video.audio
    with tempfile.TemporaryDirectory(prefix="fake-comfy-") as scratch:
        args, graph = _picture_graph(frames, Path(scratch), rate=fps if frames.still is not None else None)
        filters = [] if frames.still is not None else [f"fps={fps}"]
        if (width, height) != (frames.width, frames.height):
            filters.append(f"scale={width}:{height}")
        # The real node converts its RGB frames with the BT.709 matrix (a decoded video's frames
        # were made RGB by their tags, BT.601 when untagged: scale's "auto" input does the same).
        filters.append("scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int")
        filters.append("format=yuv420p")
        audio_input = args.count("-i")
        if audio is not None:
            args += ["-i", str(audio.path)]
        args += ["-filter_complex", f"{graph};[pictures]{','.join(filters)}[video]", "-map", "[video]"]
        if audio is not None:
            args += ["-map", f"{audio_input}:a:0", "-c:a", "aac"]
        # -t alone (no -frames:v): a frame limit would end the audio early.
        args += ["-t", f"{float(count / fps):.6f}", "-r", str(fps)]
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", f"{23.0 if crf is None else crf:g}"]
        args += ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709"]
        args += ["-color_trc", "iec61966-2-1", "-color_range", "tv"]
        args += ["-metadata", f"comment=written by the fake ComfyUI {FAKE_VERSION} (a stand-in)"]
        args += ["-metadata", "prompt=" + json.dumps(ctx.prompt, separators=(",", ":"))]
        partial = dest.with_name(dest.name + ".part.mp4")
        _run_ffmpeg(args, partial, "av.error.ValueError")
        os.replace(partial, dest)


def node_save_chunk(
    ctx: NodeContext, images: Frames, filename_prefix: str, motion_frames: int, motion: Any = _NOT_CONNECTED
) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
    """WanWorkerSaveChunk (comfyui_nodes/wan_worker_nodes/chunk_io.py): the frames as raw rgb24,
    frame after frame, for the worker to encode. The stand-in has no windows, so no motion file."""
    if motion is not _NOT_CONNECTED:
        raise NodeFailure("NotImplementedError", "the fake ComfyUI does not write motion frames")
    folder, subfolder, name = _output_folder(ctx, filename_prefix)
    overrides = _resolve_overrides(ctx.overrides, images, 0.0)  # fps and audio mean nothing here
    count = overrides.frames if overrides.frames is not None else images.count
    width, height = overrides.size or (images.width, images.height)
    filename = f"{name}_{_next_counter(folder, name):05}_.rgb"
    _write_raw_frames(images, folder / filename, width=width, height=height, count=count)
    ui = {
        "images": [{"filename": filename, "subfolder": subfolder, "type": "output"}],
        "wan_chunk": [{"width": width, "height": height, "frames": count, "motion_frames": 0}],
    }
    return (), ui


def _write_raw_frames(frames: Frames, dest: Path, *, width: int, height: int, count: int) -> None:
    """Exactly ``count`` frames of ``width`` x ``height`` rgb24 (a video's decoded frames, no fps
    conversion; more than it has repeat the last), written beside ``dest`` then renamed."""
    with tempfile.TemporaryDirectory(prefix="fake-comfy-") as scratch:
        args, graph = _picture_graph(frames, Path(scratch))
        filters = []
        if (width, height) != (frames.width, frames.height):
            filters.append(f"scale={width}:{height}")
        if frames.still is None and count > frames.count:
            filters.append(f"tpad=stop_mode=clone:stop={count - frames.count}")
        filters.append("format=rgb24")
        args += ["-filter_complex", f"{graph};[pictures]{','.join(filters)}[frames]", "-map", "[frames]"]
        args += ["-frames:v", str(count), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24"]
        partial = dest.with_name(dest.name + ".part")
        _run_ffmpeg(args, partial, "RuntimeError")
        written, expected = partial.stat().st_size, width * height * 3 * count
        if written != expected:
            partial.unlink()
            raise NodeFailure(
                "RuntimeError",
                f"the fake ComfyUI rendered {written} bytes of frames, not {expected} "
                f"({count} frames of {width}x{height}): the video has fewer frames than it said",
            )
        os.replace(partial, dest)


NODE_FUNCTIONS: dict[str, Callable[..., tuple[tuple[Any, ...], dict[str, Any] | None]]] = {
    "LoadImage": node_load_image,
    "LoadVideo": node_load_video,
    "GetVideoComponents": node_get_video_components,
    "ImageScale": node_image_scale,
    "RepeatImageBatch": node_repeat_image_batch,
    "CreateVideo": node_create_video,
    "SaveVideo": node_save_video,
    "ImageFromBatch": node_image_from_batch,
    "ImageCompositeMasked": node_image_composite_masked,
    "WanWorkerSaveChunk": node_save_chunk,
}


# -- execution order -------------------------------------------------------------------------


class ExecutionOrder:
    """The order a real server runs nodes in: a depth-first staging from the outputs, then
    among the ready nodes an output node first, else one that feeds an output (one or two
    links away), else the first ready node in staging order. Cached nodes are skipped,
    except output nodes, which re-report their cached result."""

    def __init__(self, prompt: dict[str, Any], cached: set[str]) -> None:
        self.prompt = prompt
        self.cached = cached
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocks: dict[str, list[str]] = {}

    def add(self, root: str) -> None:
        stack, links = [root], []
        while stack:
            node_id = stack.pop()
            if node_id in self.pending:
                continue
            self.pending[node_id] = None
            self.block_count[node_id] = 0
            self.blocks[node_id] = []
            for value in self.prompt[node_id]["inputs"].values():
                if is_link(value) and str(value[0]) not in self.cached:
                    stack.append(str(value[0]))
                    links.append((str(value[0]), node_id))
        for source, target in links:
            if target not in self.blocks[source]:
                self.blocks[source].append(target)
                self.block_count[target] += 1

    def _is_output(self, node_id: str) -> bool:
        return NODE_CLASSES[self.prompt[node_id]["class_type"]]["output_node"]

    def next(self) -> str | None:
        ready = [n for n in self.pending if self.block_count[n] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(b) for b in self.blocks[node_id]):
                return node_id
        for node_id in ready:
            if any(self._is_output(b2) for b in self.blocks[node_id] for b2 in self.blocks[b]):
                return node_id
        return ready[0]

    def done(self, node_id: str) -> None:
        self.pending.pop(node_id, None)
        for target in self.blocks[node_id]:
            self.block_count[target] -= 1


def node_signatures(prompt: dict[str, Any], input_dir: Path) -> dict[str, str]:
    """A content signature per node: class, inputs, upstream signatures, loaded file content."""
    signatures: dict[str, str] = {}

    def signature(node_id: str, trail: tuple[str, ...] = ()) -> str:
        if node_id in signatures:
            return signatures[node_id]
        node = prompt[node_id]
        parts: list[Any] = [node["class_type"]]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and str(value[0]) in prompt and str(value[0]) not in trail:
                parts.append((name, signature(str(value[0]), (*trail, node_id)), value[1]))
            else:
                parts.append((name, json.dumps(value, sort_keys=True, default=str)))
        if node["class_type"] in ("LoadImage", "LoadVideo"):
            value = node["inputs"].get("image", node["inputs"].get("file"))
            parts.append(_file_fingerprint(input_dir, value))
        signatures[node_id] = hashlib.sha256(repr(parts).encode()).hexdigest()
        return signatures[node_id]

    for node_id in prompt:
        signature(node_id)
    return signatures


def _file_fingerprint(input_dir: Path, name: Any) -> str:
    if not isinstance(name, str):
        return ""
    path = input_dir / _strip_annotation(name)[0]
    try:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError:
        return "missing"


# -- faults ---------------------------------------------------------------------------------


@dataclass
class Fault:
    kind: str
    params: dict[str, Any]
    remaining: int | None  # prompts left; None = until cleared


@dataclass
class QueueItem:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class _Run:
    """One prompt being executed."""

    item: QueueItem
    client_id: str | None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    messages: list[list[Any]] = field(default_factory=list)
    ui_outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: dict[str, Fault] = field(default_factory=dict)


class _Outcome(Exception):
    def __init__(self, event: str, data: dict[str, Any]) -> None:
        super().__init__(event)
        self.event = event
        self.data = data


# -- the server -------------------------------------------------------------------------------


class FakeComfyServer:
    """State and handlers; runs on one asyncio loop (see ``FakeComfyUI`` for threads)."""

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        *,
        temp_dir: Path | None = None,
        max_upload_size: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.input_dir = Path(input_dir).resolve()
        self.output_dir = Path(output_dir).resolve()
        self.temp_dir = Path(temp_dir).resolve() if temp_dir else self.output_dir.parent / "fake-comfy-temp"
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.max_upload_size = max_upload_size
        self.sockets: dict[str, tuple[web.WebSocketResponse, web.Request]] = {}
        self.ws_connects: list[str] = []  # client ids, one per websocket opened (for tests)
        self.pending: list[QueueItem] = []
        self.running: _Run | None = None
        self.current_node: str | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, tuple[tuple[Any, ...], dict[str, Any] | None]] = {}
        self.last_ui: dict[str, dict[str, Any]] = {}
        self.interrupt_requested = False
        self.free_requested = False
        self._counter = 0
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._preview = _tiny_jpeg()

    # -- faults (thread safe) --

    def set_fault(self, kind: str, *, times: int | None = 1, **params: Any) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULT_KINDS)}")
        with self._faults_lock:
            self._faults.append(Fault(kind, params, times))

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, kind: str) -> Fault | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.kind == kind and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    # -- app --

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_upload_size)
        router = app.router
        router.add_get("/ws", self.handle_ws)
        router.add_post("/prompt", self.handle_post_prompt)
        router.add_get("/prompt", self.handle_get_prompt)
        router.add_get("/queue", self.handle_get_queue)
        router.add_post("/queue", self.handle_post_queue)
        router.add_post("/interrupt", self.handle_interrupt)
        router.add_get("/history", self.handle_get_history_all)
        router.add_get("/history/{prompt_id}", self.handle_get_history)
        router.add_post("/history", self.handle_post_history)
        router.add_get("/view", self.handle_view)
        router.add_post("/upload/image", self.handle_upload)
        router.add_get("/system_stats", self.handle_system_stats)
        router.add_get("/features", self.handle_features)
        router.add_get("/object_info", self.handle_object_info)
        router.add_get("/object_info/{node_class}", self.handle_object_info_one)
        router.add_get("/embeddings", self.handle_empty_list)
        router.add_post("/free", self.handle_free)
        router.add_post("/fake/fault", self.handle_fault)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self._wake = asyncio.Event()
        self._worker = asyncio.create_task(self._prompt_worker())

    async def _on_shutdown(self, app: web.Application) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
        for ws, _ in list(self.sockets.values()):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    # -- websocket --

    async def _send(self, event: str, data: dict[str, Any], sid: str | None) -> None:
        text = json.dumps({"type": event, "data": data})
        targets = (
            list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        )
        for ws, _ in targets:
            with contextlib.suppress(Exception):
                await ws.send_str(text)

    async def _send_bytes(self, payload: bytes, sid: str | None) -> None:
        targets = (
            list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        )
        for ws, _ in targets:
            with contextlib.suppress(Exception):
                await ws.send_bytes(payload)

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    async def _broadcast_status(self) -> None:
        await self._send(
            "status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}, None
        )

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            self.sockets.pop(sid, None)  # a reconnect replaces the old socket
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = (ws, request)
        self.ws_connects.append(sid)
        try:
            status = {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}, "sid": sid}
            await self._send("status", status, sid)
            if self.running and self.running.client_id == sid and self.current_node is not None:
                await self._send("executing", {"node": self.current_node}, sid)
            first = True
            async for message in ws:
                if message.type == WSMsgType.TEXT and first:
                    with contextlib.suppress(ValueError, AttributeError):
                        if json.loads(message.data).get("type") == "feature_flags":
                            await self._send("feature_flags", SERVER_FEATURES, sid)
                first = False
        finally:
            # As on the real server: the closing socket's id is dropped even if a newer
            # socket took it over. Clients close the old socket before reconnecting.
            self.sockets.pop(sid, None)
        return ws

    async def _drop_socket(self, sid: str | None) -> None:
        if sid is None or sid not in self.sockets:
            return
        ws, request = self.sockets.pop(sid)
        transport = request.transport
        if transport is not None:
            transport.abort()
        else:
            await ws.close(code=WSCloseCode.ABNORMAL_CLOSURE)

    # -- HTTP: prompts and queue --

    async def handle_post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text="500 Internal Server Error\n\nServer got itself in trouble")
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response(
                _top_error("no_prompt", "No prompt provided", "No prompt provided"), status=400
            )
        prompt_id = body.get("prompt_id")
        if prompt_id is not None and not _is_canonical_uuid(prompt_id):
            details = (
                "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                "omit it to let the server generate one"
            )
            return web.json_response(
                _top_error("invalid_prompt_id", "prompt_id must be a valid UUID", details), status=400
            )
        prompt = copy.deepcopy(body["prompt"])
        if not isinstance(prompt, dict):
            return web.json_response(
                _top_error("invalid_prompt", "Invalid prompt", "prompt must be an object"), status=400
            )
        prompt = {str(k): v for k, v in prompt.items()}
        status, result, outputs = PromptValidator(prompt, self.input_dir).validate()
        if status != 200:
            return web.json_response(result, status=status)
        node_errors: dict[str, Any] = result
        reject = self._take_fault("reject")
        if reject is not None:
            return web.json_response(
                _failed_validation_body(self._injected_rejection(prompt, reject, outputs)), status=400
            )
        partial = self._take_fault("partial_reject")
        if partial is not None:
            node_errors = {**node_errors, **self._injected_rejection(prompt, partial, outputs)}
        self._counter += 1
        number = self._counter
        if "number" in body:
            with contextlib.suppress(TypeError, ValueError):
                number = float(body["number"])
        if body.get("front"):
            number = -number
        prompt_id = prompt_id or str(uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        extra["create_time"] = now_ms()
        self.pending.append(QueueItem(number, prompt_id, prompt, extra, outputs))
        self.pending.sort(key=lambda item: item.number)
        await self._broadcast_status()
        assert self._wake is not None
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    def _injected_rejection(self, prompt: dict[str, Any], fault: Fault, outputs: list[str]) -> dict[str, Any]:
        node_id = str(fault.params.get("node") or next(iter(prompt)))
        node = prompt.get(node_id, {"class_type": "Unknown", "inputs": {}})
        plain_inputs = [k for k, v in node.get("inputs", {}).items() if not is_link(v)]
        input_name = fault.params.get("input_name") or (plain_inputs[0] if plain_inputs else "model_name")
        received = fault.params.get(
            "received_value", node.get("inputs", {}).get(input_name, "wan2.2_animate_14B_bf16.safetensors")
        )
        error = {
            "type": "value_not_in_list",
            "message": "Value not in list",
            "details": f"{input_name}: '{received}' not in []",
            "extra_info": {"input_name": input_name, "input_config": [[], {}], "received_value": received},
        }
        return {
            node_id: {"errors": [error], "dependent_outputs": outputs, "class_type": node.get("class_type")}
        }

    async def handle_get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def handle_get_queue(self, request: web.Request) -> web.Response:
        running = [self.running.item.as_list()] if self.running else []
        return web.json_response(
            {"queue_running": running, "queue_pending": [item.as_list() for item in self.pending]}
        )

    async def handle_post_queue(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self.pending.clear()
            await self._broadcast_status()
        delete = body.get("delete")
        if isinstance(delete, list):
            for prompt_id in delete:
                before = len(self.pending)
                self.pending = [item for item in self.pending if item.prompt_id != prompt_id]
                if len(self.pending) != before:
                    await self._broadcast_status()
        return web.Response(status=200)

    async def handle_interrupt(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        target = body.get("prompt_id")
        if target is None or (self.running is not None and self.running.item.prompt_id == target):
            self.interrupt_requested = True
        return web.Response(status=200)

    async def handle_get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def handle_get_history_all(self, request: web.Request) -> web.Response:
        items = list(self.history.items())
        max_items = request.query.get("max_items")
        if max_items and max_items.isdigit():
            items = items[-int(max_items) :] if int(max_items) else []
        return web.json_response(dict(items))

    async def handle_post_history(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or []:
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def handle_free(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("free_memory"):
            if self.running is None:
                self.cache.clear()
            else:
                self.free_requested = True
        return web.Response(status=200)

    async def handle_fault(self, request: web.Request) -> web.Response:
        body = await _json_or_empty(request)
        if body.get("clear"):
            self.clear_faults()
            return web.json_response({"faults": []})
        params = {k: v for k, v in body.items() if k not in ("kind", "times")}
        try:
            self.set_fault(str(body.get("kind")), times=body.get("times", 1), **params)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        with self._faults_lock:
            active = [{"kind": f.kind, "remaining": f.remaining, **f.params} for f in self._faults]
        return web.json_response({"faults": active})

    # -- HTTP: files --

    def _dir_for(self, kind: str | None) -> Path | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(
            kind or "input"
        )

    async def handle_view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, annotated = _strip_annotation(query["filename"])
        if not filename or filename.startswith("/") or ".." in filename:
            return web.Response(status=400)
        base = self._dir_for(annotated if query["filename"] != filename else query.get("type", "output"))
        if base is None:
            return web.Response(status=400)
        folder = base
        if "subfolder" in query:
            folder = (base / query["subfolder"]).resolve()
            if not folder.is_relative_to(base):
                return web.Response(status=403)
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        headers = {"Content-Disposition": f'filename="{path.name}"', "Content-Type": content_type}
        return web.FileResponse(path, headers=headers)

    async def handle_upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        base = self._dir_for(kind)
        if base is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder") or "")
        folder = (base / os.path.normpath(subfolder)).resolve() if subfolder else base
        filename = image.filename
        target = (folder / filename).resolve()
        if not target.is_relative_to(base):
            return web.Response(status=400)
        folder.mkdir(parents=True, exist_ok=True)
        content = image.file.read()
        overwrite = str(post.get("overwrite") or "") in ("true", "1")
        if not overwrite:
            stem, suffix = os.path.splitext(filename)
            attempt = 1
            while target.exists():
                if hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(content).digest():
                    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})
                filename = f"{stem} ({attempt}){suffix}"
                target = folder / filename
                attempt += 1
        target.write_bytes(content)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    # -- HTTP: info --

    async def handle_system_stats(self, request: web.Request) -> web.Response:
        total, free = 8 * 1024**3, 6 * 1024**3
        return web.json_response(
            {
                "system": {
                    "os": sys.platform,
                    "ram_total": total,
                    "ram_free": free,
                    "comfyui_version": FAKE_VERSION,
                    "required_frontend_version": "none (fake ComfyUI, no frontend)",
                    "comfy_package_versions": [],
                    "python_version": sys.version,
                    "pytorch_version": "none (fake ComfyUI stand-in, no models)",
                    "embedded_python": False,
                    "deploy_environment": "fake",
                    "argv": ["localdev/fake_comfyui.py"],
                },
                "devices": [
                    {
                        "name": "fake (stand-in for tests, no GPU)",
                        "type": "cpu",
                        "index": None,
                        "vram_total": total,
                        "vram_free": free,
                        "torch_vram_total": total,
                        "torch_vram_free": free,
                    }
                ],
            }
        )

    async def handle_features(self, request: web.Request) -> web.Response:
        return web.json_response({**SERVER_FEATURES, "max_upload_size": self.max_upload_size})

    def object_info(self) -> dict[str, Any]:
        images = _list_input_files(self.input_dir, IMAGE_EXTENSIONS)
        videos = _list_input_files(self.input_dir, VIDEO_EXTENSIONS)
        info: dict[str, Any] = {}
        for name, spec in NODE_CLASSES.items():
            entry = copy.deepcopy(spec)
            entry["name"] = name
            entry["output_is_list"] = [False] * len(entry["output"])
            entry["input_order"] = {section: list(inputs) for section, inputs in entry["input"].items()}
            for inputs in entry["input"].values():
                for config in inputs.values():
                    if config[0] == FILE_LIST:
                        config[0] = images
                    elif len(config) > 1 and config[1].get("options") == FILE_LIST:
                        config[1]["options"] = videos
            info[name] = entry
        return info

    async def handle_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.object_info())

    async def handle_object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        info = self.object_info()
        return web.json_response({name: info[name]} if name in info else {})

    async def handle_empty_list(self, request: web.Request) -> web.Response:
        return web.json_response([])

    # -- execution --

    async def _prompt_worker(self) -> None:
        assert self._wake is not None
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            item = self.pending.pop(0)
            run = _Run(item=item, client_id=item.extra_data.get("client_id"))
            self.running = run
            try:
                await self._execute(run)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in the fake must not kill its queue
                print(
                    f"fake ComfyUI: internal error while running {item.prompt_id}: {exc!r}", file=sys.stderr
                )
            finally:
                self.running = None
                self.current_node = None
                if self.free_requested:
                    self.cache.clear()
                    self.free_requested = False

    async def _send_run(
        self, run: _Run, event: str, data: dict[str, Any], *, to_history: bool = False
    ) -> None:
        if to_history:
            run.messages.append([event, data])
        if run.client_id is not None:
            await self._send(event, data, run.client_id)

    async def _progress_state(
        self, run: _Run, node_id: str, state: str, value: float, maximum: float
    ) -> None:
        prompt_id = run.item.prompt_id
        run.progress[node_id] = {
            "value": value,
            "max": maximum,
            "state": state,
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        # With no client_id the real server broadcasts these (and only these) to everyone.
        await self._send(
            "progress_state", {"prompt_id": prompt_id, "nodes": copy.deepcopy(run.progress)}, run.client_id
        )

    async def _execute(self, run: _Run) -> None:
        item = run.item
        prompt_id, prompt = item.prompt_id, item.prompt
        self.interrupt_requested = False  # a stale interrupt does not reach the next prompt
        await self._broadcast_status()
        await self._send_run(
            run, "execution_start", {"prompt_id": prompt_id, "timestamp": now_ms()}, to_history=True
        )
        signatures = await asyncio.to_thread(node_signatures, prompt, self.input_dir)
        self.cache = {sig: value for sig, value in self.cache.items() if sig in set(signatures.values())}
        cached_rerun = self._take_fault("cached_rerun")
        if cached_rerun is not None and all(o in self.last_ui for o in item.outputs):
            cached = list(prompt)
        else:
            cached = [nid for nid in prompt if signatures[nid] in self.cache]
        for kind in ("runtime_error", "oom", "drop_socket", "hang", "slow", "progress"):
            fault = self._take_fault(kind)
            if fault is not None:
                run.faults[kind] = fault
        data = {"nodes": cached, "prompt_id": prompt_id, "timestamp": now_ms()}
        await self._send_run(run, "execution_cached", data, to_history=True)

        order = ExecutionOrder(prompt, set(cached))
        for output_id in item.outputs:
            order.add(output_id)
        results: dict[str, tuple[Any, ...]] = {}
        try:
            while (node_id := order.next()) is not None:
                if node_id in cached:
                    await self._report_cached_output(
                        run, node_id, signatures[node_id], cached_rerun is not None
                    )
                else:
                    await self._run_node(run, node_id, signatures, results)
                order.done(node_id)
        except _Outcome as outcome:
            await self._send_run(run, outcome.event, outcome.data, to_history=True)
            await self._finish(run, success=False)
            return
        await self._send_run(
            run, "execution_success", {"prompt_id": prompt_id, "timestamp": now_ms()}, to_history=True
        )
        await self._finish(run, success=True)

    async def _report_cached_output(self, run: _Run, node_id: str, signature: str, forced: bool) -> None:
        ui = self.last_ui.get(node_id) if forced else (self.cache.get(signature) or ((), None))[1]
        if ui:
            run.ui_outputs[node_id] = ui
            data = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.item.prompt_id}
            await self._send_run(run, "executed", data)
        await self._progress_state(run, node_id, "finished", 1, 1)

    async def _run_node(
        self,
        run: _Run,
        node_id: str,
        signatures: dict[str, str],
        results: dict[str, tuple[Any, ...]],
    ) -> None:
        prompt_id = run.item.prompt_id
        node = run.item.prompt[node_id]
        class_type = node["class_type"]
        await self._progress_state(run, node_id, "running", 0.0, 1.0)
        await self._send_run(
            run, "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
        )
        self.current_node = node_id
        self._check_interrupt(run, node_id)
        kwargs = self._node_inputs(node, signatures, results)
        await self._apply_timing_faults(run, node_id)
        failure = self._injected_failure(run, node_id)
        if failure is not None:
            raise self._error_outcome(run, node_id, kwargs, failure)
        overrides = self._save_overrides() if class_type in SAVE_CLASSES else SaveOverrides()
        ctx = NodeContext(self.input_dir, self.output_dir, run.item.prompt, overrides)
        try:
            outputs, ui = await asyncio.to_thread(NODE_FUNCTIONS[class_type], ctx, **kwargs)
        except NodeFailure as exc:
            raise self._error_outcome(run, node_id, kwargs, exc) from exc
        except Exception as exc:
            failure = NodeFailure(type(exc).__name__, str(exc))
            raise self._error_outcome(run, node_id, kwargs, failure) from exc
        results[node_id] = outputs
        self.cache[signatures[node_id]] = (outputs, ui)
        run.executed.append(node_id)
        if ui:
            run.ui_outputs[node_id] = ui
            self.last_ui[node_id] = ui
            data = {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": prompt_id}
            await self._send_run(run, "executed", data)
        await self._progress_state(run, node_id, "finished", 1.0, 1.0)
        drop = run.faults.get("drop_socket")
        if drop is not None and str(drop.params.get("after_node") or node_id) == node_id:
            del run.faults["drop_socket"]
            await self._drop_socket(run.client_id)

    def _node_inputs(
        self, node: dict[str, Any], signatures: dict[str, str], results: dict[str, tuple[Any, ...]]
    ) -> dict[str, Any]:
        declared = NODE_CLASSES[node["class_type"]]["input"]
        names = {**declared.get("required", {}), **declared.get("optional", {})}
        kwargs: dict[str, Any] = {}
        for name, value in node["inputs"].items():
            if name not in names and node["class_type"] != "SaveVideo":
                continue
            if is_link(value):
                source = str(value[0])
                outputs = results.get(source) or self.cache[signatures[source]][0]
                value = outputs[value[1]]
            kwargs[name.replace(".", "_")] = value
        return kwargs

    def _check_interrupt(self, run: _Run, node_id: str) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            raise _Outcome(
                "execution_interrupted",
                {
                    "prompt_id": run.item.prompt_id,
                    "node_id": node_id,
                    "node_type": run.item.prompt[node_id]["class_type"],
                    "executed": list(run.executed),
                    "timestamp": now_ms(),
                },
            )

    def _targets(self, run: _Run, fault: Fault | None, node_id: str) -> bool:
        if fault is None:
            return False
        return str(fault.params.get("node") or run.item.outputs[0]) == node_id

    async def _apply_timing_faults(self, run: _Run, node_id: str) -> None:
        slow = run.faults.get("slow")
        if slow is not None:
            await asyncio.sleep(float(slow.params.get("seconds", 1.0)))
        progress = run.faults.get("progress")
        if self._targets(run, progress, node_id):
            assert progress is not None
            steps = int(progress.params.get("steps", 4))
            for step in range(1, steps + 1):
                await asyncio.sleep(float(progress.params.get("step_s", 0.05)))
                self._check_interrupt(run, node_id)
                data = {"value": step, "max": steps, "prompt_id": run.item.prompt_id, "node": node_id}
                await self._send("progress", data, run.client_id)
                await self._progress_state(run, node_id, "running", float(step), float(steps))
                if progress.params.get("preview", True) and run.client_id is not None:
                    payload = struct.pack(">II", PREVIEW_IMAGE_EVENT, JPEG_FORMAT) + self._preview
                    await self._send_bytes(payload, run.client_id)
        if self._targets(run, run.faults.get("hang"), node_id):
            while True:  # like a sampler loop: only an interrupt ends it
                await asyncio.sleep(0.05)
                self._check_interrupt(run, node_id)

    def _injected_failure(self, run: _Run, node_id: str) -> NodeFailure | None:
        error = run.faults.get("runtime_error")
        if self._targets(run, error, node_id):
            assert error is not None
            return NodeFailure(
                str(error.params.get("exception_type", "RuntimeError")),
                str(error.params.get("exception_message", "failure injected into the fake ComfyUI")),
            )
        oom = run.faults.get("oom")
        if self._targets(run, oom, node_id):
            return NodeFailure(
                "torch.OutOfMemoryError",
                "CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity of 79.19 GiB "
                "of which 1.12 GiB is free. (injected by the fake ComfyUI)",
            )
        return None

    def _error_outcome(
        self, run: _Run, node_id: str, kwargs: dict[str, Any], failure: NodeFailure
    ) -> _Outcome:
        node = run.item.prompt[node_id]
        shown = {
            k: [v if isinstance(v, str | int | float | bool) or v is None else f"<fake {type(v).__name__}>"]
            for k, v in kwargs.items()
        }
        return _Outcome(
            "execution_error",
            {
                "prompt_id": run.item.prompt_id,
                "node_id": node_id,
                "node_type": node["class_type"],
                "executed": list(run.executed),
                "exception_message": failure.exception_message,
                "exception_type": failure.exception_type,
                "traceback": [f'  File "localdev/fake_comfyui.py", in {node["class_type"]} (fake)\n'],
                "current_inputs": shown,
                "current_outputs": list(run.item.prompt),
                "timestamp": now_ms(),
            },
        )

    def _save_overrides(self) -> SaveOverrides:
        # Taken when SaveVideo runs; -1 means "a default that depends on what the graph
        # asked for", resolved in _encode.
        overrides = SaveOverrides()
        size = self._take_fault("wrong_size")
        if size is not None:
            overrides = replace(
                overrides, size=(int(size.params.get("width", -1)), int(size.params.get("height", -1)))
            )
        fps = self._take_fault("wrong_fps")
        if fps is not None:
            overrides = replace(overrides, fps=float(fps.params.get("fps", -1)))
        frames = self._take_fault("wrong_frames")
        if frames is not None:
            overrides = replace(overrides, frames=int(frames.params.get("frames", -1)))
        if self._take_fault("drop_audio") is not None:
            overrides = replace(overrides, drop_audio=True)
        return overrides

    async def _finish(self, run: _Run, *, success: bool) -> None:
        item = run.item
        meta = {
            nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
            for nid in run.ui_outputs
        }
        self.history[item.prompt_id] = {
            "prompt": copy.deepcopy(item.as_list()),
            "outputs": copy.deepcopy(run.ui_outputs) if success else {},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": run.messages,
            },
            "meta": meta if success else {},
        }
        self.running = None
        self.current_node = None
        await self._broadcast_status()
        await self._send_run(run, "executing", {"node": None, "prompt_id": item.prompt_id})


def _resolve_overrides(overrides: SaveOverrides, frames: Frames, fps: float) -> SaveOverrides:
    size = overrides.size
    if size is not None and -1 in size:
        size = (max(2, frames.width // 4 * 2), max(2, frames.height // 4 * 2))
    new_fps = overrides.fps
    if new_fps is not None and new_fps < 0:
        new_fps = 30.0 if abs(fps - 25.0) < 0.01 else 25.0
    count = overrides.frames
    if count is not None and count < 0:
        count = max(1, frames.count - 1)
    return replace(overrides, size=size, fps=new_fps, frames=count)


def _is_canonical_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def _json_or_empty(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (40, 120, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


# -- embedding and command line ------------------------------------------------------------


class FakeComfyUI:
    """The fake server in a background thread, for tests::

    server = FakeComfyUI(tmp / "in", tmp / "out").start()
    server.url, server.input_dir, server.output_dir, server.set_fault("oom"), server.stop()
    """

    def __init__(
        self,
        input_dir: Path,
        output_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_upload_size: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.server = FakeComfyServer(input_dir, output_dir, max_upload_size=max_upload_size)
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def input_dir(self) -> Path:
        return self.server.input_dir

    @property
    def output_dir(self) -> Path:
        return self.server.output_dir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set_fault(self, kind: str, *, times: int | None = 1, **params: Any) -> None:
        self.server.set_fault(kind, times=times, **params)

    def clear_faults(self) -> None:
        self.server.clear_faults()

    def history(self) -> dict[str, Any]:
        return self._call(lambda: copy.deepcopy(self.server.history))

    def connected_clients(self) -> list[str]:
        return self._call(lambda: list(self.server.sockets))

    def ws_connects(self, client_id: str | None = None) -> int:
        """How many websockets were opened (with that client id)."""
        return self._call(lambda: sum(1 for c in self.server.ws_connects if client_id in (None, c)))

    def queue_ids(self) -> tuple[list[str], list[str]]:
        """(running, pending) prompt ids."""

        def read() -> tuple[list[str], list[str]]:
            running = [self.server.running.item.prompt_id] if self.server.running else []
            return running, [item.prompt_id for item in self.server.pending]

        return self._call(read)

    def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def start(self, timeout_s: float = 10.0) -> FakeComfyUI:
        self._thread = threading.Thread(target=self._serve, name="fake-comfyui", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError("the fake ComfyUI did not start")
        if self._error is not None:
            raise RuntimeError(f"the fake ComfyUI failed to start: {self._error!r}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._runner, self.port = loop.run_until_complete(_start_site(self.server, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, runner = self._loop, self._runner
        if loop is None or runner is None or not loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(runner.cleanup(), loop)
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _start_site(server: FakeComfyServer, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(server.make_app(), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeComfyServer(
        args.input_dir, args.output_dir, temp_dir=args.temp_dir, max_upload_size=args.max_upload_size
    )
    runner, port = await _start_site(server, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"fake ComfyUI {FAKE_VERSION} (stand-in, no models) ready at http://{args.host}:{port} "
        f"input={server.input_dir} output={server.output_dir}",
        flush=True,
    )
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A fake ComfyUI 0.33.0 (model-free stand-in for tests/demo)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--temp-dir", type=Path, default=None)
    parser.add_argument(
        "--max-upload-size", type=int, default=DEFAULT_MAX_UPLOAD, help="bytes (default 100 MiB)"
    )
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        print("fake ComfyUI: ffmpeg and ffprobe must be installed", file=sys.stderr)
        return 2
    asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
