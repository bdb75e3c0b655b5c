"""A graph that fails the pinned stack's checks never reaches ComfyUI: the worker refuses to
start with it, and refuses each job whose graph fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.config import REPO_ROOT, Settings
from worker.errors import ErrorCode, WorkerError
from worker.graph.workflow import WorkflowParams
from worker.job import JobRunner

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
        runner.checked_workflow.graph(params)
    assert caught.value.code is ErrorCode.WORKFLOW_INVALID
    assert caught.value.details["problems"]


# -- model names: checked against the manifest for MODEL_VARIANT, not a captured folder listing --

BF16 = "wan2.2_animate_14B_bf16.safetensors"
FP8 = "Wan2_2-Animate-14B_fp8_scaled_e4m3fn_KJ_v2.safetensors"
WAN = {**ENV, "WORKFLOW": "workflows/wan22_animate_replace.json"}


def _params(frames: int) -> WorkflowParams:
    return WorkflowParams(
        image="a.png",
        driving_video="d.mp4",
        frames=frames,
        filename_prefix="p",
        seed=1,
        prompt="",
        negative_prompt="",
        width=1280,
        height=720,
        fps=24.0,
    )


@pytest.mark.parametrize(("variant", "model"), [("fp8", FP8), ("bf16", BF16)])
def test_model_variant_alone_chooses_the_model_and_its_graphs_pass(variant: str, model: str) -> None:
    """One setting: the diffusion model the graph loads is the manifest's file for MODEL_VARIANT."""
    runner = JobRunner(Settings.from_env({**WAN, "MODEL_VARIANT": variant}))
    installed = runner.checked_workflow.installed_models
    assert installed["diffusion_models"] == {model}  # the variant replaces, as installed
    for frames in (77, 240):
        graph = runner.checked_workflow.graph(_params(frames))
        assert [n["inputs"]["unet_name"] for n in graph.values() if n["class_type"] == "UNETLoader"] == [
            model
        ]


def test_the_retired_model_setting_is_refused_with_what_replaced_it() -> None:
    with pytest.raises(WorkerError) as caught:
        Settings.from_env({**WAN, "MODEL_VARIANT": "bf16", "WAN_DIFFUSION_MODEL": BF16})
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert "WAN_DIFFUSION_MODEL is no longer read: MODEL_VARIANT alone chooses" in caught.value.message


@pytest.mark.parametrize("variant", ["fp8", "bf16"])
def test_a_model_the_manifest_does_not_install_stops_the_start(tmp_path: Path, variant: str) -> None:
    """A workflow that names a model file itself (not through its model_role setting)."""
    graph = json.loads((REPO_ROOT / "workflows/wan22_animate_replace.json").read_text())
    bindings = json.loads((REPO_ROOT / "workflows/wan22_animate_replace.bindings.json").read_text())
    del bindings["settings"]["diffusion_model"]
    graph["20"]["inputs"]["unet_name"] = "wan2.1_i2v.safetensors"
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    (tmp_path / "wf.bindings.json").write_text(json.dumps(bindings))
    with pytest.raises(WorkerError) as caught:
        JobRunner(Settings.from_env({**ENV, "WORKFLOW": str(tmp_path / "wf.json"), "MODEL_VARIANT": variant}))
    error = caught.value
    assert error.code is ErrorCode.CONFIG_INVALID
    assert "models/diffusion_models/wan2.1_i2v.safetensors is not a file the model manifest installs" in (
        error.message
    )
    assert f"MODEL_VARIANT={variant}" in error.message and "model_role" in error.message
    assert error.details["model_variant"] == variant


def test_an_unknown_model_variant_is_a_configuration_error() -> None:
    with pytest.raises(WorkerError) as caught:
        Settings.from_env({**WAN, "MODEL_VARIANT": "fp4"})
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert "MODEL_VARIANT='fp4': expected one of fp8, bf16" in caught.value.message


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("WAN_STEPS", "abc", "WAN_STEPS (workflow setting 'steps') must be an integer, not 'abc'"),
        ("WAN_STEP", "4", "WAN_STEP: not a setting of workflow wan22_animate_replace.json"),
    ],
)
def test_a_bad_workflow_setting_stops_the_start(name: str, value: str, says: str) -> None:
    settings = Settings.from_env({**WAN, name: value})  # config cannot know the workflow's names
    with pytest.raises(WorkerError) as caught:
        JobRunner(settings)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert says in caught.value.message


def test_the_worker_knows_every_manifest_variant() -> None:
    from worker.config import MODEL_VARIANTS

    manifest = json.loads((REPO_ROOT / "models" / "manifest.json").read_text())
    assert list(MODEL_VARIANTS) == [manifest["default_variant"], *manifest["alternatives"]]


def test_a_broken_chunk_continuation_stops_the_start(tmp_path: Path) -> None:
    """The second chunk's graph is checked at start: a handoff loading 8-bit images (LoadImage) in
    place of the previous chunk's float32 frames is refused before any job."""
    graph = json.loads((REPO_ROOT / "workflows/wan22_animate_replace.json").read_text())
    bindings = json.loads((REPO_ROOT / "workflows/wan22_animate_replace.bindings.json").read_text())
    bindings["windows"]["handoff"]["load"].update({"class_type": "LoadImage", "input": "image"})
    (tmp_path / "wf.json").write_text(json.dumps(graph))
    (tmp_path / "wf.bindings.json").write_text(json.dumps(bindings))
    JobRunner(Settings.from_env({**ENV, "WORKFLOW": str(tmp_path / "wf.json"), "CHUNK_WINDOWS": "0"}))
    with pytest.raises(WorkerError) as caught:
        JobRunner(Settings.from_env({**ENV, "WORKFLOW": str(tmp_path / "wf.json")}))
    assert caught.value.code is ErrorCode.WORKFLOW_INVALID
    assert any("continue_motion" in problem for problem in caught.value.details["problems"])
