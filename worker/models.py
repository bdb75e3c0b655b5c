"""The model manifest (``models/manifest.json``): which file each role of the workflow loads, from which
Hugging Face repository and revision, with its size and sha256, per variant (fp8 default, bf16).

The one reader of the manifest: ``download_models.py`` installs from it, the graph checks accept model
names from it, and ``bench/`` packs from it. Standard library only (``download_models.py`` runs before
the worker's dependencies matter).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "models" / "manifest.json"
FOLDERS = frozenset({"diffusion_models", "text_encoders", "vae", "clip_vision", "loras", "detection", "sam2"})

# Loader input -> the models folder its file is read from (STACK.md section 4).
LOADER_FOLDERS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DiffusionModelLoaderKJ", "model_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("StrictLoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoader", "lora_name"): "loras",
    ("OnnxDetectionModelLoader", "vitpose_model"): "detection",
    ("OnnxDetectionModelLoader", "yolo_model"): "detection",
    ("OnnxDetectionModelLoaderChecked", "vitpose_model"): "detection",
    ("OnnxDetectionModelLoaderChecked", "yolo_model"): "detection",
    ("DownloadAndLoadSAM2Model", "model"): "sam2",
}

COMMIT_RE = re.compile(r"[0-9a-f]{40}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
_REPO_RE = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_repo_id(value: str) -> bool:
    """Whether ``value`` names a Hugging Face repository: ``ORG/NAME``."""
    return bool(_REPO_RE.fullmatch(value))


class ManifestError(ValueError):
    """The manifest is not usable; the message says which entry and why."""


@dataclass(frozen=True)
class ModelFile:
    role: str
    filename: str
    folder: str
    repo: str
    revision: str | None
    path: str
    size: int | None
    sha256: str | None
    size_estimate: int | None = None
    todo: str | None = None

    @property
    def relpath(self) -> str:
        return f"{self.folder}/{self.filename}"

    @property
    def planned_size(self) -> int:
        """Bytes to reserve on disk: the exact size, else the estimate."""
        return self.size if self.size is not None else (self.size_estimate or 0)


@dataclass(frozen=True)
class Manifest:
    default_variant: str
    files: tuple[ModelFile, ...]
    alternatives: dict[str, tuple[ModelFile, ...]]

    @property
    def variants(self) -> list[str]:
        return [self.default_variant, *self.alternatives]

    def select(self, variant: str | None = None) -> list[ModelFile]:
        """The files of a variant: the defaults, with alternatives replacing entries of the same role."""
        if variant in (None, "", self.default_variant):
            return list(self.files)
        if variant not in self.alternatives:
            raise ManifestError(f"unknown variant {variant!r}; known variants: {', '.join(self.variants)}")
        replacements = {f.role: f for f in self.alternatives[variant]}
        return [replacements.get(f.role, f) for f in self.files]

    def filename_for(self, role: str, variant: str | None = None) -> str:
        for entry in self.select(variant):
            if entry.role == role:
                return entry.filename
        roles = ", ".join(f.role for f in self.files)
        raise ManifestError(f"no file with role {role!r}; roles: {roles}")

    def installed(self, variant: str | None = None) -> dict[str, set[str]]:
        """models folder -> the file names installed for ``variant``."""
        folders: dict[str, set[str]] = {}
        for entry in self.select(variant):
            folders.setdefault(entry.folder, set()).add(entry.filename)
        return folders


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_file(raw: Any, where: str) -> ModelFile:
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: an entry must be an object")
    for key in ("role", "filename", "folder", "repo", "revision", "path", "size", "sha256"):
        if key not in raw:
            raise ManifestError(f"{where}: missing key {key!r}")
    name = raw["filename"]
    where = f"{where} ({name})" if isinstance(name, str) else where
    for key in ("role", "filename", "folder", "repo", "path"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ManifestError(f"{where}: {key!r} must be a non-empty string")
    if "/" in name or "\\" in name or name.startswith("."):
        raise ManifestError(f"{where}: filename must be a plain file name")
    if raw["folder"] not in FOLDERS:
        raise ManifestError(f"{where}: folder {raw['folder']!r} is not one of {sorted(FOLDERS)}")
    if not is_repo_id(raw["repo"]):
        raise ManifestError(f"{where}: repo must look like ORG/NAME")
    path = raw["path"]
    if path.startswith("/") or ".." in path.split("/"):
        raise ManifestError(f"{where}: path must be relative to the repo root")
    revision, todo = raw["revision"], raw.get("todo")
    if revision is None:
        if not isinstance(todo, str) or not todo.strip():
            raise ManifestError(f"{where}: a null revision needs a 'todo' note saying what is missing")
    elif not isinstance(revision, str) or not COMMIT_RE.fullmatch(revision):
        raise ManifestError(f"{where}: revision must be a 40-hex commit hash or null")
    size, estimate = raw["size"], raw.get("size_estimate")
    if size is None:
        if not _is_int(estimate) or estimate <= 0:
            raise ManifestError(f"{where}: a null size needs a positive 'size_estimate' for disk planning")
    elif not _is_int(size) or size <= 0:
        raise ManifestError(f"{where}: size must be a positive integer (bytes) or null")
    sha256 = raw["sha256"]
    if sha256 is not None and (not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256)):
        raise ManifestError(f"{where}: sha256 must be 64 lowercase hex characters or null")
    return ModelFile(
        role=raw["role"],
        filename=name,
        folder=raw["folder"],
        repo=raw["repo"],
        revision=revision,
        path=path,
        size=size,
        sha256=sha256,
        size_estimate=estimate if size is None else None,
        todo=todo,
    )


def _check_unique(files: Sequence[ModelFile], where: str) -> None:
    for attr in ("role", "relpath"):
        seen: set[str] = set()
        for f in files:
            value = getattr(f, attr)
            if value in seen:
                raise ManifestError(f"{where}: duplicate {attr} {value!r}")
            seen.add(value)


def parse_manifest(data: Any) -> Manifest:
    if not isinstance(data, dict) or not isinstance(data.get("files"), list) or not data["files"]:
        raise ManifestError("the manifest must be an object with a non-empty 'files' list")
    files = tuple(_parse_file(raw, f"files[{i}]") for i, raw in enumerate(data["files"]))
    _check_unique(files, "files")
    default_variant = data.get("default_variant", "default")
    if not isinstance(default_variant, str) or not default_variant:
        raise ManifestError("'default_variant' must be a non-empty string")
    alternatives: dict[str, tuple[ModelFile, ...]] = {}
    raw_alternatives = data.get("alternatives", {})
    if not isinstance(raw_alternatives, dict):
        raise ManifestError("'alternatives' must be an object of variant name -> {files: [...]}")
    roles = {f.role for f in files}
    for variant, spec in raw_alternatives.items():
        if variant == default_variant:
            raise ManifestError(f"alternative {variant!r} has the default variant's name")
        raw_files = spec.get("files") if isinstance(spec, dict) else None
        if not isinstance(raw_files, list) or not raw_files:
            raise ManifestError(f"alternatives.{variant}: needs a non-empty 'files' list")
        parsed = tuple(
            _parse_file(raw, f"alternatives.{variant}.files[{i}]") for i, raw in enumerate(raw_files)
        )
        for f in parsed:
            if f.role not in roles:
                raise ManifestError(f"alternatives.{variant}: role {f.role!r} replaces nothing in 'files'")
        alternatives[variant] = parsed
        _check_unique(Manifest(default_variant, files, alternatives).select(variant), f"variant {variant}")
    return Manifest(default_variant=default_variant, files=files, alternatives=alternatives)


def load_manifest(path: str | Path = MANIFEST_PATH) -> Manifest:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    return parse_manifest(data)
