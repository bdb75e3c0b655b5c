"""This repository's rules for its graphs, which ComfyUI does not know.

For Wan Animate graphs (any graph with a WanAnimateToVideo): every window in replacement mode with
each conditioning input coming from the node that makes it (pose video, face crops, background,
mask), every conditioning video made from the reflect-padded driving frames, windows chained in
order (continue_motion, video_frame_offset, the re-generated frames trimmed), width/height the same
everywhere, LoRAs and pack nodes through this repository's guards of them
(``comfyui_nodes/wan_worker_nodes``). For every graph: SAM2 device/precision/segmentor combinations
that do not raise at run time, and the fps of ``CreateVideo`` (the job's, when given).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from worker.graph.api import GraphChecks, is_link, upstream

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
# Chunks (worker/graph/chunks.py): the output node of a chunk, and the previous chunk's frames.
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


class WanRules(GraphChecks):
    """The Wan rules (``check_loras`` .. ``check_sizes``, for graphs with windows) and the run-time
    ones every graph gets (``check_sam2``, ``check_fps``)."""

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
