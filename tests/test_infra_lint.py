"""The image build's own logic, checked without Docker: docker/install_custom_nodes.py (pack list, pinned
clones with a real git, requirement filtering, the post-install and import checks) and the build context
(.dockerignore lets through exactly what the Dockerfile copies). The linters themselves run in
scripts/lint_infra.sh."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location(
    "install_custom_nodes", ROOT / "docker" / "install_custom_nodes.py"
)
assert _spec and _spec.loader
icn = importlib.util.module_from_spec(_spec)
sys.modules["install_custom_nodes"] = icn
_spec.loader.exec_module(icn)

SHA_A = "a" * 40


# ------------------------------------------------------------------------------------------- pack list


def test_the_pack_list_pins_the_four_packs_the_workflow_needs() -> None:
    packs = icn.read_pack_list(ROOT / "docker" / "custom_nodes.txt")
    assert [p.folder for p in packs] == [
        "ComfyUI-WanAnimatePreprocess",
        "ComfyUI-KJNodes",
        "ComfyUI-segment-anything-2",
        "ComfyUI-VideoHelperSuite",
    ]
    assert all(p.url.startswith("https://github.com/") for p in packs)
    assert not any("controlnet_aux" in p.folder for p in packs)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ("Pack https://github.com/o/p", "expected 'folder repository commit'"),
        ("Pack https://github.com/o/p 0e0b6a2", "full 40-character"),
        ("Pack http://github.com/o/p " + SHA_A, "must be an https:// URL"),
        ("../evil https://github.com/o/p " + SHA_A, "plain folder name"),
        (f"Pack https://github.com/o/p {SHA_A}\nPack https://github.com/o/q {SHA_A}", "listed twice"),
        ("# only a comment", "lists no pack"),
    ],
)
def test_a_malformed_pack_list_stops_the_build(tmp_path: Path, line: str, complaint: str) -> None:
    path = tmp_path / "custom_nodes.txt"
    path.write_text(line + "\n")
    with pytest.raises(icn.BuildError, match=re.escape(complaint)):
        icn.read_pack_list(path)


# ------------------------------------------------------------------------------------------------ clone


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def upstream(tmp_path: Path) -> tuple[Path, str, str]:
    """A repository with two commits that serves any commit by sha (as GitHub does)."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    _git("config", "user.email", "t@example.invalid", cwd=repo)
    _git("config", "user.name", "t", cwd=repo)
    _git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=repo)
    (repo / "nodes.py").write_text("VERSION = 1\n")
    _git("add", ".", cwd=repo)
    _git("commit", "-qm", "one", cwd=repo)
    first = _git("rev-parse", "HEAD", cwd=repo)
    (repo / "nodes.py").write_text("VERSION = 2\n")
    _git("commit", "-qam", "two", cwd=repo)
    return repo, first, _git("rev-parse", "HEAD", cwd=repo)


def test_clone_checks_out_exactly_the_pinned_commit(tmp_path: Path, upstream: tuple[Path, str, str]) -> None:
    repo, first, _ = upstream
    dest = tmp_path / "custom_nodes" / "Pack"
    icn.clone(f"file://{repo}", first, dest)
    assert _git("rev-parse", "HEAD", cwd=dest) == first
    assert (dest / "nodes.py").read_text() == "VERSION = 1\n"


def test_clone_list_installs_every_pack(tmp_path: Path, upstream: tuple[Path, str, str]) -> None:
    repo, first, second = upstream
    listing = tmp_path / "custom_nodes.txt"
    listing.write_text(f"Old file://{repo} {first}\nNew file://{repo} {second}  # newest\n")
    assert icn.main(["clone-list", str(listing), str(tmp_path / "nodes")]) == 0
    assert (tmp_path / "nodes" / "Old" / "nodes.py").read_text() == "VERSION = 1\n"
    assert (tmp_path / "nodes" / "New" / "nodes.py").read_text() == "VERSION = 2\n"


