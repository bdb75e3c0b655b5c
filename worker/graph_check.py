"""Static checks of an API graph against the pinned stack's node catalogue, before submission.

``check_graph`` returns a list of problems (empty when the graph is fine). It makes the checks
ComfyUI 0.33.0's ``POST /prompt`` makes (classes exist, required inputs given, links point at
an existing output of a matching type, combo values allowed, INT/FLOAT within min/max, no
cycles) and those the server lets through (``../shared/comfyui/STACK.md`` section 5):

* unknown input names (a misspelled ``character_mask`` silently turns replacement into move mode),
  values of the wrong JSON type (``"1280"``, ``720.9`` and ``"false"`` are coerced, not refused),
  DynamicCombo values (``SaveVideo`` ``format`` / ``format.codec``), INT values off their step
  grid (width/height multiples of 16, window lengths 4n+1), exactly one output node and no node
  the output does not use (the server silently skips those);
* for Wan Animate graphs: every window in replacement mode with each conditioning input coming
  from the node that makes it (pose video, face crops, background, mask), windows chained in
  order (continue_motion, video_frame_offset, the re-generated frames trimmed), width/height the
  same everywhere, SAM2 device/precision/segmentor combinations that do not raise at run time;
* when given: fps of ``CreateVideo`` and the exact output frame count; model file names the
  manifest installs (``models/manifest.json``).

The catalogue is ``workflows/object_info_pinned.json``: the node classes our workflows use, cut
from the pinned stack's ``/object_info`` by ``python -m worker.graph_check --extract-catalogue``.

    python -m worker.graph_check --frames N [--workflow PATH]     # prints problems, exit 1 if any
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import itertools
import json
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from worker.apigraph import is_link, upstream
from worker.config import DEFAULT_WORKFLOW, REPO_ROOT
from worker.errors import WorkerError
from worker.models import LOADER_FOLDERS, MANIFEST_PATH, load_manifest

CATALOGUE_PATH = REPO_ROOT / "workflows" / "object_info_pinned.json"
# This repository's own node classes (comfyui_nodes/wan_worker_nodes): their catalogue entries.
REPO_NODES_PATH = REPO_ROOT / "comfyui_nodes" / "wan_worker_nodes" / "catalogue.json"
SHARED_CATALOGUE = REPO_ROOT.parent / "shared" / "comfyui" / "object_info_stack.json"
PINNED_STACK = (
    "ComfyUI 0.33.0 (783545f6); ComfyUI-WanAnimatePreprocess 1.0.3 (0e0b6a2a); ComfyUI-KJNodes 1.5.0 "
    "(3f200542); ComfyUI-segment-anything-2 1.0.1 (c59676b0); ComfyUI-VideoHelperSuite 1.7.9 (4ee72c06); "
    "comfyui_controlnet_aux 1.1.5 (e8b689a5)"
)

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
AUTOGROW = "COMFY_AUTOGROW_V3"
MATCH_TYPE = "COMFY_MATCHTYPE_V3"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

# Combos listing ComfyUI's input/ folder: job-specific names, checked by the node's own validation.
INPUT_FILE_COMBOS = {("LoadImage", "image"), ("LoadVideo", "file"), ("VHS_LoadVideo", "video")}

BUILT_IN_MODEL_VALUES = {"pixel_space"}
# Model inputs whose option list is the node's own fixed list (the pack's code), not a folder listing.
FIXED_MODEL_LISTS = {("DownloadAndLoadSAM2Model", "model")}
# The rest list the capture machine's models folder: checked against the manifest, never that list.
FOLDER_MODEL_INPUTS = set(LOADER_FOLDERS) - FIXED_MODEL_LISTS

# Pack nodes that Wan graphs must run through this repository's guard of them
# (comfyui_nodes/wan_worker_nodes): pack class -> (our class, why).
SAM2_PACK, SAM2_RELEASED = "Sam2Segmentation", "Sam2SegmentationReleased"
SAM2_SEGMENTERS = (SAM2_PACK, SAM2_RELEASED)
ONNX_PACK, ONNX_CHECKED = "OnnxDetectionModelLoader", "OnnxDetectionModelLoaderChecked"
PACK_GUARDS = {
    SAM2_PACK: (
        SAM2_RELEASED,
        "the pack's node keeps the whole video at 1024x1024 float32 and the tracking outputs on its "
        "instance until the next job (comfyui_nodes/wan_worker_nodes/sam2.py)",
    ),
    ONNX_PACK: (
        ONNX_CHECKED,
        "the pack's loader lets ONNX Runtime fall back to the CPU without a word when CUDA fails, "
        "and pose detection then takes minutes (comfyui_nodes/wan_worker_nodes/onnx.py)",
    ),
}

# Replacement mode: where each WanAnimateToVideo input must come from, as (class, output slot).
REPLACEMENT_SOURCES: dict[str, set[tuple[str, int]]] = {
    "reference_image": {("LoadImage", 0), ("ImageResizeKJv2", 0), ("ImageScale", 0)},
    "clip_vision_output": {("CLIPVisionEncode", 0)},
    "pose_video": {("DrawViTPose", 0)},
    "face_video": {("PoseAndFaceDetection", 1)},  # 512x512 crops, not drawn face landmarks
    "background_video": {("DrawMaskOnImage", 0)},
    "character_mask": {("BlockifyMask", 0), ("GrowMaskWithBlur", 0), (SAM2_PACK, 0), (SAM2_RELEASED, 0)},
}
REFLECT_PAD = "ImageBatchReflectPad"  # comfyui_nodes/wan_worker_nodes/reflect_pad.py
OTHER_SOURCES: dict[tuple[str, str], set[tuple[str, int]]] = {
    # Every conditioning video is made from the reflect-padded driving frames (windows.pad).
    ("PoseAndFaceDetection", "images"): {(REFLECT_PAD, 0)},
    (SAM2_PACK, "image"): {(REFLECT_PAD, 0)},
    (SAM2_RELEASED, "image"): {(REFLECT_PAD, 0)},
    ("DrawMaskOnImage", "image"): {(REFLECT_PAD, 0)},
    (SAM2_PACK, "bboxes"): {("PoseAndFaceDetection", 3)},  # not face_bboxes ("BBOX," matches)
    (SAM2_RELEASED, "bboxes"): {("PoseAndFaceDetection", 3)},
}
# Window conditioning: the core class, and this repository's class with the official mask layout
# (comfyui_nodes/wan_worker_nodes/animate.py), which replacement mode must use.
ANIMATE_CORE = "WanAnimateToVideo"
ANIMATE_OFFICIAL_MASK = "WanAnimateToVideoOfficialMask"
ANIMATE_CLASSES = (ANIMATE_CORE, ANIMATE_OFFICIAL_MASK)
# Chunks (worker/chunks.py): the output node of a chunk, and the previous chunk's frames.
SAVE_CHUNK = "WanWorkerSaveChunk"  # comfyui_nodes/wan_worker_nodes/chunk_io.py
LOAD_MOTION = "WanWorkerLoadMotionFrames"
OUTPUT_FRAMES = {"SaveVideo": "video", SAVE_CHUNK: "images"}  # output node -> its frames input
SIZE_NODES = (*ANIMATE_CLASSES, "PoseAndFaceDetection", "DrawViTPose")
# LoRAs: the core loaders only log the keys that do not fit the model and go on; this repository's
# loader (comfyui_nodes/wan_worker_nodes/lora.py) fails instead, and Wan graphs must use it.
LORA_CORE = ("LoraLoaderModelOnly", "LoraLoader")
LORA_STRICT = "StrictLoraLoaderModelOnly"


# How a window's own nodes lead back to its WanAnimateToVideo: images <- decode <- trim <- sampler.
_WINDOW_CHAIN = {
    "ImageFromBatch": "image",
    "VAEDecode": "samples",
    "TrimVideoLatent": "samples",
    "KSampler": "latent_image",
}


def animate_of(graph: Mapping[str, Any], node_id: str) -> str | None:
    """The WanAnimateToVideo whose latent ``node_id`` samples, trims, decodes or cuts (itself
    for a WanAnimateToVideo); None for a node of no window (preprocessing, models, the join)."""
    seen: set[str] = set()
    while node_id in graph and node_id not in seen:
        seen.add(node_id)
        node = graph[node_id]
        if node["class_type"] in ANIMATE_CLASSES:
            return node_id
        name = _WINDOW_CHAIN.get(node["class_type"])
        value = node["inputs"].get(name) if name is not None else None
        if not is_link(value):
            return None
        node_id = value[0]
    return None


def window_numbers(graph: Mapping[str, Any]) -> dict[str, int]:
    """The 1-based window of every node that belongs to one (see ``animate_of``). Windows are
    chained, so window k's WanAnimateToVideo depends on the k - 1 before it."""
    animates = {n for n, node in graph.items() if node["class_type"] in ANIMATE_CLASSES}
    order = {a: len(upstream(graph, a) & animates) for a in animates}
    return {n: order[a] for n in graph if (a := animate_of(graph, n)) is not None}


