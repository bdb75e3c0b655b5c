"""A graph that fails the pinned stack's checks never reaches ComfyUI: the worker refuses to
start with it, and refuses each job whose graph fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.config import REPO_ROOT, Settings
from worker.errors import ErrorCode, WorkerError
from worker.job import JobRunner
from worker.workflow import WorkflowParams

ENV = {"MINIO_ENDPOINT": "127.0.0.1:9", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "MINIO_BUCKET": "c"}


def copy_workflow(tmp_path: Path, *, fps: float, bind_fps: bool) -> Path:
    graph = json.loads((REPO_ROOT / "workflows/model_free_still.json").read_text())
    bindings = json.loads((REPO_ROOT / "workflows/model_free_still.bindings.json").read_text())
    graph["6"]["inputs"]["fps"] = fps
    if not bind_fps:
        bindings["inputs"]["fps"] = []
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    (tmp_path / "wf.bindings.json").write_text(json.dumps(bindings))
    return tmp_path / "wf.json"


def test_both_shipped_workflows_pass_at_start() -> None:
    for name in ("model_free_still", "wan22_animate_replace"):
        runner = JobRunner(Settings.from_env({**ENV, "WORKFLOW": f"workflows/{name}.json"}))
        assert runner.workflow.name == name


def test_worker_refuses_to_start_with_a_16_fps_workflow(tmp_path: Path) -> None:
    path = copy_workflow(tmp_path, fps=16.0, bind_fps=False)
    with pytest.raises(WorkerError) as caught:
        JobRunner(Settings.from_env({**ENV, "WORKFLOW": str(path)}))
    assert caught.value.code is ErrorCode.WORKFLOW_INVALID
    assert "16" in caught.value.message


def test_each_job_graph_is_checked(tmp_path: Path) -> None:
    runner = JobRunner(Settings.from_env({**ENV, "WORKFLOW": "workflows/wan22_animate_replace.json"}))
    params = WorkflowParams(
        image="a.png",
        driving_video="d.mp4",
        frames=240,
        filename_prefix="p",
        seed=1,
        prompt="",
        negative_prompt="",
        width=1000,  # Wan needs multiples of 16; ComfyUI itself would accept it
    )
    with pytest.raises(WorkerError) as caught:
        runner.checked_graph(params)
    assert caught.value.code is ErrorCode.WORKFLOW_INVALID
    assert caught.value.details["problems"]
