"""The model bundle (Phase A): one Hugging Face repository holding exactly the files of one manifest
variant, set as the endpoint's cached model so that a cold start downloads nothing.

Layout of a bundle repository::

    <folder>/<filename>   every file of the variant, at the path it is installed to under the models
                          folder (``ModelFile.relpath``: ``diffusion_models/...``, ``vae/...``, ...)
    bundle.json           what each file is: source repository, revision and path, size and sha256

``download_models.py bundle`` writes bundles; ``download_models.py`` (install) finds them in RunPod's
cached models, laid out like a Hugging Face cache:
``<cache-root>/hub/models--ORG--NAME/snapshots/<revision>/<path>``. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from worker.models import COMMIT_RE, FOLDERS, SHA256_RE, ModelFile, is_repo_id

BUNDLE_MANIFEST = "bundle.json"
KIND = "wan-worker-model-bundle"
SCHEMA = 1


class BundleError(ValueError):
    """A bundle manifest that cannot be used; the message says why."""


@dataclass(frozen=True)
class BundleFile:
    path: str  # in the bundle repository, = ModelFile.relpath
    role: str
    size: int
    sha256: str
    source_repo: str
    source_revision: str
    source_path: str


def bundle_file(entry: ModelFile, size: int) -> BundleFile:
    """The bundle's record of ``entry`` (whose sha256 and revision must be pinned)."""
    if entry.sha256 is None or entry.revision is None:
        raise BundleError(f"{entry.relpath}: only files with a pinned revision and sha256 go into a bundle")
    return BundleFile(
        path=entry.relpath,
        role=entry.role,
        size=size,
        sha256=entry.sha256,
        source_repo=entry.repo,
        source_revision=entry.revision,
        source_path=entry.path,
    )


def bundle_manifest_bytes(files: Sequence[BundleFile], variant: str) -> bytes:
    """bundle.json, byte-identical for identical content (no timestamps), so an unchanged bundle is
    recognised by its git blob id alone."""
    data = {
        "schema": SCHEMA,
        "kind": KIND,
        "variant": variant,
        "files": [asdict(f) for f in sorted(files, key=lambda f: f.path)],
    }
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _parse_file(raw: Any, where: str) -> BundleFile:
    if not isinstance(raw, dict):
        raise BundleError(f"{where}: an entry must be an object")
    try:
        entry = BundleFile(**{key: raw[key] for key in BundleFile.__dataclass_fields__})
    except KeyError as exc:
        raise BundleError(f"{where}: missing key {exc}") from None
    folder, _, filename = entry.path.partition("/")
    if folder not in FOLDERS or not filename or "/" in filename or filename.startswith("."):
        raise BundleError(f"{where}: path {entry.path!r} is not <models folder>/<file name>")
    if not isinstance(entry.size, int) or isinstance(entry.size, bool) or entry.size <= 0:
        raise BundleError(f"{where}: size must be a positive integer")
    if not isinstance(entry.sha256, str) or not SHA256_RE.fullmatch(entry.sha256):
        raise BundleError(f"{where}: sha256 must be 64 lowercase hex characters")
    if not isinstance(entry.source_repo, str) or not is_repo_id(entry.source_repo):
        raise BundleError(f"{where}: source_repo must look like ORG/NAME")
    if not isinstance(entry.source_revision, str) or not COMMIT_RE.fullmatch(entry.source_revision):
        raise BundleError(f"{where}: source_revision must be a 40-hex commit")
    return entry


def parse_bundle_manifest(data: bytes) -> dict[str, BundleFile]:
    """path in the bundle -> what the file is."""
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("kind") != KIND or raw.get("schema") != SCHEMA:
        raise BundleError(f"not a schema-{SCHEMA} {KIND} manifest")
    if not isinstance(raw.get("files"), list):
        raise BundleError("'files' must be a list")
    files: dict[str, BundleFile] = {}
    for i, item in enumerate(raw["files"]):
        entry = _parse_file(item, f"files[{i}]")
        if entry.path in files:
            raise BundleError(f"files[{i}]: duplicate path {entry.path!r}")
        files[entry.path] = entry
    return files


def snapshots_dir(cache_root: Path, repo: str) -> Path:
    """Where a Hugging Face cache (RunPod's cached models too) keeps the snapshots of ``repo``."""
    return cache_root / "hub" / ("models--" + repo.replace("/", "--")) / "snapshots"


@dataclass(frozen=True)
class CachedBundle:
    repo: str
    revision: str
    root: Path  # the snapshot folder
    files: dict[str, BundleFile]

    def where(self) -> str:
        return f"{self.repo}@{self.revision[:12]}"


def find_cached_bundles(cache_root: Path, repo: str) -> tuple[list[CachedBundle], list[str]]:
    """The snapshots of ``repo`` in the cache whose bundle.json is usable, newest first, and a note for
    each one that is not. Any revision will do: every file is checked against the manifest's sha256."""
    try:
        snapshots = sorted(snapshots_dir(cache_root, repo).iterdir(), key=_mtime, reverse=True)
    except OSError:
        return [], []
    bundles, notes = [], []
    for snapshot in snapshots:
        try:
            files = parse_bundle_manifest((snapshot / BUNDLE_MANIFEST).read_bytes())
        except OSError as exc:
            notes.append(f"{repo}@{snapshot.name[:12]} has no readable {BUNDLE_MANIFEST} ({exc.strerror})")
            continue
        except BundleError as exc:
            notes.append(f"{repo}@{snapshot.name[:12]}: {BUNDLE_MANIFEST} is unusable: {exc}")
            continue
        bundles.append(CachedBundle(repo, snapshot.name, snapshot, files))
    return bundles, notes


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def bundle_lookup(entry: ModelFile, bundles: Sequence[CachedBundle]) -> tuple[CachedBundle | None, list[str]]:
    """The first cached bundle holding ``entry`` exactly as the manifest pins it (by bundle.json and the
    file's size; the caller checks the content), or None with the reasons the others did not."""
    notes = []
    for bundle in bundles:
        listed = bundle.files.get(entry.relpath)
        if listed is None:
            notes.append(f"not in bundle {bundle.where()}")
            continue
        if listed.sha256 != entry.sha256 or (entry.size is not None and listed.size != entry.size):
            notes.append(f"bundle {bundle.where()} holds another version (sha256 {listed.sha256[:12]}...)")
            continue
        path = bundle.root / listed.path
        try:
            size = path.stat().st_size
        except OSError:
            notes.append(f"bundle {bundle.where()} lists it but the file is missing")
            continue
        if size != listed.size:
            notes.append(f"bundle {bundle.where()} has {size} bytes of it, expected {listed.size}")
            continue
        return bundle, notes
    return None, notes
