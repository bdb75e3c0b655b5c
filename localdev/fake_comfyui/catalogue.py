"""The node classes the fake runs, described exactly as ``workflows/object_info_pinned.json`` (the pinned
stack's ``/object_info``) describes them: what ``/object_info`` answers and what ``POST /prompt`` checks.

Only the classes with a behaviour in ``nodes.py`` are served; any other class is unknown to the fake, as
to a real server without that node.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from localdev.fake_comfyui.files import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_input_files
from localdev.fake_comfyui.nodes import NODE_FUNCTIONS
from worker.graph.catalogue import load_catalogue

# Shared with the worker's graph checks (load_catalogue is cached): read, never changed.
NODE_CLASSES: dict[str, dict[str, Any]] = {name: load_catalogue()[name] for name in NODE_FUNCTIONS}


def is_output_node(class_type: str) -> bool:
    return bool(NODE_CLASSES[class_type]["output_node"])


def upload_kind(config: list[Any]) -> str | None:
    """``"image"`` or ``"video"`` for an input naming a file of the input folder (LoadImage's ``image``,
    LoadVideo's ``file``): its list is the folder's listing, and the node checks the name itself."""
    options = config[1] if len(config) > 1 and isinstance(config[1], dict) else {}
    if options.get("image_upload"):
        return "image"
    if options.get("video_upload"):
        return "video"
    return None


def object_info(input_dir: Path) -> dict[str, Any]:
    """``GET /object_info``: the classes, their file inputs listing what ``input_dir`` holds now."""
    images = list_input_files(input_dir, IMAGE_EXTENSIONS)
    videos = list_input_files(input_dir, VIDEO_EXTENSIONS)
    info = copy.deepcopy(NODE_CLASSES)
    for entry in info.values():
        for section in ("required", "optional"):
            for config in entry["input"].get(section, {}).values():
                kind = upload_kind(config)
                if kind == "image":
                    config[0] = images  # an old-style combo: the list is the type
                elif kind == "video":
                    config[1]["options"] = videos
    return info
