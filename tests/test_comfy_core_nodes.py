"""This repository's ComfyUI nodes against the pinned core nodes, inside a real ComfyUI.

Needs a ComfyUI 0.33.0 checkout (``WAN_BENCH_COMFYUI``) and a Python with torch and ComfyUI's
requirements (``WAN_BENCH_PYTHON``), as the GPU benchmark's CPU test does. CI cannot run these:
ComfyUI is not on PyPI and CI reaches no GitHub. The layouts themselves are tested in CI by
tests/test_animate_mask_layout.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.comfy_checkout import COMFY, COMFY_PYTHON, needs_comfy
from worker.graph.catalogue import load_catalogue

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str) -> dict[str, Any]:
    done = subprocess.run(
        [COMFY_PYTHON, str(REPO / "tests" / "comfy_core" / name), "--comfy", str(COMFY)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def animate_report() -> dict[str, Any]:
    return run_script("animate_node_vs_core.py")


@needs_comfy
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "scenario",
    [
        "first window",
        "extension window (5 motion frames)",
        "extension window further into the clip",
        "one-frame mask",
    ],
)
def test_official_mask_node_changes_only_the_mask(animate_report, scenario: str) -> None:
    entry = animate_report[scenario]
    assert entry["differences"] == []  # every other output identical to the core node's
    assert entry["same_mask_on_both_conditionings"]
    assert entry["mask_is_official"]
    assert not entry["core_mask_is_official"]  # the defect is real on the pinned core...
    assert entry["core_mask_is_as_restated"]  # ...and is what tests/support/wan_official.py says


@needs_comfy
@pytest.mark.timeout(600)
def test_move_mode_is_left_as_the_core_node_makes_it(animate_report) -> None:
    entry = animate_report["move mode (no mask, no background)"]
    assert entry["differences"] == [] and entry["mask_equals_core"]


@needs_comfy
@pytest.mark.timeout(600)
def test_official_mask_node_schema_is_the_core_one_and_the_catalogue_entry(animate_report) -> None:
    schema = animate_report["schema"]
    assert schema["inputs_equal_core"] and schema["outputs_equal_core"]
    assert schema["name"] == "WanAnimateToVideoOfficialMask"
    entry = load_catalogue()["WanAnimateToVideoOfficialMask"]
    live = schema["object_info"]
    assert entry["input"] == live["input"]
    assert (entry["output"], entry["output_name"]) == (live["output"], live["output_name"])


@needs_comfy
@pytest.mark.timeout(600)
def test_reflect_pad_node_loads_in_comfyui_as_the_catalogue_says(animate_report) -> None:
    live = animate_report["reflect_pad"]
    entry = load_catalogue()["ImageBatchReflectPad"]
    assert json.loads(json.dumps(entry["input"])) == live["input"]
    assert (entry["output"], entry["output_name"]) == (live["output"], live["output_name"])
    assert live["padded"] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
