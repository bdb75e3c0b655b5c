"""Frame counts along a graph's output path, computed the way the nodes compute them: the output
must have exactly the job's frames, and no window may condition on frames past the (reflect-padded)
driving frames."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.graph.api import GraphChecks, is_link
from worker.graph.wan_rules import ANIMATE_CLASSES, LOAD_MOTION, OUTPUT_FRAMES, REFLECT_PAD, SAVE_CHUNK


class FrameCountChecks(GraphChecks):
    """Only for an acyclic graph (the counter follows links without guarding against loops)."""

    def check_frame_count(self, frames: int, driving_frames: int) -> None:
        count = FrameCounter(self.graph, driving_frames)
        self.check_conditioning_covered(count, driving_frames)
        for output, node in self.graph.items():
            if node["class_type"] not in OUTPUT_FRAMES:
                continue
            produced = count.images(output, OUTPUT_FRAMES[node["class_type"]])
            if produced is not None and produced != frames:
                self.add(output, f"the video would have {produced} frames, the driving video has {frames}")

    def check_conditioning_covered(self, count: FrameCounter, frames: int) -> None:
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


class FrameCounter:
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
