"""The graph checks (worker.graph) on their own: the committed catalogue subset, ComfyUI's matching rules,
V3 dynamic inputs, the model manifest, and the model-free workflow against core nodes only."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from worker.graph.__main__ import main
from worker.graph.catalogue import (
    CATALOGUE_PATH,
    added_nodes,
    extract_catalogue,
    load_catalogue,
    load_repo_nodes,
    workflow_graphs,
)
from worker.graph.checks import check_graph
from worker.graph.comfy_checks import _types_match
from worker.models import load_manifest

REPO = Path(__file__).resolve().parents[1]
MODEL_FREE = REPO / "workflows" / "model_free_still.json"
# The pinned stack's full /object_info dumps (the reference material beside the checkout).
SHARED_CATALOGUE = REPO.parent / "shared" / "comfyui" / "object_info_stack.json"
SHARED_CORE = SHARED_CATALOGUE.with_name("object_info_core_0.33.0.json")


@pytest.fixture(scope="module")
def catalogue() -> dict[str, Any]:
    return load_catalogue()


@pytest.fixture(scope="module")
def core(catalogue) -> dict[str, Any]:
    return {
        name: entry
        for name, entry in catalogue.items()
        if not entry["python_module"].startswith("custom_nodes.")
    }


@pytest.fixture
def still() -> dict[str, Any]:
    graph = json.loads(MODEL_FREE.read_text())
    graph["5"]["inputs"]["amount"] = 24
    return graph


# -- the model-free workflow needs core ComfyUI only ---------------------------------------------


def test_model_free_workflow_passes_with_the_core_subset(core, still):
    assert check_graph(still, core, frames=24, fps=24.0) == []


def test_the_core_subset_really_lacks_the_custom_nodes(core):
    wan = workflow_graphs()["wan22_animate_replace.json"]
    problems = check_graph(wan, core)
    assert (
        "node 8 (PoseAndFaceDetection): class is not in the pinned stack's catalogue (missing_node_type)"
        in problems
    )


@pytest.mark.skipif(not SHARED_CORE.is_file(), reason="../shared is not beside the checkout")
def test_model_free_workflow_passes_with_the_full_core_catalogue(still):
    assert check_graph(still, json.loads(SHARED_CORE.read_text()), frames=24, fps=24.0) == []


def test_frame_count_and_fps_of_the_model_free_workflow_are_checked(core, still):
    assert check_graph(still, core, frames=25) == [
        "node 7 (SaveVideo): the video would have 24 frames, the driving video has 25"
    ]
    assert check_graph(still, core, fps=30.0) == ["nodes 6 write 24 fps, the job is 30 fps"]


# -- the committed catalogue is the pinned stack's -----------------------------------------------


@pytest.mark.skipif(not SHARED_CATALOGUE.is_file(), reason="../shared is not beside the checkout")
def test_committed_catalogue_matches_a_fresh_extraction(tmp_path):
    out = tmp_path / "object_info_pinned.json"
    assert main(["extract-catalogue", "--source", str(SHARED_CATALOGUE), "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == json.loads(CATALOGUE_PATH.read_text())


def test_extraction_cuts_the_committed_catalogue_from_a_dump_that_holds_it(tmp_path, catalogue):
    """Without ../shared: the committed classes as the dump give the committed catalogue back."""
    source, out = tmp_path / "object_info.json", tmp_path / "catalogue.json"
    source.write_text(json.dumps(catalogue))
    assert main(["extract-catalogue", "--source", str(source), "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["nodes"] == catalogue
    assert written["stack"] == json.loads(CATALOGUE_PATH.read_text())["stack"]
    assert written["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()


def test_extraction_from_a_dump_without_a_used_class_fails_and_writes_nothing(tmp_path, catalogue, capsys):
    source, out = tmp_path / "object_info.json", tmp_path / "catalogue.json"
    source.write_text(json.dumps({k: v for k, v in catalogue.items() if k != "KSampler"}))
    assert main(["extract-catalogue", "--source", str(source), "--out", str(out)]) == 2
    assert "error: classes not in the source catalogue: ['KSampler']" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [source]
    source.write_text("{not json")
    assert main(["extract-catalogue", "--source", str(source), "--out", str(out)]) == 2
    assert "error: cannot extract the catalogue" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [source]


def test_committed_catalogue_covers_every_class_the_workflows_use(catalogue):
    graphs = [*workflow_graphs().values(), added_nodes()]  # added: a chunk's frame loader
    used = {node["class_type"] for graph in graphs for node in graph.values()}
    assert "WanWorkerLoadMotionFrames" in used
    extended = {
        entry["like"] for name, entry in load_repo_nodes().items() if name in used and "like" in entry
    }
    assert extended == {
        "WanAnimateToVideo",
        "LoraLoaderModelOnly",
        "Sam2Segmentation",
        "OnnxDetectionModelLoader",
    }
    assert used | extended == set(catalogue)
    raw = json.loads(CATALOGUE_PATH.read_text())
    assert "ComfyUI 0.33.0 (783545f6)" in raw["stack"] and len(raw["source_sha256"]) == 64


def test_extraction_empties_input_folder_listings_and_refuses_unknown_classes():
    source = {
        "LoadImage": {"input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}}},
        "LoadVideo": {"input": {"required": {"file": ["COMBO", {"options": ["a.mp4"]}]}}},
    }
    graph = {"1": {"class_type": "LoadImage", "inputs": {}}, "2": {"class_type": "LoadVideo", "inputs": {}}}
    subset = extract_catalogue(source, [graph])
    assert subset["nodes"]["LoadImage"]["input"]["required"]["image"][0] == []
    assert subset["nodes"]["LoadVideo"]["input"]["required"]["file"][1]["options"] == []
    assert source["LoadImage"]["input"]["required"]["image"][0] == ["a.png", "b.png"]  # source untouched
    with pytest.raises(KeyError, match="Nope"):
        extract_catalogue(source, [{"1": {"class_type": "Nope", "inputs": {}}}])


# -- ComfyUI's matching rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "expected", "ok"),
    [
        ("IMAGE", "IMAGE", True),
        ("MASK", "IMAGE", False),
        ("BBOX,", "BBOX", True),  # WanAnimatePreprocess's typo parses as {BBOX, ""}
        ("*", "LATENT", True),
        ("INT", "*", True),
        ("STRING,INT", "INT", True),  # non-strict: any overlap
        ("FLOAT", "INT", False),
        (["a", "b"], "COMBO", True),
        (["a", "b"], "STRING", False),
    ],
)
def test_types_match_like_the_server(received, expected, ok):
    assert _types_match(received, expected) is ok


def test_link_shapes_and_constants_for_link_only_inputs(core, still):
    still["4"]["inputs"]["image"] = [1, 0]  # node ids are strings in API graphs
    still["6"]["inputs"]["images"] = "frames.png"
    problems = check_graph(still, core)
    assert "node 4 (ImageScale): image=[1, 0] is not a link [node_id, output_slot]" in problems
    assert (
        "node 6 (CreateVideo): images must be linked to a IMAGE output, not the value 'frames.png'"
        in problems
    )


def test_input_folder_files_are_not_matched_against_the_catalogue(core, still):
    still["1"]["inputs"]["image"] = "wan-worker/job-7/avatar.png"
    assert check_graph(still, core) == []
    still["1"]["inputs"]["image"] = ""
    assert check_graph(still, core) == [
        "node 1 (LoadImage): image must name a file in ComfyUI's input folder"
    ]


def test_graph_shape_problems(core, still):
    broken = copy.deepcopy(still)
    broken["4"]["inputs"]["image"] = ["5", 0]  # 4 -> 5 -> 4
    assert any(p.startswith("dependency cycle: ") for p in check_graph(broken, core))
    no_output = copy.deepcopy(still)
    del no_output["7"]
    problems = check_graph(no_output, core)
    assert "the graph must have exactly one output node, has 0: []" in problems
    assert check_graph([], core) == ["the graph is not an object of nodes"]  # type: ignore[arg-type]
    assert check_graph({"1": {"inputs": {}}}, core) == ["node 1: no class_type"]


# -- V3 dynamic inputs ---------------------------------------------------------------------------


def test_autogrow_inputs_are_named_prefix_index_up_to_the_maximum(catalogue, still):
    graph = copy.deepcopy(still)
    graph["8"] = {
        "class_type": "BatchImagesNode",
        "inputs": {"images.image0": ["5", 0], "images.image7": ["4", 0]},
    }
    graph["6"]["inputs"]["images"] = ["8", 0]
    assert check_graph(graph, catalogue) == []
    graph["8"]["inputs"] = {"images.image1": ["5", 0], "images.image50": ["4", 0]}
    problems = check_graph(graph, catalogue)
    assert "node 8 (BatchImagesNode): required input 'images.image0' is missing" in problems
    assert any(p.startswith("node 8 (BatchImagesNode): unknown input 'images.image50'") for p in problems)


def test_dynamic_combo_options_open_their_own_inputs(core, still):
    save = still["7"]["inputs"]
    assert save["format.codec.encoding"] == "re-encode"  # the pinned graph sets CRF and colours
    del save["format.codec.encoding.crf"], save["format.codec.encoding.color_space"]
    problems = check_graph(still, core)
    assert "node 7 (SaveVideo): required input 'format.codec.encoding.crf' is missing" in problems
    save.update({"format.codec.encoding.crf": 18.0, "format.codec.encoding.color_space": "sRGB"})
    assert check_graph(still, core) == []
    save["format.codec.encoding.crf"] = 99.0
    assert check_graph(still, core) == [
        "node 7 (SaveVideo): format.codec.encoding.crf=99.0 is above the maximum 51.0"
    ]
    save["format"] = "webm"  # webm has no h264 option
    assert "node 7 (SaveVideo): format.codec='h264' is not one of ['auto', 'av1'] (value_not_in_list)" in (
        check_graph(still, core)
    )


# -- model files ---------------------------------------------------------------------------------


def _sam2_graph(precision: str, device: str = "cuda") -> dict[str, Any]:
    return {
        "1": {
            "class_type": "DownloadAndLoadSAM2Model",
            "inputs": {
                "model": "sam2.1_hiera_base_plus.safetensors",
                "segmentor": "video",
                "device": device,
                "precision": precision,
            },
        }
    }


@pytest.mark.parametrize(
    ("precision", "loaded"),
    [
        ("fp16", "sam2.1_hiera_base_plus-fp16.safetensors"),
        ("bf16", "sam2.1_hiera_base_plus-fp16.safetensors"),
    ],
)
def test_sam2_at_half_precision_loads_the_fp16_file(catalogue, precision, loaded):
    graph = _sam2_graph(precision)
    assert not [
        p for p in check_graph(graph, catalogue, installed_models={"sam2": {loaded}}) if "manifest" in p
    ]
    only_fp32 = {"sam2": {"sam2.1_hiera_base_plus.safetensors"}}
    assert f"models/sam2/{loaded} is not a file the model manifest installs" in " ".join(
        check_graph(graph, catalogue, installed_models=only_fp32)
    )


def test_sam2_at_fp32_loads_the_plain_file(catalogue):
    installed = {"sam2": {"sam2.1_hiera_base_plus.safetensors"}}
    assert not [
        p
        for p in check_graph(_sam2_graph("fp32", "cpu"), catalogue, installed_models=installed)
        if "sam2" in p
    ]


def test_built_in_vae_values_are_not_files(catalogue):
    graph = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "pixel_space"}}}
    assert not [p for p in check_graph(graph, catalogue, installed_models={}) if "manifest" in p]


@pytest.mark.parametrize("argv", [[], ["check"], ["print"], ["extract-catalogue"]])
def test_cli_requires_a_command_and_its_arguments(argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


# -- LoRAs: the strict loader (comfyui_nodes/wan_worker_nodes/lora.py) ------------------------------


def _pinned_wan_graph() -> dict[str, Any]:
    return json.loads(json.dumps(workflow_graphs()["wan22_animate_replace.json"]))


@pytest.mark.parametrize("node", ["21", "22"])
def test_wan_graphs_refuse_the_core_lora_loader(catalogue, node):
    graph = _pinned_wan_graph()
    assert graph[node]["class_type"] == "StrictLoraLoaderModelOnly"
    assert not [p for p in check_graph(graph, catalogue) if "LoRA" in p]
    graph[node]["class_type"] = "LoraLoaderModelOnly"
    problems = check_graph(graph, catalogue)
    expected = f"node {node} (LoraLoaderModelOnly): LoRAs must load through StrictLoraLoaderModelOnly"
    assert [p for p in problems if p.startswith(expected) and "lora key not loaded" in p]


def test_the_strict_lora_loaders_files_are_checked_against_the_manifest(catalogue):
    graph = _pinned_wan_graph()
    assert check_graph(graph, catalogue, installed_models=load_manifest().installed()) == []
    graph["22"]["inputs"]["lora_name"] = "WanAnimate_relight_lora_fp16.safetensors"  # pinned before
    assert check_graph(graph, catalogue, installed_models=load_manifest().installed()) == [
        "node 22 (StrictLoraLoaderModelOnly): lora_name: "
        "models/loras/WanAnimate_relight_lora_fp16.safetensors is not a file the model manifest installs"
    ]


# -- model names: the manifest decides, never the capture machine's folder listing ---------------


def test_extraction_empties_model_folder_listings_but_keeps_fixed_lists():
    source = {
        "UNETLoader": {
            "input": {"required": {"unet_name": [["captured.safetensors"]], "weight_dtype": [["default"]]}}
        },
        "OnnxDetectionModelLoader": {"input": {"required": {"yolo_model": [["y.onnx"], {"tooltip": "t"}]}}},
        "DownloadAndLoadSAM2Model": {"input": {"required": {"model": [["sam2.1_hiera_tiny.safetensors"]]}}},
    }
    graph = {str(i): {"class_type": name, "inputs": {}} for i, name in enumerate(source)}
    nodes = extract_catalogue(source, [graph])["nodes"]
    assert nodes["UNETLoader"]["input"]["required"]["unet_name"][0] == []
    assert nodes["UNETLoader"]["input"]["required"]["weight_dtype"][0] == ["default"]
    assert nodes["OnnxDetectionModelLoader"]["input"]["required"]["yolo_model"][0] == []
    # the pack's own fixed list of SAM2 names is code, not a folder listing
    assert nodes["DownloadAndLoadSAM2Model"]["input"]["required"]["model"][0] == [
        "sam2.1_hiera_tiny.safetensors"
    ]


def test_the_committed_catalogue_holds_no_model_folder_listing(catalogue):
    assert catalogue["UNETLoader"]["input"]["required"]["unet_name"][0] == []
    assert catalogue["OnnxDetectionModelLoaderChecked"]["input"]["required"]["yolo_model"][0] == []


def test_model_names_are_checked_against_the_manifest_not_the_catalogue(catalogue):
    graph = {
        "1": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "wan2.2_animate_14B_bf16.safetensors", "weight_dtype": "default"},
        }
    }
    assert check_graph(graph, catalogue, installed_models=load_manifest().installed("bf16")) == [
        "the graph must have exactly one output node, has 0: []"
    ]
    problems = check_graph(graph, catalogue, installed_models=load_manifest().installed())
    assert (
        "node 1 (UNETLoader): unet_name: models/diffusion_models/wan2.2_animate_14B_bf16.safetensors "
        "is not a file the model manifest installs" in problems
    )
    assert not [p for p in problems if "value_not_in_list" in p]
    graph["1"]["inputs"]["unet_name"] = ""
    assert "node 1 (UNETLoader): unet_name must name a model file" in check_graph(graph, catalogue)


def test_cli_follows_the_model_variant(monkeypatch, capsys):
    assert main(["check", "--frames", "240", "--variant", "bf16"]) == 0
    assert main(["check", "--frames", "240"]) == 0
    monkeypatch.setenv("MODEL_VARIANT", "bf16")
    capsys.readouterr()
    assert main(["print", "--frames", "24"]) == 0
    assert '"unet_name": "wan2.2_animate_14B_bf16.safetensors"' in capsys.readouterr().out


# -- pack nodes Wan graphs run through this repository's guards -----------------------------------


def _wan_graph() -> dict[str, Any]:
    return copy.deepcopy(workflow_graphs()["wan22_animate_replace.json"])


@pytest.mark.parametrize(
    ("node", "pack", "ours"),
    [
        ("11", "Sam2Segmentation", "Sam2SegmentationReleased"),
        ("7", "OnnxDetectionModelLoader", "OnnxDetectionModelLoaderChecked"),
    ],
)
def test_wan_graphs_refuse_the_pack_class_a_guard_replaces(catalogue, node, pack, ours):
    graph = _wan_graph()
    assert graph[node]["class_type"] == ours
    assert not [p for p in check_graph(graph, catalogue) if pack in p]
    graph[node]["class_type"] = pack
    problems = check_graph(graph, catalogue)
    assert [p for p in problems if p.startswith(f"node {node} ({pack}): Wan graphs must use {ours} instead")]


def test_sam2_rules_apply_to_the_releasing_segmenter(catalogue):
    graph = _wan_graph()
    graph["10"]["inputs"]["segmentor"] = "single_image"
    assert (
        "node 11 (Sam2SegmentationReleased): single_image reuses frame 1's box on every frame; "
        "track with 'video'" in check_graph(graph, catalogue)
    )
    graph = _wan_graph()
    graph["11"]["inputs"]["bboxes"] = ["8", 2]
    assert [
        p
        for p in check_graph(graph, catalogue)
        if p.startswith("node 11 (Sam2SegmentationReleased): bboxes comes from")
    ]
