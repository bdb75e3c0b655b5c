"""The node catalogue: the pinned stack's ``/object_info`` entries of the classes our graphs use.

``workflows/object_info_pinned.json`` is committed; ``extract_catalogue`` cuts it from a full
``/object_info`` dump of the pinned stack (``python -m worker.graph extract-catalogue --source
PATH``), adds this repository's own classes (``comfyui_nodes/wan_worker_nodes/catalogue.json``) and
empties the file listings of the machine it was captured on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from worker.config import REPO_ROOT
from worker.models import LOADER_FOLDERS

CATALOGUE_PATH = REPO_ROOT / "workflows" / "object_info_pinned.json"
WORKFLOWS_DIR = REPO_ROOT / "workflows"
# This repository's own node classes (comfyui_nodes/wan_worker_nodes): their catalogue entries.
REPO_NODES_PATH = REPO_ROOT / "comfyui_nodes" / "wan_worker_nodes" / "catalogue.json"
PINNED_STACK = (
    "ComfyUI 0.33.0 (783545f6); ComfyUI-WanAnimatePreprocess 1.0.3 (0e0b6a2a); ComfyUI-KJNodes 1.5.0 "
    "(3f200542); ComfyUI-segment-anything-2 1.0.1 (c59676b0); ComfyUI-VideoHelperSuite 1.7.9 (4ee72c06); "
    "comfyui_controlnet_aux 1.1.5 (e8b689a5)"
)

# Combos listing ComfyUI's input/ folder: job-specific names, checked by the node's own validation.
INPUT_FILE_COMBOS = {("LoadImage", "image"), ("LoadVideo", "file"), ("VHS_LoadVideo", "video")}
# Model inputs whose option list is the node's own fixed list (the pack's code), not a folder listing.
FIXED_MODEL_LISTS = {("DownloadAndLoadSAM2Model", "model")}
# The rest list the capture machine's models folder: checked against the manifest, never that list.
FOLDER_MODEL_INPUTS = set(LOADER_FOLDERS) - FIXED_MODEL_LISTS


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> dict[str, Any]:
    """Node classes by name, from the committed subset or a full ``/object_info`` dump."""
    data = json.loads(path.read_text())
    return data["nodes"] if "nodes" in data and "stack" in data else data


def workflow_graphs(folder: Path = WORKFLOWS_DIR) -> dict[str, dict[str, Any]]:
    """Every pinned workflow graph in ``folder`` (a JSON with a .bindings.json beside it)."""
    graphs = {}
    for path in sorted(folder.glob("*.json")):
        if not path.name.endswith(".bindings.json") and path.with_suffix(".bindings.json").is_file():
            graphs[path.name] = json.loads(path.read_text())
    return graphs


def added_nodes(folder: Path = WORKFLOWS_DIR) -> dict[str, Any]:
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


def write_catalogue(source: Path, out: Path = CATALOGUE_PATH) -> dict[str, Any]:
    """Cut the catalogue of every workflow in ``workflows/`` from ``source`` (a full ``/object_info``
    dump of the pinned stack) and write it to ``out``, with the dump's sha256."""
    raw = source.read_bytes()
    subset = extract_catalogue(
        json.loads(raw), [*workflow_graphs().values(), added_nodes()], load_repo_nodes()
    )
    subset["source_sha256"] = hashlib.sha256(raw).hexdigest()
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(subset, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    os.replace(partial, out)
    return subset