def check_graph(
    graph: Mapping[str, Any],
    catalogue: Mapping[str, Any],
    *,
    installed_models: Mapping[str, set[str]] | None = None,
    frames: int | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    driving_frames: int | None = None,
) -> list[str]:
    """Problems that would make ComfyUI refuse ``graph`` or make the wrong video; [] if none.

    ``frames`` is the output's frame count, ``driving_frames`` the driving video's (default: the
    same; a chunk's slice holds more frames than the chunk adds)."""
    checker = _Checker(graph, catalogue)
    if not checker.structure_ok():
        return checker.problems
    checker.check_nodes()
    acyclic = checker.check_graph_shape()
    if any(node["class_type"] in ANIMATE_CLASSES for node in graph.values()):
        checker.check_replacement()
        checker.check_sizes(width, height)
        checker.check_loras()
        checker.check_pack_guards()
    checker.check_sam2()
    checker.check_fps(fps)
    if frames is not None and acyclic:
        checker.check_frame_count(frames, frames if driving_frames is None else driving_frames)
    if installed_models is not None:
        checker.check_models(installed_models)
    return checker.problems


@dataclass(frozen=True)
class _Input:
    type: Any  # a type name, or the option list of a V1 combo
    options: dict[str, Any]
    required: bool


class _Checker:
    def __init__(self, graph: Mapping[str, Any], catalogue: Mapping[str, Any]) -> None:
        self.graph = graph
        self.catalogue = catalogue
        self.problems: list[str] = []

    # -- helpers -----------------------------------------------------------------------------

    def where(self, node_id: str) -> str:
        node = self.graph.get(node_id, {})
        return f"node {node_id} ({node.get('class_type', '?')})"

    def add(self, node_id: str | None, message: str) -> None:
        self.problems.append(f"{self.where(node_id)}: {message}" if node_id is not None else message)

    def link(self, node_id: str, name: str) -> tuple[str, int] | None:
        value = self.graph[node_id]["inputs"].get(name)
        return (value[0], value[1]) if is_link(value) else None

    def source(self, node_id: str, name: str) -> tuple[str, int] | None:
        """(class, slot) feeding ``name``, when it is a link to a known node."""
        link = self.link(node_id, name)
        if link is None or link[0] not in self.graph:
            return None
        return self.graph[link[0]]["class_type"], link[1]

    def nodes_of(self, *class_types: str) -> list[str]:
        return [n for n, node in self.graph.items() if node["class_type"] in class_types]

    # -- what POST /prompt checks, and input names/types it does not -------------------------

    def structure_ok(self) -> bool:
        if not isinstance(self.graph, Mapping) or not self.graph:
            self.add(None, "the graph is not an object of nodes")
            return False
        for node_id, node in self.graph.items():
            if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
                self.add(None, f"node {node_id}: no class_type")
            elif not isinstance(node.get("inputs"), Mapping):
                self.add(None, f"node {node_id}: no inputs object")
        return not self.problems

    def check_nodes(self) -> None:
        for node_id, node in self.graph.items():
            entry = self.catalogue.get(node["class_type"])
            if entry is None:
                self.add(node_id, "class is not in the pinned stack's catalogue (missing_node_type)")
                continue
            schema = _schema(entry.get("input", {}), node["inputs"])
            for name, spec in schema.items():
                if name not in node["inputs"]:
                    if spec.required:
                        self.add(node_id, f"required input {name!r} is missing")
                    continue
                self.check_value(node_id, name, spec, node["inputs"][name])
            for name in node["inputs"]:
                if name not in schema:
                    close = difflib.get_close_matches(name, list(schema), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.add(node_id, f"unknown input {name!r}{hint}: ComfyUI would silently ignore it")

    def check_value(self, node_id: str, name: str, spec: _Input, value: Any) -> None:
        class_type = self.graph[node_id]["class_type"]
        input_type = "COMBO" if isinstance(spec.type, list) else spec.type
        if isinstance(value, list):
            self.check_link(node_id, name, input_type, value)
            return
        if input_type not in WIDGET_TYPES:
            self.add(node_id, f"{name} must be linked to a {input_type} output, not the value {value!r}")
        elif input_type == "INT":
            if not isinstance(value, int) or isinstance(value, bool):
                self.add(node_id, f"{name}={value!r} is not an integer (ComfyUI would coerce or refuse it)")
            else:
                self.check_range(node_id, name, value, spec.options)
                self.check_step(node_id, name, value, spec.options)
        elif input_type == "FLOAT":
            if not isinstance(value, int | float) or isinstance(value, bool):
                self.add(node_id, f"{name}={value!r} is not a number")
            else:
                self.check_range(node_id, name, value, spec.options)
        elif input_type == "BOOLEAN" and not isinstance(value, bool):
            self.add(
                node_id, f"{name}={value!r} is not a JSON boolean (bool({value!r}) is what ComfyUI uses)"
            )
        elif input_type == "STRING" and not isinstance(value, str):
            self.add(node_id, f"{name}={value!r} is not a string")
        elif input_type == "COMBO":
            options = spec.type if isinstance(spec.type, list) else spec.options.get("options", [])
            if (class_type, name) in INPUT_FILE_COMBOS:
                if not isinstance(value, str) or not value:
                    self.add(node_id, f"{name} must name a file in ComfyUI's input folder")
            elif (class_type, name) in FOLDER_MODEL_INPUTS:
                # The catalogue's list is a folder listing of the capture machine, not the truth:
                # model names are checked against the manifest (check_models).
                if not isinstance(value, str) or not value:
                    self.add(node_id, f"{name} must name a model file")
            elif value not in options:
                shown = options if len(options) <= 20 else f"{len(options)} options"
                self.add(node_id, f"{name}={value!r} is not one of {shown} (value_not_in_list)")

    def check_link(self, node_id: str, name: str, input_type: str, value: list[Any]) -> None:
        if not is_link(value):
            self.add(node_id, f"{name}={value!r} is not a link [node_id, output_slot]")
            return
        source_id, slot = value
        source = self.graph.get(source_id)
        if source is None:
            self.add(node_id, f"{name} links node {source_id}, which is not in the graph")
            return
        entry = self.catalogue.get(source["class_type"])
        if entry is None:
            return  # reported as an unknown class
        outputs = entry.get("output", [])
        if not 0 <= slot < len(outputs):
            self.add(node_id, f"{name} links output #{slot} of node {source_id}, which has {len(outputs)}")
            return
        if not _types_match(outputs[slot], input_type):
            self.add(
                node_id, f"{name} expects {input_type} but node {source_id} output #{slot} is {outputs[slot]}"
            )

    def check_range(self, node_id: str, name: str, value: float, options: Mapping[str, Any]) -> None:
        if "min" in options and value < options["min"]:
            self.add(node_id, f"{name}={value} is below the minimum {options['min']}")
        if "max" in options and value > options["max"]:
            self.add(node_id, f"{name}={value} is above the maximum {options['max']}")

    def check_step(self, node_id: str, name: str, value: int, options: Mapping[str, Any]) -> None:
        step = options.get("step", 1)
        if isinstance(step, int) and step > 1:
            base = options.get("min", 0)
            if (value - base) % step:
                rule = f"a multiple of {step}" if base % step == 0 else f"{step}n+{base % step}"
                self.add(
                    node_id,
                    f"{name}={value} must be {rule} (step {step} from {base}); the server does not check",
                )

    def check_graph_shape(self) -> bool:
        """One output node, no cycle, no unused node; False when there is a cycle."""
        outputs = [
            n
            for n, node in self.graph.items()
            if self.catalogue.get(node["class_type"], {}).get("output_node")
        ]
        if len(outputs) != 1:
            self.add(
                None, f"the graph must have exactly one output node, has {len(outputs)}: {sorted(outputs)}"
            )
        cycle = _find_cycle(self.graph)
        if cycle:
            self.add(None, f"dependency cycle: {' -> '.join(cycle)}")
        if outputs:
            used: set[str] = set()
            for output in outputs:
                used |= upstream(self.graph, output)
            for node_id in self.graph:
                if node_id not in used:
                    self.add(node_id, "no output node uses it, so ComfyUI would neither validate nor run it")
        return cycle is None

    # -- Wan Animate replacement semantics ---------------------------------------------------

    def check_loras(self) -> None:
        for node_id in self.nodes_of(*LORA_CORE):
            self.add(
                node_id,
                f"LoRAs must load through {LORA_STRICT}: the core loader only logs 'lora key not "
                "loaded' for keys that do not fit the model and goes on without them "
                "(comfyui_nodes/wan_worker_nodes/lora.py)",
            )

    def check_pack_guards(self) -> None:
        for pack, (ours, why) in PACK_GUARDS.items():
            for node_id in self.nodes_of(pack):
                self.add(node_id, f"Wan graphs must use {ours} instead of the pack's {pack}: {why}")

    def check_replacement(self) -> None:
        for node_id in self.nodes_of(*ANIMATE_CLASSES):
            if self.graph[node_id]["class_type"] != ANIMATE_OFFICIAL_MASK:
                self.add(
                    node_id,
                    f"replacement windows must use {ANIMATE_OFFICIAL_MASK}: the core node packs the "
                    "character mask three frames ahead of the video (comfyui_nodes/wan_worker_nodes)",
                )
            for name, allowed in REPLACEMENT_SOURCES.items():
                source = self.source(node_id, name)
                if source is None:
                    self.add(node_id, f"{name} is not connected: replacement needs it on every window")
                elif source not in allowed:
                    expected = " or ".join(f"{c} output #{s}" for c, s in sorted(allowed))
                    self.add(
                        node_id, f"{name} comes from {source[0]} output #{source[1]}, expected {expected}"
                    )
            self.check_mask_matches_background(node_id)
            self.check_continuation(node_id)
        for (class_type, name), allowed in OTHER_SOURCES.items():
            for node_id in self.nodes_of(class_type):
                source = self.source(node_id, name)
                if source is not None and source not in allowed:
                    expected = " or ".join(f"{c} output #{s}" for c, s in sorted(allowed))
                    self.add(
                        node_id, f"{name} comes from {source[0]} output #{source[1]}, expected {expected}"
                    )
        for trim in self.nodes_of("TrimVideoLatent"):
            animate = self.window_of(trim)
            if animate is not None and self.link(trim, "trim_amount") != (animate, 3):
                self.add(
                    trim, f"trim_amount must be [{animate!r}, 3] (trim_latent) to drop the reference latent"
                )
        self.check_collect_order()

    def check_mask_matches_background(self, animate: str) -> None:
        mask = self.link(animate, "character_mask")
        background = self.link(animate, "background_video")
        if mask is None or background is None or background[0] not in self.graph:
            return
        if self.graph[background[0]]["class_type"] == "DrawMaskOnImage":
            drawn = self.link(background[0], "mask")
            if drawn != mask:
                self.add(animate, f"background_video blacks out mask {drawn}, but character_mask is {mask}")

    def check_continuation(self, animate: str) -> None:
        inputs = self.graph[animate]["inputs"]
        motion = self.link(animate, "continue_motion")
        offset = self.link(animate, "video_frame_offset")
        if motion is None:
            if offset is not None or inputs.get("video_frame_offset") != 0:
                self.add(animate, "a first window (no continue_motion) must start at video_frame_offset 0")
            return
        if self.graph.get(motion[0], {}).get("class_type") == LOAD_MOTION:
            # A chunk's first window: the slice starts with the previous chunk's frames.
            most = inputs.get("continue_motion_max_frames")
            if offset is not None or inputs.get("video_frame_offset") != most:
                self.add(
                    animate,
                    f"a window continuing from {LOAD_MOTION} must have video_frame_offset = "
                    f"continue_motion_max_frames ({most!r}), is {inputs.get('video_frame_offset')!r}: "
                    "it would not start at the slice's first frame",
                )
            self.check_trimmed(animate)
            return
        previous = self.window_of(motion[0])
        if self.graph.get(motion[0], {}).get("class_type") != "VAEDecode" or previous is None:
            self.add(animate, "continue_motion must be the previous window's decoded frames (VAEDecode)")
            return
        if previous == animate:
            self.add(animate, "continue_motion comes from this same window")
        if offset != (previous, 5):
            self.add(
                animate,
                f"video_frame_offset must be output #5 of the previous window's WanAnimateToVideo "
                f"({previous}), is {inputs.get('video_frame_offset')!r}: the conditioning would not advance",
            )
        self.check_trimmed(animate)

    def check_trimmed(self, animate: str) -> None:
        """The frames this window re-generates from the previous one must be dropped once."""
        for decode in self.nodes_of("VAEDecode"):
            if self.window_of(decode) != animate:
                continue
            for consumer, name in self.consumers(decode):
                node = self.graph[consumer]
                if node["class_type"] in ANIMATE_CLASSES and name == "continue_motion":
                    continue
                if node["class_type"] == SAVE_CHUNK and name == "motion":
                    continue  # the next chunk's continuation frames, not output frames
                if node["class_type"] != "ImageFromBatch" or self.link(consumer, "batch_index") != (
                    animate,
                    4,
                ):
                    self.add(
                        consumer,
                        f"uses window {animate}'s frames without dropping the first trim_image frames "
                        f"(ImageFromBatch batch_index <- [{animate!r}, 4]); they repeat the previous window",
                    )

    def check_collect_order(self) -> None:
        for collector in self.nodes_of("BatchImagesNode"):
            names = sorted(
                (n for n in self.graph[collector]["inputs"] if n.startswith("images.image")),
                key=lambda n: int(n.removeprefix("images.image") or 0),
            )
            windows = [self.window_of(link[0]) for n in names if (link := self.link(collector, n))]
            for before, after in itertools.pairwise(windows):
                if before is None or after is None:
                    continue
                offset = self.link(after, "video_frame_offset")
                if offset is None or offset[0] != before:
                    self.add(
                        collector, f"window {after} is joined after window {before} but does not continue it"
                    )

    def window_of(self, node_id: str) -> str | None:
        """The WanAnimateToVideo whose latent produced these images (through trims/decode/sampler)."""
        return animate_of(self.graph, node_id)

    def consumers(self, node_id: str) -> list[tuple[str, str]]:
        return [
            (other, name)
            for other, node in self.graph.items()
            for name, value in node["inputs"].items()
            if is_link(value) and value[0] == node_id
        ]

    def check_sizes(self, width: int | None, height: int | None) -> None:
        sizes: dict[tuple[Any, Any], list[str]] = {}
        for class_type in SIZE_NODES:
            for node_id in self.nodes_of(class_type):
                size = (
                    self.graph[node_id]["inputs"].get("width"),
                    self.graph[node_id]["inputs"].get("height"),
                )
                if all(isinstance(v, int) and not isinstance(v, bool) for v in size):  # others: type errors
                    sizes.setdefault(size, []).append(node_id)
        if len(sizes) > 1:
            listing = "; ".join(f"{w}x{h}: nodes {', '.join(ids)}" for (w, h), ids in sizes.items())
            self.add(None, f"width/height differ between pose, face and generation nodes ({listing})")
        if width is not None and height is not None:
            for (w, h), ids in sizes.items():
                if (w, h) != (width, height):
                    self.add(None, f"nodes {', '.join(ids)} are {w}x{h}, the job is {width}x{height}")

    # -- run-time failures and cross-node consistency ----------------------------------------

    def check_sam2(self) -> None:
        for loader in self.nodes_of("DownloadAndLoadSAM2Model"):
            inputs = self.graph[loader]["inputs"]
            if inputs.get("device") == "cpu" and inputs.get("precision") in ("fp16", "bf16"):
                self.add(loader, "device=cpu with fp16/bf16 raises at run time (use fp32 on cpu)")
            for segmenter, _ in self.consumers(loader):
                if self.graph[segmenter]["class_type"] not in SAM2_SEGMENTERS:
                    continue
                boxes = self.link(segmenter, "bboxes") is not None
                segmentor = inputs.get("segmentor")
                if segmentor == "automaskgenerator":
                    self.add(segmenter, "Sam2Segmentation raises with the automaskgenerator segmentor")
                elif segmentor == "video" and boxes and "2.1" not in str(inputs.get("model")):
                    self.add(segmenter, "box prompts with the video segmentor need a sam2.1 model (raises)")
                elif segmentor == "single_image" and boxes:
                    self.add(
                        segmenter, "single_image reuses frame 1's box on every frame; track with 'video'"
                    )

    def check_fps(self, fps: float | None) -> None:
        constants: dict[float, list[str]] = {}
        for node_id in self.nodes_of("CreateVideo"):
            value = self.graph[node_id]["inputs"].get("fps")
            source = self.source(node_id, "fps")
            if source is not None:
                if source != ("GetVideoComponents", 2):
                    self.add(
                        node_id, f"fps comes from {source[0]} output #{source[1]}, not the driving video"
                    )
            elif isinstance(value, int | float):
                constants.setdefault(float(value), []).append(node_id)
        if len(constants) > 1:
            self.add(None, f"CreateVideo nodes disagree on fps: {constants}")
        if fps is not None:
            for value, ids in constants.items():
                if value != float(fps):
                    self.add(None, f"nodes {', '.join(ids)} write {value:g} fps, the job is {fps:g} fps")

    def check_frame_count(self, frames: int, driving_frames: int) -> None:
        count = _FrameCounter(self.graph, driving_frames)
        self.check_conditioning_covered(count, driving_frames)
        for output, node in self.graph.items():
            if node["class_type"] not in OUTPUT_FRAMES:
                continue
            produced = count.images(output, OUTPUT_FRAMES[node["class_type"]])
            if produced is not None and produced != frames:
                self.add(output, f"the video would have {produced} frames, the driving video has {frames}")

    def check_conditioning_covered(self, count: _FrameCounter, frames: int) -> None:
        """No window may condition on frames past the (padded) driving frames: the core node
        would repeat the last pose, leave the face video short, the background grey and the
        mask "generate everything" for them."""
        pads = [(n, count.ints(n, "length")) for n in self.nodes_of(REFLECT_PAD)]
        animates = self.nodes_of(*ANIMATE_CLASSES)
        if animates and not pads:
            self.add(
                None, f"the windows condition on unpadded driving frames: add {REFLECT_PAD} (windows.pad)"
            )
        for pad, length in pads:
            if length is not None and length < frames:
                self.add(pad, f"length={length} cuts the driving video's {frames} frames")
            for animate in animates:
                start, window = count.window_start(animate), count.ints(animate, "length")
                if length is None or start is None or window is None or start + window <= length:
                    continue
                self.add(
                    animate,
                    f"conditions on driving frames {start}..{start + window - 1}, but {pad} pads them to "
                    f"{length}: frames {length}.. would be invented",
                )

    def check_models(self, installed: Mapping[str, set[str]]) -> None:
        for node_id, node in self.graph.items():
            for name, value in node["inputs"].items():
                folder = LOADER_FOLDERS.get((node["class_type"], name))
                if folder is None or not isinstance(value, str) or value in BUILT_IN_MODEL_VALUES:
                    continue
                filename = _sam2_file(value, node["inputs"]) if folder == "sam2" else value
                if filename not in installed.get(folder, set()):
                    self.add(
                        node_id,
                        f"{name}: models/{folder}/{filename} is not a file the model manifest installs",
                    )


class _FrameCounter:
    """Frame counts along the output path, computed the way the nodes compute them."""

    def __init__(self, graph: Mapping[str, Any], driving_frames: int) -> None:
        self.graph = graph
        self.driving = driving_frames

    def images(self, node_id: str, name: str) -> int | None:
        value = self.graph[node_id]["inputs"].get(name)
        return self.output(value[0], value[1]) if is_link(value) and value[0] in self.graph else None

    def ints(self, node_id: str, name: str) -> int | None:
        value = self.graph[node_id]["inputs"].get(name)
        if is_link(value):
            return self.output(value[0], value[1]) if value[0] in self.graph else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def output(self, node_id: str, slot: int) -> int | None:
        """Frames (or the integer value) of output ``slot``; the graph is known to be acyclic."""
        node = self.graph[node_id]
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "GetVideoComponents" and slot == 0:
            return self.driving
        if kind == "LoadImage" and slot == 0:
            return 1
        if kind == LOAD_MOTION and slot == 0:
            # what the previous chunk's save node wrote: this graph's save node's motion_frames
            saved = [
                self.ints(n, "motion_frames") for n, v in self.graph.items() if v["class_type"] == SAVE_CHUNK
            ]
            return saved[0] if len(saved) == 1 else None
        if kind in ("CreateVideo", "ImageScale", "ImageResizeKJv2"):
            return self.images(node_id, "images" if kind == "CreateVideo" else "image")
        if kind == "RepeatImageBatch":
            frames, amount = self.images(node_id, "image"), self.ints(node_id, "amount")
            return frames * amount if frames is not None and amount is not None else None
        if kind in ("BatchImagesNode", "ImageBatch"):
            parts = [self.images(node_id, n) for n in inputs if n.startswith(("images.", "image"))]
            return sum(p for p in parts if p is not None) if None not in parts else None
        if kind == "ImageFromBatch":
            available, start = self.images(node_id, "image"), self.ints(node_id, "batch_index")
            length = self.ints(node_id, "length")
            if available is None or start is None or length is None:
                return None
            start = max(0, min(available - 1, start + available if start < 0 else start))
            return min(available - start, length)
        if kind == "VAEDecode":
            latent = self.latent(node_id, "samples")
            return (latent - 1) * 4 + 1 if latent is not None and latent > 0 else None
        if kind == REFLECT_PAD and slot == 0:
            return self.ints(node_id, "length")
        if kind in ANIMATE_CLASSES and slot in (3, 4):
            return 1 if slot == 3 else self.continuation_frames(node_id)
        if kind in ANIMATE_CLASSES and slot == 5:
            start, length = self.window_start(node_id), self.ints(node_id, "length")
            return start + length if start is not None and length is not None else None
        return None

    def window_start(self, animate: str) -> int | None:
        """The first driving frame a window conditions on (the core node's offset arithmetic)."""
        offset = self.ints(animate, "video_frame_offset")
        if offset is None or not is_link(self.graph[animate]["inputs"].get("continue_motion")):
            return offset
        given, most = (
            self.images(animate, "continue_motion"),
            self.ints(animate, "continue_motion_max_frames"),
        )
        return max(0, offset - min(given, most)) if given is not None and most is not None else None

    def latent(self, node_id: str, name: str) -> int | None:
        """Latent frames (4 video frames each, the first one 1) reaching ``name``."""
        value = self.graph[node_id]["inputs"].get(name)
        if not is_link(value) or value[0] not in self.graph:
            return None
        source = self.graph[value[0]]
        if source["class_type"] == "KSampler":
            return self.latent(value[0], "latent_image")
        if source["class_type"] == "TrimVideoLatent":
            latent, trim = self.latent(value[0], "samples"), self.ints(value[0], "trim_amount")
            return latent - trim if latent is not None and trim is not None else None
        if source["class_type"] in ANIMATE_CLASSES and value[1] == 2:
            length = source["inputs"].get("length")
            # the window's frames plus one latent frame for the reference image
            return (length - 1) // 4 + 1 + 1 if isinstance(length, int) else None
        return None

    def continuation_frames(self, animate: str) -> int | None:
        """WanAnimateToVideo's trim_image: the frames it re-generates from continue_motion."""
        if not is_link(self.graph[animate]["inputs"].get("continue_motion")):
            return 0
        given = self.images(animate, "continue_motion")
        most = self.ints(animate, "continue_motion_max_frames")
        if given is None or most is None:
            return None
        latent = (min(given, most) - 1) // 4 + 1
        return max(0, latent * 4 - 3)


def _schema(section: Mapping[str, Any], live: Mapping[str, Any], prefix: str = "") -> dict[str, _Input]:
    """Every input name a node accepts given its current values, V3 dynamic inputs expanded."""
    out: dict[str, _Input] = {}
    for category in ("required", "optional"):
        for name, spec in section.get(category, {}).items():
            key = prefix + name
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            required = category == "required"
            if kind == DYNAMIC_COMBO:
                choices = options.get("options", [])
                out[key] = _Input("COMBO", {"options": [c["key"] for c in choices]}, required)
                chosen = next((c for c in choices if c["key"] == live.get(key)), None)
                if chosen is not None:
                    out.update(_schema(chosen.get("inputs", {}), live, key + "."))
            elif kind == AUTOGROW:
                template = options["template"]
                names = template.get("names") or [f"{template['prefix']}{i}" for i in range(template["max"])]
                inner_category, inner = next((c, specs) for c, specs in template["input"].items() if specs)
                inner_spec = next(iter(inner.values()))
                inner_options = inner_spec[1] if len(inner_spec) > 1 else {}
                for index, item in enumerate(names):
                    item_required = index < template.get("min", 0) and inner_category == "required"
                    out[f"{key}.{item}"] = _Input(inner_spec[0], inner_options, item_required)
            else:
                out[key] = _Input(kind, options, required)
    return out


def _types_match(received: Any, expected: Any) -> bool:
    """ComfyUI's validate_node_input (non-strict): equal, '*' or MatchType, or overlapping unions."""
    if received == expected:
        return True
    if "*" in (received, expected) or MATCH_TYPE in (received, expected):
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in expected.split(",")}
    return "*" in got or "*" in want or bool(got & want)