def test_clone_of_a_commit_the_repository_lacks_fails(
    tmp_path: Path, upstream: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(icn, "FETCH_ATTEMPTS", 1)
    repo, _, _ = upstream
    with pytest.raises(icn.BuildError, match=f"cannot fetch {SHA_A}"):
        icn.clone(f"file://{repo}", SHA_A, tmp_path / "Pack")


def test_clone_into_a_non_empty_folder_fails(tmp_path: Path, upstream: tuple[Path, str, str]) -> None:
    repo, first, _ = upstream
    dest = tmp_path / "Pack"
    dest.mkdir()
    (dest / "leftover.py").write_text("")
    with pytest.raises(icn.BuildError, match="is not empty"):
        icn.clone(f"file://{repo}", first, dest)


# ----------------------------------------------------------------------------------------- requirements


def test_every_opencv_and_onnxruntime_variant_is_dropped() -> None:
    text = (
        "onnx\nonnxruntime-gpu\nopencv-python>=4.8  # pose\nOpenCV_Python_Headless\n"
        "opencv-contrib-python[extra]==4.10.0.84\nonnxruntime; sys_platform == 'linux'\n"
        "imageio-ffmpeg\n  # comment\n\nmatplotlib>=3.8"
    )
    assert icn.filtered_requirements(text, "pack") == ["onnx", "imageio-ffmpeg", "matplotlib>=3.8"]


@pytest.mark.parametrize(
    "line", ["-e .", "--extra-index-url https://x.invalid/simple", "git+https://x/y.git"]
)
def test_requirement_lines_that_would_bypass_the_pins_stop_the_build(line: str) -> None:
    with pytest.raises(icn.BuildError, match="unsupported requirement line"):
        icn.filtered_requirements(f"numpy\n{line}\n", "pack/requirements.txt")


def test_one_requirements_file_for_comfyui_and_the_packs(tmp_path: Path) -> None:
    comfy = tmp_path / "comfyui"
    (comfy / "custom_nodes" / "A").mkdir(parents=True)
    (comfy / "custom_nodes" / "B").mkdir()
    (comfy / "requirements.txt").write_text("torch\nnumpy>=1.25.0\n")
    (comfy / "custom_nodes" / "A" / "requirements.txt").write_text("onnx\nonnxruntime-gpu\nopencv-python")
    packs = [icn.Pack("A", "https://github.com/o/a", SHA_A), icn.Pack("B", "https://github.com/o/b", SHA_A)]
    text = icn.build_requirements(comfy, packs, comfy / "custom_nodes")
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines == ["torch", "numpy>=1.25.0", "onnx", "opencv-contrib-python-headless", "onnxruntime-gpu"]
    assert "# B: no requirements.txt" in text


def test_the_constraints_pin_the_single_wheels_the_requirements_name() -> None:
    constraints = (ROOT / "docker" / "constraints.txt").read_text()
    pinned = {
        icn.requirement_name(line): line.split("==")[1]
        for line in constraints.splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert icn.OPENCV_CHOICE in pinned and icn.ONNXRUNTIME_CHOICE in pinned
    assert not (icn.OPENCV_VARIANTS - {icn.OPENCV_CHOICE}) & pinned.keys()
    assert not any(icn.BASE_PINNED.match(name) for name in pinned), "the base image pins the torch family"


# ---------------------------------------------------------------------------------- post-install checks


FREEZE = [
    "numpy==2.1.2",
    "torch==2.8.0+cu128",
    "torchvision==0.23.0+cu128",
    "nvidia-cudnn-cu12==9.10.2.21",
    "triton==3.4.0",
    "torchaudio @ file:///wheels/torchaudio.whl",
    "jupyterlab==4.2.0",
]


def test_the_base_image_pins_are_the_torch_family_at_their_exact_versions() -> None:
    assert icn.base_constraints(FREEZE) == [
        "nvidia-cudnn-cu12==9.10.2.21",
        "torch==2.8.0+cu128",
        "torchvision==0.23.0+cu128",
        "triton==3.4.0",
    ]


def test_a_base_image_without_torch_stops_the_build() -> None:
    with pytest.raises(icn.BuildError, match="no torch"):
        icn.base_constraints(["numpy==2.1.2"])


GOOD_INSTALL = {
    "torch": "2.8.0+cu128",
    "opencv-contrib-python-headless": "5.0.0.93",
    "onnxruntime-gpu": "1.26.0",
}


def test_a_clean_install_has_no_problem() -> None:
    assert icn.python_problems(["torch==2.8.0+cu128"], GOOD_INSTALL, []) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"torch": "2.9.1"}, "torch of the base image changed: 2.8.0+cu128 -> 2.9.1"),
        ({"opencv-python": "5.0.0.93"}, "expected only opencv-contrib-python-headless"),
        ({"onnxruntime": "1.32.0"}, "the CPU package onnxruntime is installed"),
    ],
)
def test_the_install_check_names_what_went_wrong(change: dict[str, str], complaint: str) -> None:
    problems = icn.python_problems(["torch==2.8.0+cu128"], {**GOOD_INSTALL, **change}, [])
    assert any(complaint in problem for problem in problems), problems


def test_new_pip_check_problems_fail_the_install_check() -> None:
    problems = icn.python_problems([], GOOD_INSTALL, ["transformers 5.0 has requirement tokenizers<0.23"])
    assert problems == ["pip check: transformers 5.0 has requirement tokenizers<0.23"]


