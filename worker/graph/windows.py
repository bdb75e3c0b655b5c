"""Per-length expansion of a windowed Wan Animate graph.

Wan2.2 Animate generates a fixed-length window (77 frames). Longer videos are made of
windows that each continue from the last ``motion_frames`` (5) decoded frames of the
previous one: ``WanAnimateToVideo.continue_motion`` takes the previous window's decoded
images and ``video_frame_offset`` the previous window's ``video_frame_offset`` output, which
seeks every conditioning video (pose, face, background, mask) to where that window starts.
Each extension window re-generates those 5 frames, so it adds 72 new ones::

    windows(N) = 1 + ceil(max(0, N - 77) / 72)          # N = 240 -> 4 windows

The pinned graph holds window 1 and ONE extension window; the bindings' ``windows``
section names them (see ``workflows/README.md``)::

    "windows": {
      "window_frames": 77, "motion_frames": 5, "max_windows": 50, "last_window": "full",
      "first": {"animate": "30", "images": "33"},
      "extension": {"nodes": ["40", "41", "42", "43", "44"], "animate": "40", "images": "44",
                    "previous": {"30": "40", "33": "43"}},
      "collect": {"node": "50", "input_prefix": "images.image"}
    }

``expand_windows`` repeats the extension nodes for windows 3..W with fresh ids
(``f"{window}{id:03d}"``, e.g. node 40 of window 3 is ``"3040"``); a link from an
extension node to a window-1 node named in ``previous`` is re-pointed at the previous
window's copy of its counterpart; links to shared nodes (models, pose video, mask, ...)
are kept. The collector gets one input per window, in order. For N <= 77 the extension
nodes are removed. ``last_window: "fit"`` shortens the last window to the fewest frames
(4n+1) that still cover the video instead of always generating 77.

The windows condition on ``covered_frames`` driving frames, more than N when the last window
runs past the end. ``"pad": {"node": ..., "input": ...}`` names the input set to that count:
the driving frames are reflect-padded to it before pose, face, mask and background are made,
as the official pipeline pads its conditioning, so no window sees invented conditioning.

Chunks (``worker.graph.chunks``): ``chunk_windows`` windows per ComfyUI prompt, and ``handoff``::

    "chunk_windows": 4,
    "handoff": {"save": {"node": "53", "input": "motion"}, "load": {"node": "16", "input": "file"}}

``expand_windows(..., chunk=...)`` builds one chunk's graph: the windows of that chunk only; the
save node's ``motion`` input gets the chunk's last window's decode when a chunk follows (its last
``motion_frames`` frames are saved for it), and a chunk that continues starts with an extension
window whose ``continue_motion`` is the load node (the previous chunk's frames) and whose
``video_frame_offset`` is ``motion_frames`` (the slice starts with those frames); window 1's own
nodes are dropped. The load node (``class_type``, ``input``, ``title``) is added only there.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.errors import ErrorCode, WorkerError
from worker.graph.api import is_link, upstream

TITLE_PLACEHOLDER = "{window}"
LAST_WINDOW_MODES = ("full", "fit")


@dataclass(frozen=True)
class Window:
    """One generation window. ``start`` is the first driving frame it conditions on; its
    first ``trim`` frames repeat the previous window and are dropped."""

    index: int  # 1-based
    start: int
    length: int
    trim: int
    new_frames: int  # frames it adds to the output after the trim and the final cut to N


@dataclass(frozen=True)
class WindowSpec:
    window_frames: int
    motion_frames: int
    max_windows: int
    last_window: str
    first_animate: str
    first_images: str
    extension_nodes: tuple[str, ...]
    extension_animate: str
    extension_images: str
    previous: dict[str, str]
    collect_node: str
    collect_prefix: str
    pad_node: str | None = None  # the reflect-pad of the driving frames, set to covered_frames
    pad_input: str | None = None
    chunk_windows: int = 0  # windows per prompt (0: the whole clip in one prompt)
    save_node: str | None = None  # the output node, with the input that saves the next chunk's frames
    save_input: str | None = None
    load_node: str | None = None  # the node that loads the previous chunk's frames (added)
    load_input: str | None = None
    load_class: str | None = None
    load_title: str = ""

    @property
    def step(self) -> int:
        return self.window_frames - self.motion_frames

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> WindowSpec:
        try:
            first, extension, collect = raw["first"], raw["extension"], raw["collect"]
            pad = raw.get("pad")
            handoff = raw.get("handoff")
            spec = cls(
                window_frames=int(raw.get("window_frames", 77)),
                motion_frames=int(raw.get("motion_frames", 5)),
                max_windows=int(raw.get("max_windows", 50)),
                last_window=str(raw.get("last_window", "full")),
                first_animate=str(first["animate"]),
                first_images=str(first["images"]),
                extension_nodes=tuple(str(n) for n in extension["nodes"]),
                extension_animate=str(extension["animate"]),
                extension_images=str(extension["images"]),
                previous={str(k): str(v) for k, v in extension["previous"].items()},
                collect_node=str(collect["node"]),
                collect_prefix=str(collect["input_prefix"]),
                pad_node=str(pad["node"]) if pad is not None else None,
                pad_input=str(pad["input"]) if pad is not None else None,
                chunk_windows=int(raw.get("chunk_windows", 0)),
                save_node=str(handoff["save"]["node"]) if handoff is not None else None,
                save_input=str(handoff["save"]["input"]) if handoff is not None else None,
                load_node=str(handoff["load"]["node"]) if handoff is not None else None,
                load_input=str(handoff["load"]["input"]) if handoff is not None else None,
                load_class=str(handoff["load"]["class_type"]) if handoff is not None else None,
                load_title=str(handoff["load"].get("title", "")) if handoff is not None else "",
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _invalid(f"bindings 'windows' section is malformed: {exc!r}") from exc
        if spec.last_window not in LAST_WINDOW_MODES:
            raise _invalid(
                f"windows.last_window must be one of {LAST_WINDOW_MODES}, not {spec.last_window!r}"
            )
        if (spec.window_frames - 1) % 4 or (spec.motion_frames - 1) % 4:
            raise _invalid("windows.window_frames and motion_frames must be 4n+1 (Wan's temporal VAE stride)")
        if not 0 < spec.motion_frames < spec.window_frames:
            raise _invalid("windows.motion_frames must be between 1 and window_frames - 1")
        if spec.max_windows < 1:
            raise _invalid("windows.max_windows must be at least 1")
        if spec.chunk_windows < 0:
            raise _invalid("windows.chunk_windows must be 0 (no chunks) or more")
        if spec.chunk_windows and spec.save_node is None:
            raise _invalid("windows.chunk_windows needs windows.handoff (how chunks pass frames on)")
        return spec


def window_count(frames: int, window_frames: int = 77, motion_frames: int = 5) -> int:
    """Windows needed for ``frames`` driving frames: 1 + ceil(max(0, N - 77) / 72)."""
    if frames < 1:
        raise ValueError("frames must be at least 1")
    return 1 + math.ceil(max(0, frames - window_frames) / (window_frames - motion_frames))


def plan_windows(
    frames: int, *, window_frames: int = 77, motion_frames: int = 5, last_window: str = "full"
) -> list[Window]:
    """The windows that produce exactly ``frames`` output frames."""
    count = window_count(frames, window_frames, motion_frames)
    step = window_frames - motion_frames
    plan: list[Window] = []
    produced = 0
    for index in range(1, count + 1):
        trim = 0 if index == 1 else motion_frames
        start = 0 if index == 1 else step * (index - 1)
        remaining = frames - produced
        new_frames = min(window_frames - trim, remaining)
        length = window_frames
        if last_window == "fit" and index == count:
            length = _shortest_length(trim + new_frames)
        plan.append(Window(index=index, start=start, length=length, trim=trim, new_frames=new_frames))
        produced += new_frames
    return plan


def reflect_indices(frames: int, length: int) -> list[int]:
    """The source frame of each of ``length`` frames padded by reflection: 0..n-1, then back and
    forth without repeating a frame at a turn, as the official pipeline's ``inputs_padding`` (and
    this repository's ``ImageBatchReflectPad`` node, which the tests hold to the same sequence)."""
    if frames < 1 or length < 1:
        raise ValueError(f"need at least one frame and a length of at least 1, not {frames}, {length}")
    if frames == 1:
        return [0] * length
    period = 2 * (frames - 1)
    return [i % period if i % period < frames else period - i % period for i in range(length)]


