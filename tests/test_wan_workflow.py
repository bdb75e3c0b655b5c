"""The pinned Wan2.2 Animate replacement workflow: every graph the worker can build passes the
static checks, windows are laid out and chained right, and each way a graph can go wrong that
ComfyUI's own validation lets through (STACK.md section 5) is caught."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from worker.errors import ErrorCode, WorkerError
from worker.graph.__main__ import main as graph_main
from worker.graph.catalogue import load_catalogue
from worker.graph.checks import check_graph
from worker.graph.wan_rules import ANIMATE_CLASSES
from worker.graph.windows import plan_windows, window_count
from worker.graph.workflow import Workflow, WorkflowParams
from worker.models import MANIFEST_PATH, load_manifest

REPO = Path(__file__).resolve().parents[1]
WAN = REPO / "workflows" / "wan22_animate_replace.json"
FRAME_COUNTS = (1, 77, 78, 149, 150, 240, 721)
EXPECTED_WINDOWS = {1: 1, 77: 1, 78: 2, 149: 2, 150: 3, 240: 4, 721: 10}
MODEL_FILES = {  # WAN22_ANIMATE.md's table: folder -> the names the pinned graph must load
    "diffusion_models": {"Wan2_2-Animate-14B_fp8_scaled_e4m3fn_KJ_v2.safetensors"},
    "text_encoders": {"umt5_xxl_fp8_e4m3fn_scaled.safetensors"},
    "vae": {"wan_2.1_vae.safetensors"},
    "clip_vision": {"clip_vision_h.safetensors"},
    "loras": {
        "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        "wan2.2_animate_14B_relight_lora_bf16.safetensors",
    },
    "detection": {"yolov10m.onnx", "vitpose-l-wholebody.onnx"},
    "sam2": {"sam2.1_hiera_base_plus-fp16.safetensors"},  # what fp16 precision actually loads
}


@pytest.fixture(scope="module")
def workflow() -> Workflow:
    return Workflow.load(WAN)


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    return load_catalogue()


def params(frames: int, **overrides: Any) -> WorkflowParams:
    values: dict[str, Any] = {
        "image": "wan-worker/job-1/avatar.png",
        "driving_video": "wan-worker/job-1/driving.mp4",
        "frames": frames,
        "filename_prefix": "wan-worker/job-1",
        "seed": 7,
        "prompt": "a dancer",
        "negative_prompt": "blurry",
    }
    return WorkflowParams(**{**values, **overrides})


def check(graph: dict[str, Any], catalogue: dict[str, Any], frames: int = 240, **kwargs: Any) -> list[str]:
    return check_graph(graph, catalogue, frames=frames, fps=24.0, width=1280, height=720, **kwargs)


def animate_chain(graph: dict[str, Any]) -> list[str]:
    """WanAnimateToVideo ids in window order, following video_frame_offset links."""
    animates = [n for n, node in graph.items() if node["class_type"] in ANIMATE_CLASSES]
    follows = {
        node_id: graph[node_id]["inputs"]["video_frame_offset"][0]
        for node_id in animates
        if isinstance(graph[node_id]["inputs"]["video_frame_offset"], list)
    }
    chain = [n for n in animates if n not in follows]
    assert len(chain) == 1, "exactly one first window"
    while True:
        nxt = [n for n, prev in follows.items() if prev == chain[-1]]
        if not nxt:
            return chain
        assert len(nxt) == 1
        chain.append(nxt[0])


# -- every graph the worker can produce ---------------------------------------------------------


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_every_built_graph_passes_the_checks(workflow, catalogue, frames):
    graph = workflow.build(params(frames))
    assert check(graph, catalogue, frames) == []


@pytest.mark.parametrize("frames", FRAME_COUNTS)
def test_windows_are_counted_laid_out_and_chained(workflow, frames):
    graph = workflow.build(params(frames))
    chain = animate_chain(graph)
    assert len(chain) == EXPECTED_WINDOWS[frames] == 1 + math.ceil(max(0, frames - 77) / 72)
    plan = plan_windows(frames)
    # Simulate WanAnimateToVideo's offset arithmetic (comfy_extras/nodes_wan.py) along the chain.
    offset_out = 0
    previous_decode = None
    for index, (animate, window) in enumerate(zip(chain, plan, strict=True)):
        inputs = graph[animate]["inputs"]
        assert inputs["length"] == window.length == 77
        if index == 0:
            assert inputs["video_frame_offset"] == 0 and "continue_motion" not in inputs
            start = 0
        else:
            assert inputs["video_frame_offset"] == [chain[index - 1], 5]
            assert inputs["continue_motion"] == [previous_decode, 0]
            start = max(0, offset_out - inputs["continue_motion_max_frames"])
        assert start == window.start == 72 * index
        offset_out = start + inputs["length"]
        previous_decode = next(
            n
            for n, node in graph.items()
            if node["class_type"] == "VAEDecode" and _window_of(graph, n) == animate
        )
    assert sum(w.new_frames for w in plan) == frames
    assert [w.trim for w in plan] == [0] + [5] * (len(plan) - 1)


def _window_of(graph: dict[str, Any], decode: str) -> str:
    trim = graph[decode]["inputs"]["samples"][0]
    sampler = graph[trim]["inputs"]["samples"][0]
    return graph[sampler]["inputs"]["latent_image"][0]


@pytest.mark.parametrize("frames", (240, 721))
def test_the_output_has_exactly_n_frames_at_24_fps(workflow, frames):
    graph = workflow.build(params(frames))
    collect = graph["50"]["inputs"]
    assert list(collect) == [f"images.image{i}" for i in range(EXPECTED_WINDOWS[frames])]
    assert graph["51"]["inputs"] == {"image": ["50", 0], "batch_index": 0, "length": frames}
    # Raw frames out: the worker encodes them at 24 fps (no fps in the graph) and adds the audio.
    assert graph["53"]["class_type"] == "WanWorkerSaveChunk" and graph["53"]["inputs"]["images"] == ["51", 0]
    assert "motion" not in graph["53"]["inputs"] and "16" not in graph  # no chunk follows or precedes
    assert not [n for n, node in graph.items() if node["class_type"] in ("SaveVideo", "CreateVideo")]


def test_short_videos_drop_the_extension_window(workflow):
    graph = workflow.build(params(77))
    assert not {"40", "41", "42", "43", "44"} & set(graph)
    assert graph["50"]["inputs"] == {"images.image0": ["33", 0]}


def test_expanded_windows_get_fresh_ids_and_titles(workflow):
    graph = workflow.build(params(240))
    assert {"3040", "3044", "4040", "4044"} <= set(graph)
    assert graph["4040"]["inputs"]["continue_motion"] == ["3043", 0]
    assert graph["4044"]["inputs"]["batch_index"] == ["4040", 4]
    assert graph["4041"]["inputs"]["model"] == ["23", 0]  # shared nodes stay shared
    titles = [node["_meta"]["title"] for node in graph.values()]
    assert not [t for t in titles if "{window}" in t]
    assert graph["4040"]["_meta"]["title"].startswith("Window 4:")
    assert graph["40"]["_meta"]["title"].startswith("Window 2:")


def test_bindings_reach_every_window(workflow):
    graph = workflow.build(params(240, seed=1234, prompt="a robot"))
    samplers = [node for node in graph.values() if node["class_type"] == "KSampler"]
    assert len(samplers) == 4
    assert {(s["inputs"]["seed"], s["inputs"]["steps"], s["inputs"]["cfg"]) for s in samplers} == {
        (1234, 6, 1.0)
    }
    assert graph["25"]["inputs"]["text"] == "a robot"
    assert graph["1"]["inputs"]["image"] == "wan-worker/job-1/avatar.png"
    assert graph["5"]["inputs"]["file"] == "wan-worker/job-1/driving.mp4"
    assert graph["53"]["inputs"]["filename_prefix"] == "wan-worker/job-1"


def test_too_long_a_video_is_refused_before_submission(workflow):
    assert workflow.build(params(77 + 49 * 72))  # 50 windows: the collector's maximum
    with pytest.raises(WorkerError) as caught:
        workflow.build(params(77 + 49 * 72 + 1))
    assert caught.value.code is ErrorCode.INPUT_TOO_LARGE
    assert "51 windows" in caught.value.message


def test_the_graph_loads_exactly_the_documented_model_files(workflow, catalogue):
    graph = workflow.build(params(240))
    assert check(graph, catalogue, installed_models=MODEL_FILES) == []
    less = {folder: set(names) for folder, names in MODEL_FILES.items()}
    less["sam2"] = {"sam2.1_hiera_base_plus.safetensors"}  # the fp32 file alone is not what fp16 loads
    assert any(
        "sam2.1_hiera_base_plus-fp16.safetensors" in p for p in check(graph, catalogue, installed_models=less)
    )


@pytest.mark.skipif(not MANIFEST_PATH.is_file(), reason="models/manifest.json is not written yet")
def test_the_manifest_installs_every_file_the_graph_loads(workflow, catalogue):
    graph = workflow.build(params(721))
    assert check(graph, catalogue, 721, installed_models=load_manifest().installed()) == []


# -- plan arithmetic ----------------------------------------------------------------------------


def test_window_count_formula():
    assert [window_count(n) for n in FRAME_COUNTS] == [EXPECTED_WINDOWS[n] for n in FRAME_COUNTS]
    with pytest.raises(ValueError):
        window_count(0)


@pytest.mark.parametrize("frames", (1, 5, 6, 77, 78, 82, 83, 240))
def test_fit_mode_shortens_only_the_last_window_to_a_valid_length(frames):
    plan = plan_windows(frames, last_window="fit")
    full = plan_windows(frames)
    assert [w.start for w in plan] == [w.start for w in full]
    assert all(w.length == 77 for w in plan[:-1])
    last = plan[-1]
    assert (last.length - 1) % 4 == 0 and last.length <= 77
    assert last.length >= last.trim + last.new_frames > last.length - 4  # the fewest 4n+1 frames
    assert sum(w.new_frames for w in plan) == frames


def test_fit_mode_builds_a_graph_that_passes(tmp_path, catalogue):
    spec = json.loads(WAN.with_suffix(".bindings.json").read_text())
    spec["windows"]["last_window"] = "fit"
    (tmp_path / WAN.name).write_bytes(WAN.read_bytes())
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_text(json.dumps(spec))
    graph = Workflow.load(tmp_path / WAN.name).build(params(240))
    assert [graph[n]["inputs"]["length"] for n in animate_chain(graph)] == [77, 77, 77, 25]
    assert check(graph, catalogue) == []


# -- deployment settings (steps, shift, diffusion model) -----------------------------------------


def test_settings_default_and_environment_overrides():
    default = Workflow.load(WAN)
    assert default.settings == {
        "steps": 6,
        "shift": 8.0,
        "diffusion_model": "Wan2_2-Animate-14B_fp8_scaled_e4m3fn_KJ_v2.safetensors",
    }
    tuned = Workflow.load(WAN, {"WAN_STEPS": "4", "WAN_SHIFT": "5"})
    graph = tuned.build(params(150))
    assert {node["inputs"]["steps"] for node in graph.values() if node["class_type"] == "KSampler"} == {4}
    assert graph["23"]["inputs"]["shift"] == 5.0 and isinstance(graph["23"]["inputs"]["shift"], float)
    assert tuned.sha256 != default.sha256  # a result made with other settings is another result


def test_the_diffusion_model_is_the_manifests_file_for_the_variant():
    bf16 = Workflow.load(WAN, model_variant="bf16")
    assert bf16.settings["diffusion_model"] == "wan2.2_animate_14B_bf16.safetensors"
    assert bf16.build(params(150))["20"]["inputs"]["unet_name"] == "wan2.2_animate_14B_bf16.safetensors"
    assert Workflow.load(WAN, model_variant="fp8").sha256 == Workflow.load(WAN).sha256
    assert bf16.sha256 != Workflow.load(WAN).sha256
    with pytest.raises(WorkerError) as caught:
        Workflow.load(WAN, model_variant="fp4")
    assert caught.value.code is ErrorCode.CONFIG_INVALID and "unknown variant 'fp4'" in caught.value.message


def test_a_bad_setting_override_is_a_config_error():
    with pytest.raises(WorkerError) as caught:
        Workflow.load(WAN, {"WAN_STEPS": "six"})
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert "WAN_STEPS" in caught.value.message


@pytest.mark.parametrize(
    ("workflow", "overrides", "named", "known"),
    [
        (WAN, {"WAN_STEP": "4"}, "WAN_STEP", "WAN_SHIFT, WAN_STEPS"),
        (
            WAN,
            {"WAN_STEPS": "4", "WAN_FPS": "16", "WAN_CFG": "1"},
            "WAN_CFG, WAN_FPS",
            "WAN_SHIFT, ",
        ),
        (REPO / "workflows" / "model_free_still.json", {"WAN_STEPS": "4"}, "WAN_STEPS", "none"),
    ],
)
def test_an_override_the_workflow_does_not_declare_is_a_config_error(workflow, overrides, named, known):
    with pytest.raises(WorkerError) as caught:
        Workflow.load(workflow, overrides)
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert caught.value.message.startswith(f"{named}: not a setting of workflow {workflow.name}")
    assert f"whose settings are {known}" in caught.value.message


def test_an_empty_override_keeps_the_default():
    assert Workflow.load(WAN, {"WAN_STEPS": " "}).settings["steps"] == 6


def test_the_windows_section_is_parsed_and_checked_once_at_load(tmp_path):
    workflow = Workflow.load(WAN)
    assert (workflow.windows.window_frames, workflow.windows.chunk_windows) == (77, 4)
    spec = json.loads(WAN.with_suffix(".bindings.json").read_text())
    spec["windows"]["collect"]["node"] = "99"  # not in the graph: refused at load, not at the first build
    (tmp_path / WAN.name).write_bytes(WAN.read_bytes())
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_text(json.dumps(spec))
    with pytest.raises(WorkerError, match=r"windows\.collect\.node names node 99"):
        Workflow.load(tmp_path / WAN.name)


def test_an_out_of_range_setting_is_caught_by_the_checker(catalogue):
    graph = Workflow.load(WAN, {"WAN_STEPS": "0"}).build(params(240))
    assert any("steps=0 is below the minimum 1" in p for p in check(graph, catalogue))


def test_cli_checks_the_graph_for_n_frames(capsys):
    assert graph_main(["check", "--frames", "240", "--workflow", str(WAN)]) == 0
    assert "OK: wan22_animate_replace.json for 240 frames" in capsys.readouterr().err


def test_cli_prints_the_graph_the_worker_builds_with_the_environments_settings(monkeypatch, capsys):
    assert graph_main(["print", "--frames", "150", "--seed", "7"]) == 0
    workflow = Workflow.load(WAN)
    assert json.loads(capsys.readouterr().out) == workflow.build(workflow.example_params(150, seed=7))
    monkeypatch.setenv("WAN_STEPS", "4")
    assert graph_main(["print", "--frames", "150"]) == 0
    graph = json.loads(capsys.readouterr().out)
    assert {node["inputs"]["steps"] for node in graph.values() if node["class_type"] == "KSampler"} == {4}
    monkeypatch.setenv("WAN_STEP", "4")
    assert graph_main(["print", "--frames", "150"]) == 2
    assert "error: WAN_STEP: not a setting of workflow" in capsys.readouterr().err


def test_cli_exits_non_zero_and_prints_each_problem(tmp_path, capsys):
    graph = json.loads(WAN.read_text())
    graph["40"]["inputs"]["length"] = 77  # keep the window spec valid...
    graph["40"]["inputs"]["width"] = 1000  # ...but break the extension window
    (tmp_path / WAN.name).write_text(json.dumps(graph))
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_bytes(
        WAN.with_suffix(".bindings.json").read_bytes()
    )
    spec = json.loads(WAN.with_suffix(".bindings.json").read_text())
    spec["inputs"]["width"] = [t for t in spec["inputs"]["width"] if t["node"] != "40"]
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_text(json.dumps(spec))
    assert graph_main(["check", "--frames", "240", "--workflow", str(tmp_path / WAN.name)]) == 1
    out = capsys.readouterr()
    assert "node 40 (WanAnimateToVideoOfficialMask): width=1000 must be a multiple of 16" in out.out
    assert "node 3040 (WanAnimateToVideoOfficialMask): width=1000" in out.out
    assert "problem(s)" in out.err


# -- mutations: the checker must catch each one ---------------------------------------------------
# Both tables were confirmed against a real ComfyUI 0.33.0 with the pinned packs (POST /prompt on a
# CPU install with placeholder model files): SERVER_REFUSES all answer 400, SERVER_LETS_THROUGH 200
# ("second output node" with node_errors for the broken one, which the server then skips).

Mutation = Callable[[dict[str, Any]], None]


def _set(node: str, name: str, value: Any) -> Mutation:
    return lambda g: g[node]["inputs"].__setitem__(name, value)


def _drop(node: str, *names: str) -> Mutation:
    def mutate(graph: dict[str, Any]) -> None:
        for name in names:
            del graph[node]["inputs"][name]

    return mutate


def _rename(node: str, old: str, new: str) -> Mutation:
    return lambda g: g[node]["inputs"].__setitem__(new, g[node]["inputs"].pop(old))


def _class(node: str, class_type: str) -> Mutation:
    return lambda g: g[node].__setitem__("class_type", class_type)


def _swap(node: str, a: str, b: str) -> Mutation:
    def mutate(graph: dict[str, Any]) -> None:
        inputs = graph[node]["inputs"]
        inputs[a], inputs[b] = inputs[b], inputs[a]

    return mutate


def _add_node(node_id: str, node: dict[str, Any]) -> Mutation:
    return lambda g: g.__setitem__(node_id, node)


SERVER_REFUSES: dict[str, tuple[Mutation, str]] = {
    "unknown class": (_class("30", "WanAnimateToVideos"), "not in the pinned stack's catalogue"),
    "required input removed": (_drop("30", "vae"), "required input 'vae' is missing"),
    "MASK into IMAGE": (
        _set("30", "face_video", ["13", 0]),
        "face_video expects IMAGE but node 13 output #0 is MASK",
    ),
    "FLOAT into INT": (_set("40", "width", ["6", 2]), "width expects INT but node 6 output #2 is FLOAT"),
    "link to a missing node": (_set("31", "model", ["999", 0]), "links node 999, which is not in the graph"),
    "link to a missing slot": (_set("31", "model", ["23", 5]), "links output #5 of node 23, which has 1"),
    "bad sampler": (_set("31", "sampler_name", "euler_a"), "sampler_name='euler_a' is not one of"),
    "bad CLIP type": (_set("24", "type", "wan2.2"), "type='wan2.2' is not one of"),
    "model not on disk": (
        _set("20", "unet_name", "wan2.1_i2v.safetensors"),
        "unet_name: models/diffusion_models/wan2.1_i2v.safetensors is not a file the model manifest installs",
    ),
    "windows sub-path": (
        _set("7", "yolo_model", "onnx\\yolov10m.onnx"),
        "yolo_model: models/detection/onnx\\yolov10m.onnx is not a file the model manifest installs",
    ),
    "length not a number": (_set("30", "length", "abc"), "length='abc' is not an integer"),
    "steps above max": (_set("41", "steps", 20000), "steps=20000 is above the maximum 10000"),
    "width below min": (_set("30", "width", 0), "width=0 is below the minimum 16"),
    "cycle": (_set("31", "latent_image", ["32", 0]), "dependency cycle"),
    "frames from an INT output": (
        _set("53", "images", ["30", 5]),
        "images expects IMAGE but node 30 output #5 is INT",
    ),
}

SERVER_LETS_THROUGH: dict[str, tuple[Mutation, str]] = {
    "width 1000": (_set("30", "width", 1000), "width=1000 must be a multiple of 16"),
    "length 80": (_set("3040", "length", 80), "length=80 must be 4n+1"),
    "width as a string": (_set("30", "width", "1280"), "width='1280' is not an integer"),
    "height truncated": (_set("30", "height", 720.9), "height=720.9 is not an integer"),
    "boolean as a string": (_set("9", "draw_head", "false"), "draw_head='false' is not a JSON boolean"),
    "misspelled character_mask": (
        _rename("40", "character_mask", "charcter_mask"),
        "unknown input 'charcter_mask' (did you mean 'character_mask'?)",
    ),
    "core WanAnimateToVideo (mask three frames off)": (
        _class("40", "WanAnimateToVideo"),
        "node 40 (WanAnimateToVideo): replacement windows must use WanAnimateToVideoOfficialMask",
    ),
    "pose from the unpadded driving frames": (
        _set("8", "images", ["6", 0]),
        "images comes from GetVideoComponents output #0, expected ImageBatchReflectPad output #0",
    ),
    "conditioning padded too short": (
        _set("15", "length", 250),
        "conditions on driving frames 216..292, but 15 pads them to 250: frames 250.. would be invented",
    ),
    "move mode (mask and background removed)": (
        _drop("3040", "background_video", "character_mask"),
        "node 3040 (WanAnimateToVideoOfficialMask): background_video is not connected",
    ),
    "pose and background swapped": (
        _swap("30", "pose_video", "background_video"),
        "pose_video comes from DrawMaskOnImage",
    ),
    "inverted mask": (
        _set("40", "character_mask", ["12", 1]),
        "character_mask comes from GrowMaskWithBlur output #1",
    ),
    "face landmarks instead of face crops": (
        _set("30", "face_video", ["9", 0]),
        "face_video comes from DrawViTPose",
    ),
    "chunk saved from an untrimmed window": (
        _set("53", "images", ["3043", 0]),
        "uses window 3040's frames without dropping the first trim_image frames",
    ),
    "motion frames off the 4n+1 grid": (_set("53", "motion_frames", 6), "motion_frames=6 must be 4n+1"),
    "SAM2 on cpu at fp16": (_set("10", "device", "cpu"), "device=cpu with fp16/bf16 raises at run time"),
    "SAM2 single-image segmentor": (
        _set("10", "segmentor", "single_image"),
        "reuses frame 1's box on every frame",
    ),
    "final trim longer than the video": (_set("51", "length", 4096), "the video would have 293 frames"),
    "SAM2 prompted with face boxes": (
        _set("11", "bboxes", ["8", 4]),
        "bboxes comes from PoseAndFaceDetection output #4",
    ),
    "invalid node not used by the output": (
        _add_node("99", {"class_type": "VAEDecode", "inputs": {"samples": ["404", 0]}}),
        "node 99 (VAEDecode): no output node uses it",
    ),
    "second output node": (
        _add_node("98", {"class_type": "SaveVideo", "inputs": {"filename_prefix": "x", "format": "mp4"}}),
        "exactly one output node, has 2",
    ),
    "width wired into height of an extension window": (
        _set("3040", "height", 1280),
        "width/height differ between pose, face and generation nodes",
    ),
    "pose drawn at another size": (_set("9", "height", 704), "nodes 9 are 1280x704, the job is 1280x720"),
    "extension window restarting at frame 0": (
        _set("3040", "video_frame_offset", 0),
        "video_frame_offset must be output #5 of the previous window's WanAnimateToVideo (40)",
    ),
    "extension window continuing from the wrong window": (
        _set("4040", "video_frame_offset", ["40", 5]),
        "video_frame_offset must be output #5 of the previous window's WanAnimateToVideo (3040)",
    ),
    "re-generated frames not trimmed": (
        _set("50", "images.image1", ["43", 0]),
        "uses window 40's frames without dropping the first trim_image frames",
    ),
    "windows joined out of order": (
        _swap("50", "images.image1", "images.image2"),
        "is joined after window",
    ),
    "a window missing from the join": (_drop("50", "images.image3"), "no output node uses it"),
    "reference latent not trimmed": (
        _set("32", "trim_amount", 0),
        "trim_amount must be ['30', 3] (trim_latent)",
    ),
    "background drawn with another mask": (
        _set("14", "mask", ["12", 0]),
        "background_video blacks out mask ('12', 0), but character_mask is ('13', 0)",
    ),
}


@pytest.mark.parametrize("name", list(SERVER_REFUSES) + list(SERVER_LETS_THROUGH))
def test_each_mutation_is_caught(workflow, catalogue, name):
    mutate, expected = {**SERVER_REFUSES, **SERVER_LETS_THROUGH}[name]
    graph = copy.deepcopy(workflow.build(params(240)))
    mutate(graph)
    problems = check(graph, catalogue, installed_models=load_manifest().installed())
    assert any(expected in problem for problem in problems), problems


# -- a malformed windows section fails at load, with what is wrong -------------------------------


def _edit_graph(graph: dict[str, Any], spec: dict[str, Any]) -> None:
    graph["43"]["inputs"]["samples"] = ["32", 0]  # window 1's latent, a node the spec does not map


def _longer_windows_in_the_graph_only(graph: dict[str, Any], spec: dict[str, Any]) -> None:
    """81-frame windows set in both WanAnimateToVideo nodes, but the extension's cut left at 72."""
    spec["windows"]["window_frames"] = 81
    graph["30"]["inputs"]["length"] = graph["40"]["inputs"]["length"] = 81


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda g, s: s["windows"].update(last_window="shortest"), "last_window must be one of"),
        (lambda g, s: s["windows"].update(window_frames=80), "must be 4n+1"),
        (lambda g, s: s["windows"]["extension"]["previous"].update({"31": "99"}), "names node 99"),
        (lambda g, s: s["windows"]["extension"]["previous"].pop("33"), "links window-1 node 33"),
        (_edit_graph, "links window-1 node 32"),
        (lambda g, s: g["50"]["inputs"].pop("images.image1"), "must collect exactly"),
        (lambda g, s: g["40"]["inputs"].update(length=81), "length must be windows.window_frames"),
        (_longer_windows_in_the_graph_only, "node 44: length must be window_frames - motion_frames (76)"),
        (lambda g, s: s["windows"].pop("first"), "'windows' section is malformed"),
    ],
)
def test_a_malformed_windows_section_is_refused_at_load(tmp_path, edit, message):
    graph = json.loads(WAN.read_text())
    spec = json.loads(WAN.with_suffix(".bindings.json").read_text())
    edit(graph, spec)
    (tmp_path / WAN.name).write_text(json.dumps(graph))
    (tmp_path / WAN.with_suffix(".bindings.json").name).write_text(json.dumps(spec))
    with pytest.raises(WorkerError) as caught:
        Workflow.load(tmp_path / WAN.name)
    assert caught.value.code is ErrorCode.WORKFLOW_INVALID
    assert message in caught.value.message