# ---------------------------------------------------------------------------------------- import check

# As ComfyUI 0.33 writes it to the console: every record starts with its level tag in ANSI colours.
INFO = "\x1b[32m[INFO]\x1b[0m "
IMPORT_LOG = f"""\
{INFO}Total VRAM 0 MB, total RAM 23996 MB
{INFO}
Import times for custom nodes:
{INFO}   0.0 seconds: /comfyui/custom_nodes/websocket_image_save.py
{INFO}   0.0 seconds: /comfyui/custom_nodes/ComfyUI-WanAnimatePreprocess
{INFO}   0.1 seconds: /comfyui/custom_nodes/wan_worker_attention
{INFO}   0.3 seconds: /comfyui/custom_nodes/ComfyUI-KJNodes
{INFO}
"""
FOLDERS = ["ComfyUI-KJNodes", "ComfyUI-WanAnimatePreprocess", "wan_worker_attention"]


def test_an_import_log_where_every_folder_loaded_passes() -> None:
    assert icn.import_problems(IMPORT_LOG, FOLDERS) == []


def test_a_pack_marked_import_failed_fails_the_build() -> None:
    log = IMPORT_LOG.replace("0.3 seconds: /comfyui", "0.3 seconds (IMPORT FAILED): /comfyui")
    assert icn.import_problems(log, FOLDERS) == [
        "ComfyUI-KJNodes: IMPORT FAILED (its traceback is in the log above)"
    ]


def test_a_folder_missing_from_the_log_fails_the_build() -> None:
    problems = icn.import_problems(IMPORT_LOG, [*FOLDERS, "ComfyUI-VideoHelperSuite"])
    assert problems == [
        "ComfyUI-VideoHelperSuite: not in ComfyUI's 'Import times for custom nodes' list (not loaded)"
    ]


def test_a_core_node_import_failure_fails_the_build_too() -> None:
    log = IMPORT_LOG + "\x1b[1m\x1b[33m[WARNING]\x1b[0m IMPORT FAILED: nodes_video.py\n"
    assert icn.import_problems(log, FOLDERS) == ["ComfyUI reports: [WARNING] IMPORT FAILED: nodes_video.py"]


def test_the_glsl_core_nodes_may_fail_the_workflow_does_not_use_them() -> None:
    # Seen with the real ComfyUI 0.33 on a machine without comfy-angle / libEGL.
    log = IMPORT_LOG + "\x1b[1m\x1b[33m[WARNING]\x1b[0m IMPORT FAILED: nodes_glsl.py\n"
    assert icn.import_problems(log, FOLDERS) == []


def test_check_imports_command_reads_the_custom_nodes_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    nodes = tmp_path / "custom_nodes"
    for folder in [*FOLDERS, "__pycache__", "Old.disabled"]:
        (nodes / folder).mkdir(parents=True)
    (nodes / "websocket_image_save.py").write_text("")
    log = tmp_path / "comfy.log"
    log.write_text(IMPORT_LOG)
    assert icn.main(["check-imports", str(log), str(nodes)]) == 0
    (nodes / "ComfyUI-VideoHelperSuite").mkdir()
    assert icn.main(["check-imports", str(log), str(nodes)]) == 1
    assert "BUILD ERROR: custom node import check failed" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- build context


def _copy_sources(dockerfile: str) -> list[str]:
    """What the Dockerfile copies from the build context (not from another stage)."""
    sources = []
    for line in dockerfile.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from=") for w in words):
            args = [w for w in words[1:] if not w.startswith("--")]
            sources.extend(args[:-1])
    return sources


def test_the_build_context_lets_through_exactly_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = {source.rstrip("/") for source in _copy_sources((ROOT / "Dockerfile").read_text())}
    assert sources == allowed
    missing = sorted(source for source in sources if not (ROOT / source).exists())
    assert not missing, f"the Dockerfile copies paths this repository lacks: {missing}"


# ---------------------------------------------------------------------------------- layers and the venv