def _sam2_file(model: str, inputs: Mapping[str, Any]) -> str:
    """The file DownloadAndLoadSAM2Model reads: a 2.1 model at fp16/bf16 loads '<name>-fp16'."""
    if inputs.get("precision") != "fp32" and "2.1" in model:
        stem, _, extension = model.rpartition(".")
        return f"{stem}-fp16.{extension}"
    return model


def _find_cycle(graph: Mapping[str, Any]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node_id: str) -> list[str] | None:
        state[node_id] = 1
        path.append(node_id)
        for value in graph[node_id]["inputs"].values():
            if not is_link(value) or value[0] not in graph:
                continue
            if state.get(value[0]) == 1:
                return [*path[path.index(value[0]) :], value[0]]
            if value[0] not in state and (found := visit(value[0])):
                return found
        path.pop()
        state[node_id] = 2
        return None

    for node_id in graph:
        if node_id not in state and (found := visit(node_id)):
            return found
    return None


# -- catalogue and manifest -------------------------------------------------------------------


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> dict[str, Any]:
    """Node classes by name, from the committed subset or a full ``/object_info`` dump."""
    data = json.loads(path.read_text())
    return data["nodes"] if "nodes" in data and "stack" in data else data


def workflow_graphs(folder: Path = REPO_ROOT / "workflows") -> dict[str, dict[str, Any]]:
    """Every pinned workflow graph in ``folder`` (a JSON with a .bindings.json beside it)."""
    graphs = {}
    for path in sorted(folder.glob("*.json")):
        if not path.name.endswith(".bindings.json") and path.with_suffix(".bindings.json").is_file():
            graphs[path.name] = json.loads(path.read_text())
    return graphs


