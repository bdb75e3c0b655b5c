"""Tests that need the pinned ComfyUI itself: a ComfyUI 0.33.0 checkout in ``WAN_BENCH_COMFYUI``
and a Python with torch and its requirements in ``WAN_BENCH_PYTHON``. CI has neither (ComfyUI is
not on PyPI and CI reaches no GitHub), so they are skipped there with that reason."""

from __future__ import annotations

import os
import sys

import pytest

COMFY = os.environ.get("WAN_BENCH_COMFYUI")
COMFY_PYTHON = os.environ.get("WAN_BENCH_PYTHON", sys.executable)

needs_comfy = pytest.mark.skipif(
    not COMFY,
    reason="needs a ComfyUI 0.33.0 checkout in WAN_BENCH_COMFYUI (+ WAN_BENCH_PYTHON with torch): ComfyUI is "
    "not on PyPI and CI reaches no GitHub; see bench/README.md",
)
