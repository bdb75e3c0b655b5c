"""Build helper of the worker image: ComfyUI and its custom node packs at pinned commits, one set of
Python requirements for all of them, and the checks that make the build fail loudly.

Runs inside the Dockerfile with the Python of the image's virtual environment, which is layered over the
base image's (standard library only). Subcommands:

    normalize SRC_DIR OUT_DIR         the build's inputs without comments and blank lines (Python files
                                      re-printed from their syntax tree), so that the expensive layers
                                      built from them stay cached when only a comment changed
    clone URL COMMIT DEST             shallow-fetch exactly COMMIT of URL into DEST (empty or absent)
    clone-list LIST DEST_DIR          the same for every pack of docker/custom_nodes.txt
    requirements --comfy-dir D --nodes-list LIST --nodes-dir D --out FILE
                                      one requirements file: ComfyUI's and every pack's, with the
                                      OpenCV / ONNX Runtime variants replaced by the single chosen ones
    snapshot DIR                      before installing: pins of the base image's torch family
                                      (DIR/base-constraints.txt) and its `pip check` (DIR/pip-check.txt)
    check-python DIR                  after installing: torch family unchanged, one OpenCV wheel, the
                                      GPU ONNX Runtime with CUDA, no new `pip check` problem; lists the
                                      base image's packages the environment shadows with other versions
    check-imports LOG CUSTOM_NODES_DIR
                                      every folder of CUSTOM_NODES_DIR imported in ComfyUI's start log
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

OPENCV_VARIANTS = frozenset(
    {"opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless"}
)
OPENCV_CHOICE = "opencv-contrib-python-headless"
ONNXRUNTIME_VARIANTS = frozenset({"onnxruntime", "onnxruntime-gpu"})
ONNXRUNTIME_CHOICE = "onnxruntime-gpu"
# What the base image decides and nothing may replace: torch and the CUDA libraries it was built with
# (nvidia-*), but not NVIDIA's CuTe DSL compiler (nvidia-cutlass-dsl*), which flash-attn-4 adds and
# constraints.txt pins.
BASE_PINNED = re.compile(
    r"^(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-(?!cutlass-dsl)[a-z0-9-]+)$"
)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# ComfyUI 0.33 logs "[INFO]    0.3 seconds: /comfyui/custom_nodes/ComfyUI-KJNodes" (the level tag in ANSI
# colours), or "... seconds (IMPORT FAILED): ..."
IMPORT_TIME_RE = re.compile(r"(?:^|\s)\d+(?:\.\d+)? seconds( \(IMPORT FAILED\))?: (?P<path>\S.*?)\s*$")
ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CORE_IMPORT_FAILED_RE = re.compile(r"IMPORT FAILED: (?P<module>\S+)")
# Core node modules whose import may fail in the image without harm: the workflow uses none of their nodes.
TOLERATED_CORE_FAILURES = {
    "nodes_glsl.py": "GLSL shader nodes; they need an EGL/OpenGL ES stack (comfy-angle + system libEGL)",
}
FETCH_ATTEMPTS = 3


class BuildError(Exception):
    """A problem that must stop the image build, with the message to show."""


@dataclass(frozen=True)
class Pack:
    folder: str
    url: str
    commit: str


def normalize(name: str) -> str:
    """PEP 503 name: 'OpenCV_Python' and 'opencv.python' are both 'opencv-python'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pack_list(path: Path) -> list[Pack]:
    packs: list[Pack] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise BuildError(f"{where}: expected 'folder repository commit', got {line!r}")
        folder, url, commit = fields
        if not FOLDER_RE.match(folder):
            raise BuildError(f"{where}: {folder!r} is not a plain folder name")
        if not url.startswith(("https://", "file://")):
            raise BuildError(f"{where}: repository {url!r} must be an https:// URL (file:// in tests)")
        if not COMMIT_RE.match(commit):
            raise BuildError(f"{where}: commit {commit!r} must be a full 40-character lowercase sha")
        if any(pack.folder == folder for pack in packs):
            raise BuildError(f"{where}: folder {folder!r} is listed twice")
        packs.append(Pack(folder, url, commit))
    if not packs:
        raise BuildError(f"{path}: lists no pack")
    return packs


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def clone(url: str, commit: str, dest: Path) -> None:
    """Fetch exactly ``commit`` (GitHub serves any reachable commit by sha), nothing else."""
    if not COMMIT_RE.match(commit):
        raise BuildError(f"commit {commit!r} must be a full 40-character lowercase sha")
    if dest.exists() and any(dest.iterdir()):
        raise BuildError(f"{dest} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    _git("init", "--quiet", str(dest))
    _git("remote", "add", "origin", url, cwd=dest)
    for attempt in range(1, FETCH_ATTEMPTS + 1):
        try:
            _git("fetch", "--quiet", "--depth", "1", "origin", commit, cwd=dest)
            break
        except BuildError as exc:
            if attempt == FETCH_ATTEMPTS:
                raise BuildError(f"cannot fetch {commit} from {url}: {exc}") from exc
            time.sleep(2 * attempt)
    _git("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=dest)
    head = _git("rev-parse", "HEAD", cwd=dest)
    if head != commit:
        raise BuildError(f"{url}: checked out {head}, expected {commit}")
    print(f"{dest}: {url} at {commit}")


def requirement_name(line: str) -> str:
    match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
    if not match:
        raise BuildError(f"not a plain requirement: {line!r}")
    return normalize(match.group(1))


def filtered_requirements(text: str, source: str) -> list[str]:
    """The requirement lines of ``text`` without any OpenCV or ONNX Runtime variant.

    Options, URLs and editable installs would bypass the pins, so they stop the build for a human to look at.
    """
    kept: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-") or "://" in line or " @ " in line:
            raise BuildError(
                f"{source}: unsupported requirement line {line!r} (options/URLs bypass the pins)"
            )
        name = requirement_name(line)
        if name in OPENCV_VARIANTS or name in ONNXRUNTIME_VARIANTS:
            continue
        kept.append(line)
    return kept


def build_requirements(comfy_dir: Path, packs: Sequence[Pack], nodes_dir: Path) -> str:
    sources = [("ComfyUI", comfy_dir / "requirements.txt")]
    sources += [(pack.folder, nodes_dir / pack.folder / "requirements.txt") for pack in packs]
    out = ["# Generated by docker/install_custom_nodes.py: install with docker/constraints.txt."]
    for label, path in sources:
        if not path.is_file():
            out.append(f"# {label}: no requirements.txt")
            continue
        out.append(f"# {label}")
        out.extend(filtered_requirements(path.read_text(), str(path)))
    out.append("# the single OpenCV and ONNX Runtime wheels (versions in docker/constraints.txt)")
    out.extend([OPENCV_CHOICE, ONNXRUNTIME_CHOICE])
    return "\n".join(out) + "\n"


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def base_constraints(freeze_lines: Iterable[str]) -> list[str]:
    pins = []
    for line in freeze_lines:
        name, sep, _ = line.partition("==")
        if sep and BASE_PINNED.match(normalize(name.strip())):
            pins.append(line.strip())
    if not any(normalize(pin.partition("==")[0]) == "torch" for pin in pins):
        raise BuildError("the base image's Python has no torch installed (pip freeze lists none)")
    return sorted(pins, key=str.lower)


MIN_PYTHON = (3, 11)  # the worker's code; onnxruntime-gpu 1.26 also needs 3.11+


def snapshot(out_dir: Path) -> None:
    if sys.version_info < MIN_PYTHON:
        raise BuildError(
            f"the base image's Python is {sys.version.split()[0]}; the worker needs 3.11 or newer"
        )
    freeze = _pip("freeze", "--all")
    if freeze.returncode != 0:
        raise BuildError(f"pip freeze failed: {freeze.stderr.strip()}")
    pins = base_constraints(freeze.stdout.splitlines())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "base-constraints.txt").write_text("\n".join(pins) + "\n")
    (out_dir / "pip-check.txt").write_text(_pip("check").stdout)
    print("base image pins: " + ", ".join(pins))


def installed_distributions() -> dict[str, str]:
    """name -> the version Python imports: the first on sys.path, which in the image's virtual environment
    is the environment's own over the base image's (the venv shadows what it upgraded, e.g. apt's)."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(normalize(name), dist.version)
    return found


def shadowed_distributions() -> list[str]:
    """'name base-version -> version' for every package installed twice (venv and base), first one wins."""
    versions: dict[str, list[str]] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            versions.setdefault(normalize(name), []).append(dist.version)
    return [f"{name} {found[-1]} -> {found[0]}" for name, found in sorted(versions.items()) if len(found) > 1]


def python_problems(
    base_pins: Sequence[str], installed: dict[str, str], new_pip_check: Sequence[str]
) -> list[str]:
    problems = []
    for pin in base_pins:
        name, _, version = pin.partition("==")
        now = installed.get(normalize(name))
        if now != version:
            problems.append(f"{name} of the base image changed: {version} -> {now}")
    opencv = sorted(OPENCV_VARIANTS & installed.keys())
    if opencv != [OPENCV_CHOICE]:
        problems.append(f"expected only {OPENCV_CHOICE} among the OpenCV wheels, found {opencv}")
    if "onnxruntime" in installed:
        problems.append("the CPU package onnxruntime is installed beside onnxruntime-gpu (same module)")
    if ONNXRUNTIME_CHOICE not in installed:
        problems.append(f"{ONNXRUNTIME_CHOICE} is not installed")
    problems.extend(f"pip check: {line}" for line in new_pip_check)
    return problems


def check_python(snapshot_dir: Path) -> None:
    base_pins = (snapshot_dir / "base-constraints.txt").read_text().split()
    before = set((snapshot_dir / "pip-check.txt").read_text().splitlines())
    new_pip_check = [line for line in _pip("check").stdout.splitlines() if line not in before]
    problems = python_problems(base_pins, installed_distributions(), new_pip_check)
    if not problems:
        import cv2  # noqa: F401  (the one wheel must import)
        import onnxruntime

        providers = onnxruntime.get_available_providers()
        if "CUDAExecutionProvider" not in providers:
            problems.append(f"onnxruntime offers no CUDAExecutionProvider: {providers}")
    if problems:
        raise BuildError("Python environment check failed:\n  " + "\n  ".join(problems))
    print(
        "Python environment check passed: torch family unchanged, one OpenCV wheel, onnxruntime-gpu with CUDA"
    )
    shadowed = shadowed_distributions()
    print("base image packages the environment shadows: " + (", ".join(shadowed) or "none"))


def _without_comments(text: str) -> str:
    lines = (" ".join(raw.split("#", 1)[0].split()) for raw in text.splitlines())
    return "".join(line + "\n" for line in lines if line)


def normalize_inputs(src_dir: Path, out_dir: Path) -> list[Path]:
    """Every file of ``src_dir`` as ``out_dir/<name>``, its comments and layout removed: a Python file
    re-printed from its syntax tree (docstrings stay), a list file (requirements, constraints, packs)
    without comments and blank lines. Same meaning in, same bytes out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(p for p in src_dir.iterdir() if p.is_file()):
        text = path.read_text()
        normal = (
            ast.unparse(ast.parse(text, str(path))) + "\n"
            if path.suffix == ".py"
            else _without_comments(text)
        )
        (out_dir / path.name).write_text(normal)
        written.append(out_dir / path.name)
    return written


def import_problems(log_text: str, folders: Iterable[str]) -> list[str]:
    """What ComfyUI's start log says went wrong for ``folders`` (custom_nodes/ subfolders)."""
    results: dict[str, bool] = {}
    problems = []
    for line in ANSI_RE.sub("", log_text).splitlines():
        match = IMPORT_TIME_RE.search(line)
        if match:
            results[Path(match.group("path")).name] = match.group(1) is None
        elif "IMPORT FAILED" in line:
            core = CORE_IMPORT_FAILED_RE.search(line)
            if not (core and core.group("module") in TOLERATED_CORE_FAILURES):
                problems.append(f"ComfyUI reports: {line.strip()}")
    for folder in sorted(folders):
        if folder not in results:
            problems.append(f"{folder}: not in ComfyUI's 'Import times for custom nodes' list (not loaded)")
        elif not results[folder]:
            problems.append(f"{folder}: IMPORT FAILED (its traceback is in the log above)")
    return problems


def node_folders(custom_nodes_dir: Path) -> list[str]:
    return sorted(
        entry.name
        for entry in custom_nodes_dir.iterdir()
        if entry.is_dir() and entry.name != "__pycache__" and not entry.name.endswith(".disabled")
    )


def check_imports(log_path: Path, custom_nodes_dir: Path) -> None:
    folders = node_folders(custom_nodes_dir)
    log_text = log_path.read_text(errors="replace")
    for module, what in TOLERATED_CORE_FAILURES.items():
        if f"IMPORT FAILED: {module}" in log_text:
            print(f"note: core {module} did not import; tolerated, the workflow does not use it ({what})")
    problems = import_problems(log_text, folders)
    if problems:
        raise BuildError("custom node import check failed:\n  " + "\n  ".join(problems))
    print(f"custom node import check passed: {', '.join(folders)}")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("clone")
    p.add_argument("url")
    p.add_argument("commit")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("clone-list")
    p.add_argument("list", type=Path)
    p.add_argument("dest_dir", type=Path)
    p = sub.add_parser("requirements")
    p.add_argument("--comfy-dir", type=Path, required=True)
    p.add_argument("--nodes-list", type=Path, required=True)
    p.add_argument("--nodes-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("snapshot")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("check-python")
    p.add_argument("dir", type=Path)
    p = sub.add_parser("check-imports")
    p.add_argument("log", type=Path)
    p.add_argument("custom_nodes_dir", type=Path)
    p = sub.add_parser("normalize")
    p.add_argument("src_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "clone":
            clone(args.url, args.commit, args.dest)
        elif args.command == "clone-list":
            for pack in read_pack_list(args.list):
                clone(pack.url, pack.commit, args.dest_dir / pack.folder)
        elif args.command == "requirements":
            text = build_requirements(args.comfy_dir, read_pack_list(args.nodes_list), args.nodes_dir)
            args.out.write_text(text)
            print(text, end="")
        elif args.command == "snapshot":
            snapshot(args.dir)
        elif args.command == "check-python":
            check_python(args.dir)
        elif args.command == "normalize":
            for path in normalize_inputs(args.src_dir, args.out_dir):
                print(f"{path}: {path.stat().st_size} bytes")
        else:
            check_imports(args.log, args.custom_nodes_dir)
    except BuildError as exc:
        print(f"BUILD ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