def added_nodes(folder: Path = REPO_ROOT / "workflows") -> dict[str, Any]:
    """Nodes the worker adds to the pinned graphs (a chunk's frame loader, ``windows.handoff.load``),
    as a graph of their classes, so the catalogue holds them too."""
    added: dict[str, Any] = {}
    for path in sorted(folder.glob("*.bindings.json")):
        load = (json.loads(path.read_text()).get("windows") or {}).get("handoff", {}).get("load")
        if load and load.get("class_type"):
            added[f"{path.name}:{load['node']}"] = {"class_type": load["class_type"], "inputs": {}}
    return added


def extract_catalogue(
    source: Mapping[str, Any],
    graphs: Iterable[Mapping[str, Any]],
    repo_nodes: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The catalogue entries of the classes ``graphs`` use; input- and model-folder file lists emptied.

    ``repo_nodes`` (``comfyui_nodes/wan_worker_nodes/catalogue.json``) declares this repository's
    own classes: ``{"like": CORE_CLASS, ...}`` takes the pinned class's entry (same inputs and
    outputs) with the other keys replaced; any other value is the entry itself."""
    repo_nodes = repo_nodes or {}
    source = {**source, **resolve_repo_nodes(source, repo_nodes)}
    used_set = {node["class_type"] for graph in graphs for node in graph.values()}
    # The pinned class a repository class extends stays known, so a graph using it says why not.
    used_set |= {str(repo_nodes[n]["like"]) for n in used_set if "like" in repo_nodes.get(n, {})}
    used = sorted(used_set)
    missing = [name for name in used if name not in source]
    if missing:
        raise KeyError(f"classes not in the source catalogue: {missing}")
    nodes = json.loads(json.dumps({name: source[name] for name in used}))
    # Input-folder and model-folder listings are the capture machine's files, not the truth: emptied
    # (job files are checked by ComfyUI, model names against the manifest).
    for class_type, name in sorted(INPUT_FILE_COMBOS | FOLDER_MODEL_INPUTS):
        entry = nodes.get(class_type)
        if entry and name in entry["input"].get("required", {}):
            spec = entry["input"]["required"][name]
            if isinstance(spec[0], list):
                spec[0] = []
            else:
                spec[1]["options"] = []
    return {"stack": PINNED_STACK, "nodes": nodes}


def resolve_repo_nodes(source: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, Any]:
    """Catalogue entries of this repository's node classes, built on the pinned classes they extend."""
    entries: dict[str, Any] = {}
    for name, declaration in declared.items():
        declaration = dict(declaration)
        like = declaration.pop("like", None)
        if like is None:
            entry = declaration
        else:
            if like not in source:
                raise KeyError(f"{name} is declared like {like}, which is not in the source catalogue")
            entry = {**json.loads(json.dumps(source[like])), **declaration}
        entry["name"] = name
        entries[name] = entry
    return entries