def _instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions of the final stage, continuation lines joined, comments dropped."""
    joined, current = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current = f"{current} {line.rstrip(chr(92)).strip()}".strip()
        if not line.endswith("\\"):
            joined.append(current)
            current = ""
    last_from = max(i for i, line in enumerate(joined) if line.startswith("FROM "))
    return joined[last_from:]


DOCKERFILE = (ROOT / "Dockerfile").read_text()
FINAL = _instructions(DOCKERFILE)


def _index(predicate) -> list[int]:
    return [i for i, line in enumerate(FINAL) if predicate(line)]


def test_the_expensive_layers_are_built_from_comment_free_inputs_and_the_app_comes_last() -> None:
    expensive = _index(lambda line: line.startswith("RUN ") and ("clone" in line or "pip install" in line))
    assert expensive, "no clone or install step found"
    copies_before = [FINAL[i] for i in range(expensive[-1]) if FINAL[i].startswith("COPY ")]
    assert copies_before and all("--from=inputs /inputs/" in line for line in copies_before), copies_before
    app = _index(
        lambda line: line.startswith("COPY ") and "--from=" not in line and "comfyui_nodes" not in line
    )
    import_check = _index(lambda line: "check-imports" in line)[0]
    assert app and min(app) > import_check, "the worker's code must be copied after every expensive layer"
    assert "RUN python /src/install_custom_nodes.py normalize /src /inputs" in DOCKERFILE


def test_packages_go_into_a_venv_over_the_base_python_never_into_the_system_python() -> None:
    venv = _index(lambda line: line == "RUN python -m venv --system-site-packages /opt/venv")
    path = _index(lambda line: line.startswith("ENV ") and "PATH=/opt/venv/bin:${PATH}" in line)
    pip = _index(lambda line: "pip install" in line or "install_custom_nodes.py" in line)
    assert venv and path and pip
    assert venv[0] < path[0] < min(pip), "the venv comes first on PATH before anything runs pip"
    assert "PIP_BREAK_SYSTEM_PACKAGES=0" in FINAL[path[0]]
    assert not any("COMFY_URL=" in line for line in FINAL if line.startswith("ENV ")), "COMFY_PORT decides"


# ----------------------------------------------------------------------------------------- normalize


def _inputs(folder: Path, helper: str, pins: str) -> Path:
    folder.mkdir()
    (folder / "install_custom_nodes.py").write_text(helper)
    (folder / "custom_nodes.txt").write_text(pins)
    (folder / "requirements.txt").write_text("runpod==1.12.0\n")
    return folder


def test_a_comment_change_leaves_the_normalized_inputs_byte_identical(tmp_path: Path) -> None:
    helper = (ROOT / "docker" / "install_custom_nodes.py").read_text()
    pins = (ROOT / "docker" / "custom_nodes.txt").read_text()
    commented = helper.replace("def clone(", "# a new comment\ndef clone(") + "\n# trailing\n"
    first = _inputs(tmp_path / "a", helper, pins)
    second = _inputs(tmp_path / "b", commented, "# new header comment\n\n" + pins.replace("  ", "    "))
    changed = _inputs(tmp_path / "c", helper, pins.replace("4ee72c06", "5ee72c06"))

    out = {
        name: icn.normalize_inputs(folder, tmp_path / f"out-{name}")
        for name, folder in (("a", first), ("b", second), ("c", changed))
    }

    read = {name: {p.name: p.read_bytes() for p in paths} for name, paths in out.items()}
    assert read["a"] == read["b"]
    assert read["a"]["custom_nodes.txt"] != read["c"]["custom_nodes.txt"]
    normalized = tmp_path / "out-a"
    assert icn.read_pack_list(normalized / "custom_nodes.txt") == icn.read_pack_list(
        first / "custom_nodes.txt"
    )
    helper_help = subprocess.run(
        [sys.executable, str(normalized / "install_custom_nodes.py"), "--help"],
        capture_output=True,
        text=True,
    )
    assert helper_help.returncode == 0 and "normalize SRC_DIR OUT_DIR" in helper_help.stdout


# --------------------------------------------------------------------------------------------- CI


def test_every_action_is_pinned_by_commit_with_its_release_in_a_comment() -> None:
    uses = []
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        uses += [
            line.strip()
            for line in workflow.read_text().splitlines()
            if line.strip().startswith(("- uses:", "uses:"))
        ]
    assert uses
    for line in uses:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+", line), line


def test_ci_runs_the_tests_on_the_images_python() -> None:
    for workflow in sorted((ROOT / ".github" / "workflows").glob("*.yml")):
        versions = re.findall(r'python-version: "([\d.]+)"', workflow.read_text())
        assert versions and set(versions) == {"3.12"}, workflow.name


def test_the_cute_dsl_compiler_is_not_taken_for_the_base_image_torch_family() -> None:
    assert icn.BASE_PINNED.match("nvidia-cudnn-cu12") and icn.BASE_PINNED.match("nvidia-cuda-runtime-cu12")
    assert not icn.BASE_PINNED.match("nvidia-cutlass-dsl")
    assert not icn.BASE_PINNED.match("nvidia-cutlass-dsl-libs-cu12")
