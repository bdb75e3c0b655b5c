"""This repository's ComfyUI node modules, loaded one file at a time: the package's ``__init__``
imports ComfyUI (``comfy``, ``folder_paths``), which the tests' venv does not have."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

NODE_DIR = Path(__file__).resolve().parents[2] / "comfyui_nodes" / "wan_worker_nodes"


def load_node_module(filename: str) -> ModuleType:
    """``comfyui_nodes/wan_worker_nodes/<filename>`` as a module of its own (registered in
    ``sys.modules``: dataclasses look their module up there)."""
    name = f"wan_worker_nodes_{Path(filename).stem}_under_test"
    spec = importlib.util.spec_from_file_location(name, NODE_DIR / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