def load_repo_nodes(path: Path = REPO_NODES_PATH) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


# -- command line -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the API graph the worker submits for N frames.")
    parser.add_argument("--frames", type=int, help="driving video frames at 24 fps")
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW)
    parser.add_argument("--catalogue", type=Path, default=CATALOGUE_PATH)
    parser.add_argument("--manifest", type=Path, default=None, help=f"default: {MANIFEST_PATH} when present")
    parser.add_argument("--variant", default=None, help="also accept a manifest alternative's files (bf16)")
    parser.add_argument("--extract-catalogue", action="store_true", help="rewrite the committed catalogue")
    parser.add_argument("--source", type=Path, default=SHARED_CATALOGUE, help="full /object_info dump")
    args = parser.parse_args(argv)
    if args.extract_catalogue:
        return _extract(args.source, args.catalogue)
    if args.frames is None or args.frames < 1:
        parser.error("--frames N (at least 1) is required")
    from worker.workflow import Workflow

    try:
        workflow = Workflow.load(args.workflow)
        params = workflow.example_params(args.frames, filename_prefix="wan-worker/check")
        graph = workflow.build(params)
    except WorkerError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    manifest = args.manifest or (MANIFEST_PATH if MANIFEST_PATH.is_file() else None)
    installed = load_manifest(manifest).installed(args.variant) if manifest else None
    problems = check_graph(
        graph,
        load_catalogue(args.catalogue),
        installed_models=installed,
        frames=params.frames,
        fps=params.fps,
        width=params.width,
        height=params.height,
    )
    for problem in problems:
        print(problem)
    models = (
        f"models checked against {manifest}" if manifest else "no model manifest, model names not checked"
    )
    status = f"{len(problems)} problem(s)" if problems else "OK"
    print(
        f"{status}: {args.workflow.name} for {args.frames} frames, {len(graph)} nodes; {models}",
        file=sys.stderr,
    )
    return 1 if problems else 0


def _extract(source: Path, out: Path) -> int:
    try:
        full = json.loads(source.read_text())
    except OSError as exc:
        print(f"error: cannot read the full catalogue {source}: {exc}", file=sys.stderr)
        return 2
    graphs = [*workflow_graphs().values(), added_nodes()]
    subset = extract_catalogue(full, graphs, load_repo_nodes())
    subset["source_sha256"] = hashlib.sha256(source.read_bytes()).hexdigest()
    out.write_text(json.dumps(subset, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    print(f"wrote {out} ({len(subset['nodes'])} classes from {source.name})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