def covered_frames(plan: list[Window] | tuple[Window, ...]) -> int:
    """Driving frames the windows condition on: the last window may run past the video's end,
    so the conditioning is reflect-padded to this many frames (``windows.pad``)."""
    return max(window.start + window.length for window in plan)


def _shortest_length(frames: int) -> int:
    """The smallest Wan window length (4n+1) holding ``frames`` frames."""
    return 4 * math.ceil((frames - 1) / 4) + 1


def check_spec(graph: Mapping[str, Any], raw: Mapping[str, Any]) -> WindowSpec:
    """Parse the ``windows`` section and check it against the pinned graph."""
    spec = WindowSpec.parse(raw)
    named = {
        "first.animate": spec.first_animate,
        "first.images": spec.first_images,
        "extension.animate": spec.extension_animate,
        "extension.images": spec.extension_images,
        "collect.node": spec.collect_node,
    }
    for where, node_id in named.items():
        if node_id not in graph:
            raise _invalid(f"windows.{where} names node {node_id}, which is not in the graph")
    for node_id in (*spec.extension_nodes, *spec.previous, *spec.previous.values()):
        if node_id not in graph:
            raise _invalid(f"windows.extension names node {node_id}, which is not in the graph")
    if spec.pad_node is not None and spec.pad_input not in graph.get(spec.pad_node, {}).get("inputs", {}):
        raise _invalid(f"windows.pad names {spec.pad_node}.{spec.pad_input}, which is not in the graph")
    if spec.save_node is not None and spec.save_node not in graph:
        raise _invalid(f"windows.handoff.save names node {spec.save_node}, which is not in the graph")
    if spec.load_node is not None and spec.load_node in graph:
        raise _invalid(f"windows.handoff.load adds node {spec.load_node}, an id the graph already uses")
    extension = set(spec.extension_nodes)
    for role in (spec.extension_animate, spec.extension_images, *spec.previous.values()):
        if role not in extension:
            raise _invalid(f"windows.extension: node {role} must be one of extension.nodes")
    if extension & set(spec.previous):
        raise _invalid("windows.extension.previous must map window-1 nodes, not extension nodes")
    for node_id in graph:
        if not node_id.isdigit() or int(node_id) >= 1000:
            raise _invalid(f"node id {node_id!r}: windowed graphs need numeric ids below 1000")
    for animate in (spec.first_animate, spec.extension_animate):
        if graph[animate]["inputs"].get("length") != spec.window_frames:
            raise _invalid(f"node {animate}: length must be windows.window_frames ({spec.window_frames})")
    kept = graph[spec.extension_images]["inputs"].get("length")
    if kept is not None and kept != spec.step:
        raise _invalid(
            f"node {spec.extension_images}: length must be window_frames - motion_frames ({spec.step}), "
            f"the frames an extension window adds, not {kept!r}"
        )
    collect_inputs = graph[spec.collect_node]["inputs"]
    expected = {
        f"{spec.collect_prefix}0": [spec.first_images, 0],
        f"{spec.collect_prefix}1": [spec.extension_images, 0],
    }
    actual = {k: v for k, v in collect_inputs.items() if k.startswith(spec.collect_prefix)}
    if actual != expected:
        raise _invalid(f"node {spec.collect_node} must collect exactly {expected}, has {actual}")
    # The extension window must consume no node outside itself that is not either shared by
    # both windows or a window-1 node it continues from (named in ``previous``).
    first_only = _window_one_chain(graph, spec)
    for node_id in spec.extension_nodes:
        for name, value in graph[node_id]["inputs"].items():
            if is_link(value) and value[0] in first_only and value[0] not in spec.previous:
                raise _invalid(
                    f"node {node_id}.{name} links window-1 node {value[0]}, which windows.extension.previous "
                    "does not map to an extension counterpart"
                )
    return spec


def expand_windows(
    graph: dict[str, Any],
    spec: WindowSpec,
    *,
    frames: int,
    chunk: Any = None,
    motion_file: str | None = None,
) -> dict[str, Any]:
    """The graph for ``frames`` driving frames: one window per 72 frames after the first 77.
    ``spec`` is the one ``check_spec`` returned for the graph this one was built from.

    With ``chunk`` (a ``worker.graph.chunks.Chunk`` of this clip), the graph of that chunk only; one
    that continues loads the previous chunk's frames from ``motion_file``."""
    if frames < 1:
        raise WorkerError(
            ErrorCode.INVALID_INPUT, f"the driving video has {frames} frames; at least 1 is needed"
        )
    full_plan = plan_windows(
        frames,
        window_frames=spec.window_frames,
        motion_frames=spec.motion_frames,
        last_window=spec.last_window,
    )
    if len(full_plan) > spec.max_windows:
        longest = spec.window_frames + spec.step * (spec.max_windows - 1)
        raise WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"a driving video of {frames} frames needs {len(full_plan)} windows; this workflow joins at "
            f"most {spec.max_windows} ({longest} frames). Use a shorter video.",
            details={"frames": frames, "windows": len(full_plan), "max_frames": longest},
        )
    plan = list(chunk.windows) if chunk is not None else full_plan
    continues = chunk is not None and chunk.continues
    follows = chunk is not None and not chunk.last
    if continues and (spec.load_node is None or not motion_file):
        raise _invalid("a chunk that continues needs windows.handoff.load and the previous chunk's frames")
    out = copy.deepcopy(graph)
    if spec.pad_node is not None and spec.pad_input is not None:
        padded = chunk.slice_frames if chunk is not None else covered_frames(plan)
        out[spec.pad_node]["inputs"][spec.pad_input] = padded
    collect = out[spec.collect_node]["inputs"]
    for name in [k for k in collect if k.startswith(spec.collect_prefix)]:
        del collect[name]

    # Per window: extension id -> its id in this window ({} for window 1 of a graph that starts
    # the clip). A continuing chunk's window 1 is an extension window.
    window_ids: list[dict[str, str]] = []
    for position in range(1, len(plan) + 1):
        if position == 1 and not continues:
            window_ids.append({})
            continue
        if position == 1 or (position == 2 and not continues):
            window_ids.append({node_id: node_id for node_id in spec.extension_nodes})
            if position == 1:
                _continue_from_file(out, spec, motion_file or "")
            continue
        ids = {node_id: f"{position}{int(node_id):03d}" for node_id in spec.extension_nodes}
        previous_ids = window_ids[-1]
        for template_id, new_id in ids.items():
            if new_id in out:
                raise _invalid(f"window {position}: node id {new_id} is already taken")
            node = copy.deepcopy(graph[template_id])
            for name, value in node["inputs"].items():
                if not is_link(value):
                    continue
                if value[0] in ids:
                    node["inputs"][name] = [ids[value[0]], value[1]]
                elif value[0] in spec.previous:
                    node["inputs"][name] = [previous_ids[spec.previous[value[0]]], value[1]]
            out[new_id] = node
        window_ids.append(ids)

    for position, (window, ids) in enumerate(zip(plan, window_ids, strict=True), start=1):
        animate = ids[spec.extension_animate] if ids else spec.first_animate
        images = ids[spec.extension_images] if ids else spec.first_images
        out[animate]["inputs"]["length"] = window.length
        collect[f"{spec.collect_prefix}{position - 1}"] = [images, 0]
        number = (chunk.first_window if continues else 1) + position - 1
        for node_id in ids.values():
            meta = out[node_id].get("_meta")
            if meta and TITLE_PLACEHOLDER in meta.get("title", ""):
                meta["title"] = meta["title"].replace(TITLE_PLACEHOLDER, str(number))

    if spec.save_node is not None and spec.save_input is not None:
        inputs = out[spec.save_node]["inputs"]
        inputs.pop(spec.save_input, None)
        if follows:
            last_ids = window_ids[-1]
            decode = last_ids[spec.previous[spec.first_images]] if last_ids else spec.first_images
            inputs[spec.save_input] = [decode, 0]
    if continues:
        for node_id in _window_one_chain(graph, spec):
            del out[node_id]
    if len(plan) == 1 and not continues:
        for node_id in spec.extension_nodes:
            del out[node_id]
    return out


def _continue_from_file(out: dict[str, Any], spec: WindowSpec, motion_file: str) -> None:
    """The template extension window, continued from the load node instead of window 1: its
    continue_motion reads the previous chunk's frames, its video_frame_offset is motion_frames
    (the core node subtracts the continuation frames, so the window starts at slice frame 0)."""
    assert spec.load_node is not None and spec.load_input is not None and spec.load_class is not None
    out[spec.load_node] = {
        "class_type": spec.load_class,
        "inputs": {spec.load_input: motion_file},
        "_meta": {"title": spec.load_title},
    }
    for node_id in spec.extension_nodes:
        inputs = out[node_id]["inputs"]
        for name, value in list(inputs.items()):
            if not is_link(value) or value[0] not in spec.previous:
                continue
            if value[0] == spec.first_images:
                inputs[name] = [spec.load_node, 0]
            elif value[0] == spec.first_animate:
                inputs[name] = spec.motion_frames
            else:
                raise _invalid(
                    f"node {node_id}.{name} continues from window-1 node {value[0]}, which a chunk "
                    "cannot take from the previous chunk (only its frames and offset cross prompts)"
                )


def _window_one_chain(graph: Mapping[str, Any], spec: WindowSpec) -> set[str]:
    """Window 1's own nodes: downstream of its WanAnimateToVideo and upstream of its images."""
    downstream = {spec.first_animate}
    changed = True
    while changed:
        changed = False
        for node_id, node in graph.items():
            if node_id not in downstream and any(
                is_link(v) and v[0] in downstream for v in node["inputs"].values()
            ):
                downstream.add(node_id)
                changed = True
    return downstream & upstream(graph, spec.first_images)


def _invalid(message: str) -> WorkerError:
    return WorkerError(ErrorCode.WORKFLOW_INVALID, message)
