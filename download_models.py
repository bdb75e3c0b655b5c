#!/usr/bin/env python3
"""Install the model files listed in models/manifest.json into ComfyUI's models folders, and build the
model bundle (Phase A: one Hugging Face repository with every file, set as the endpoint's cached model).

    python download_models.py                  # install (keep installed, link cached, download the rest)
    python download_models.py --dry-run        # print the plan and the disk check, touch nothing
    python download_models.py --verify         # check installed files (size, sha256), exit 1 on problems
    python download_models.py --check-remote   # compare the manifest with what the Hub serves
    python download_models.py --print-filename diffusion_model   # filename the workflow must load
    python download_models.py bundle --repo ORG/NAME [--private] [--variant V] [--dry-run]

Sources, in order of preference, for each file of the selected variant:
1. already installed in ``<models-dir>/<folder>/<filename>`` with the right size and sha256 -> kept;
2. the model bundle (MODEL_BUNDLE_REPO) in RunPod's cached models, any revision whose bundle.json lists
   the file with the manifest's sha256 -> symlinked after checking its size and sha256;
3. the upstream repository in RunPod's cached models,
   ``<hf-cache-root>/hub/models--ORG--NAME/snapshots/<revision>/<path>`` at exactly the pinned revision
   -> symlinked after the same checks;
4. the Hugging Face Hub at the pinned revision, through ``huggingface_hub.hf_hub_download``
   (honours HF_ENDPOINT and HF_TOKEN), staged inside the models dir and renamed into place.
A cached file's sha256 is read from its blob name when the cache names blobs by sha256 (Hugging Face
caches do), else hashed once and remembered. Each file prints one ``[ready]`` line saying where it came
from. With the Hub unreachable, the downloads give up after (--retries + 1) requests of at most
--timeout seconds each, plus the waits between them, and say once why.

Exit status: 0 done, 1 some file failed (named on stderr), 2 refused before starting (invalid manifest,
unpinned entry without ALLOW_UNPINNED_MODELS=1, not enough disk space; ``bundle``: a file to upload
that is not available locally). ``--dry-run`` exits 0 and says what a real run would refuse.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from worker.config import ModelSettings
from worker.errors import WorkerError
from worker.model_bundle import (
    BUNDLE_MANIFEST,
    CachedBundle,
    bundle_file,
    bundle_lookup,
    bundle_manifest_bytes,
    find_cached_bundles,
    snapshots_dir,
)
from worker.models import (
    FOLDERS,
    MANIFEST_PATH,
    SHA256_RE,
    ManifestError,
    ModelFile,
    is_repo_id,
    load_manifest,
)

UNPINNED_ENV = "ALLOW_UNPINNED_MODELS"
BUNDLE_ENV = "MODEL_BUNDLE_REPO"
STATE_DIRNAME = ".download_models"  # inside the models dir: staging area + record of hashed files
MAX_RETRY_WAIT_S = 30.0

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
T = TypeVar("T")


# ------------------------------------------------------------------------------------- local inspection


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class HashRecord:
    """Remembers which files were hashed (by size and mtime), so a cold start with files already in
    place does not re-hash tens of GB. Stored as JSON in the models dir."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            self._entries: dict[str, dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._entries = {}

    @staticmethod
    def _key(st: os.stat_result, sha256: str) -> dict[str, Any]:
        # Whole seconds: image layers do not always keep sub-second modification times.
        return {"size": st.st_size, "mtime": int(st.st_mtime), "sha256": sha256}

    def matches(self, relpath: str, st: os.stat_result, sha256: str) -> bool:
        with self._lock:
            entry = self._entries.get(relpath)
        return entry == self._key(st, sha256)

    def record(self, relpath: str, st: os.stat_result, sha256: str) -> None:
        with self._lock:
            self._entries[relpath] = self._key(st, sha256)

    def save(self) -> None:
        with self._lock:
            if not self._entries and not self.path.exists():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)


class HashPolicy(Enum):
    ALWAYS = "always"  # --verify
    UNRECORDED = "unrecorded"  # install: hash files whose size+mtime were not hashed before
    NEVER = "never"  # --dry-run


@dataclass(frozen=True)
class Inspection:
    problem: str | None  # None: the file is what the manifest says (as far as checked)
    sha256_checked: bool = False


def check_file(
    entry: ModelFile,
    path: Path,
    record: HashRecord,
    policy: HashPolicy,
    say: Output | None = None,
    *,
    what: str = "",
) -> Inspection:
    """Whether ``path`` holds ``entry``: exists (through symlinks), right size, right sha256.

    A path resolving to a blob named by a sha256 (Hugging Face caches name LFS blobs so) is checked by
    that name; otherwise the content is hashed once per size and mtime and remembered in ``record``."""
    of = f"{what}: " if what else ""
    if not path.exists():
        return Inspection(of + ("missing (broken symlink)" if path.is_symlink() else "missing"))
    if not path.is_file():
        return Inspection(of + "not a regular file")
    st = path.stat()
    if entry.size is not None and st.st_size != entry.size:
        return Inspection(f"{of}size {st.st_size} bytes, expected {entry.size}")
    if entry.sha256 is None:
        return Inspection(None)
    blob = path.resolve().name
    if SHA256_RE.fullmatch(blob):
        if blob != entry.sha256:
            return Inspection(f"{of}links to blob {blob[:12]}..., expected sha256 {entry.sha256[:12]}...")
        return Inspection(None, sha256_checked=True)
    if policy is HashPolicy.NEVER:
        return Inspection(None)
    if policy is HashPolicy.UNRECORDED and record.matches(entry.relpath, st, entry.sha256):
        return Inspection(None, sha256_checked=True)
    if say is not None:
        say.line(f"[check] hashing {entry.relpath} ({_fmt_bytes(st.st_size)}) at {path}")
    digest = sha256_file(path)
    if digest != entry.sha256:
        problem = f"{of}sha256 {digest[:12]}..., expected {entry.sha256[:12]}..."
        return Inspection(problem, sha256_checked=True)
    record.record(entry.relpath, st, digest)
    return Inspection(None, sha256_checked=True)


def cache_lookup(entry: ModelFile, cache_root: Path | None) -> tuple[Path | None, list[str]]:
    """(the upstream file at the pinned revision in the cache or None, other cached revisions holding it)."""
    if cache_root is None:
        return None, []
    snapshots = snapshots_dir(cache_root, entry.repo)
    if entry.revision is not None:
        candidate = snapshots / entry.revision / entry.path
        if candidate.is_file():
            return candidate, []
    try:
        others = sorted(d.name for d in snapshots.iterdir() if d.name != entry.revision)
    except OSError:
        return None, []
    return None, [rev for rev in others if (snapshots / rev / entry.path).is_file()]


# ------------------------------------------------------------------------------------------------- plan


class Action(Enum):
    PRESENT = "present"
    BUNDLE = "bundle"
    CACHE = "cache"
    DOWNLOAD = "download"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Step:
    entry: ModelFile
    target: Path
    action: Action
    reason: str
    cache_path: Path | None = None  # BUNDLE, CACHE: the file to link to
    origin: str = ""  # BUNDLE, CACHE: ORG/NAME@revision it comes from
    replace_existing: bool = False


def make_plan(
    files: Sequence[ModelFile],
    models_dir: Path,
    cache_root: Path | None,
    record: HashRecord,
    *,
    allow_unpinned: bool,
    policy: HashPolicy,
    bundles: Sequence[CachedBundle] = (),
    say: Output | None = None,
) -> list[Step]:
    steps = []
    for entry in files:
        target = models_dir / entry.folder / entry.filename
        found = check_file(entry, target, record, policy, say)
        if found.problem is None:
            if entry.size is None and entry.sha256 is None:
                reason = "present; size and sha256 unknown, not verifiable"
            elif entry.sha256 is not None and not found.sha256_checked:
                reason = "present; size ok, sha256 not checked"
            else:
                reason = "present; verified"
            steps.append(Step(entry, target, Action.PRESENT, reason))
            continue
        replace = target.exists() or target.is_symlink()
        notes = [found.problem]
        candidates = []
        bundle, bundle_notes = bundle_lookup(entry, bundles)
        notes += bundle_notes
        if bundle is not None:
            candidates.append((Action.BUNDLE, bundle.root / entry.relpath, bundle.where()))
        cached, other_revisions = cache_lookup(entry, cache_root)
        if cached is not None:
            candidates.append((Action.CACHE, cached, f"{entry.repo}@{(entry.revision or '')[:12]}"))
        linked = None
        for action, path, origin in candidates:
            checked = check_file(entry, path, record, policy, say, what=f"the {action.value} copy")
            if checked.problem is None:
                reason = f"{origin}; {_how_checked(entry, checked)}"
                linked = Step(entry, target, action, reason, path, origin, replace_existing=replace)
                break
            notes.append(f"{action.value} {origin}: {checked.problem}")
        if linked is not None:
            steps.append(linked)
            continue
        if other_revisions:
            notes.append(f"cache has other revision {', '.join(r[:12] for r in other_revisions)}")
        if entry.revision is None and not allow_unpinned:
            notes.append(f"no pinned revision; pin it in the manifest or set {UNPINNED_ENV}=1")
            steps.append(Step(entry, target, Action.BLOCKED, "; ".join(notes)))
            continue
        steps.append(Step(entry, target, Action.DOWNLOAD, "; ".join(notes), replace_existing=replace))
    return steps


def _how_checked(entry: ModelFile, checked: Inspection) -> str:
    if entry.sha256 is None:
        return "size ok" if entry.size is not None else "size and sha256 unknown"
    return "sha256 verified" if checked.sha256_checked else "size ok, sha256 checked when installing"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


@dataclass(frozen=True)
class DiskCheck:
    line: str
    problem: str | None


def disk_check(steps: Sequence[Step], models_dir: Path, min_free_bytes: int) -> DiskCheck:
    """Whether the downloads fit, saying how much is missing when they do not."""
    needed = sum(s.entry.planned_size for s in steps if s.action is Action.DOWNLOAD)
    if needed == 0:
        return DiskCheck("[disk] nothing to download", None)
    free = shutil.disk_usage(_existing_ancestor(models_dir)).free
    reclaimed = sum(
        s.target.stat().st_size
        for s in steps
        if s.action is Action.DOWNLOAD
        and s.replace_existing
        and s.target.is_file()
        and not s.target.is_symlink()
    )
    available = free + reclaimed - min_free_bytes
    facts = (
        f"downloads need {_fmt_bytes(needed)}, {_fmt_bytes(free)} free under {models_dir} "
        f"(+{_fmt_bytes(reclaimed)} from files to be replaced), {_fmt_bytes(min_free_bytes)} must stay free"
    )
    if needed <= available:
        return DiskCheck(f"[disk] {facts}: ok", None)
    problem = f"not enough disk space: {facts}; missing {_fmt_bytes(needed - available)}"
    return DiskCheck(f"[disk] {facts}: missing {_fmt_bytes(needed - available)}", problem)


# --------------------------------------------------------------------------------------------- output


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Output:
    """Thread-safe line output: stdout for progress and tables, stderr for problems."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def error(self, text: str) -> None:
        with self._lock:
            print(text, file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _incomplete_bytes(stage: Path) -> int:
    """Bytes of the file being downloaded into ``stage``: huggingface_hub writes it as ``*.incomplete``
    (the lock and metadata files beside it are not the model)."""
    total = 0
    for path in stage.rglob("*.incomplete"):
        with contextlib.suppress(OSError):  # renamed into place between listing and stat
            total += path.stat().st_size
    return total


class Progress:
    """Reports per-file and total download progress from the bytes on disk, and only what arrived."""

    def __init__(self, say: Output, total_bytes: int, interval: float) -> None:
        self.say, self.total, self.interval = say, total_bytes, interval
        self._active: dict[str, tuple[Path, int | None, float]] = {}
        self._done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="download-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def started(self, relpath: str, stage: Path, size: int | None) -> None:
        with self._lock:
            self._active[relpath] = (stage, size, time.monotonic())

    def finished(self, relpath: str, nbytes: int) -> None:
        with self._lock:
            self._active.pop(relpath, None)
            self._done += nbytes

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        with self._lock:
            active, done = dict(self._active), self._done
        now, current, waiting = time.monotonic(), done, []
        for relpath, (stage, size, started) in sorted(active.items()):
            got = _incomplete_bytes(stage)
            if got == 0:
                waiting.append(f"{relpath} ({now - started:.0f} s)")
                continue
            current += got
            share = f"{100 * got / size:5.1f}%" if size else "   ?  "
            of = f" of {_fmt_bytes(size)}" if size else ""
            speed = got / max(now - started, 1e-6) / 1e6
            self.say.line(f"[download] {relpath} {share} {_fmt_bytes(got)}{of} {speed:.1f} MB/s")
        if waiting:
            self.say.line(f"[download] no byte yet: {', '.join(waiting)}")
        if self.total and current:
            share = 100 * current / self.total
            self.say.line(f"[total] {share:5.1f}% {_fmt_bytes(current)} of {_fmt_bytes(self.total)}")


def _table(say: Output, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say.line("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@contextlib.contextmanager
def heartbeat(say: Output, text: str, interval: float) -> Iterator[None]:
    """A line every ``interval`` seconds while a long call runs, saying only what is known: that it runs."""
    stop, started = threading.Event(), time.monotonic()

    def beat() -> None:
        while not stop.wait(interval):
            say.line(f"{text}: {time.monotonic() - started:.0f} s so far")

    thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------------------- the Hub


class InstallError(Exception):
    """One file could not be installed; the message is meant for the operator."""


class HubUnreachable(InstallError):
    """The Hub did not answer at all (network error, timeout, 5xx) after every attempt."""


def _permanent_reason(exc: Exception, entry: ModelFile, revision: str) -> str | None:
    """A readable reason when retrying cannot help, else None (transient: network, 5xx, 429)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{entry.repo}@{revision}"
    if isinstance(exc, EntryNotFoundError):
        return f"not found on the Hub: {where} has no file {entry.path} (404)"
    if isinstance(exc, RevisionNotFoundError):
        return f"revision not found: {where} (404)"
    if isinstance(exc, GatedRepoError):
        return f"gated repository {entry.repo}: accept its terms on the Hub and set HF_TOKEN"
    if isinstance(exc, RepositoryNotFoundError):
        return f"repository not found: {entry.repo} (private or gated ones need HF_TOKEN)"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status in (401, 403):
            return f"access denied ({status}) for {where}: check HF_TOKEN"
        if 400 <= status < 500 and status not in (408, 429):
            return f"HTTP {status} for {where}: {entry.path}"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    short = f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
    if exc.__cause__ is not None:  # "Error while uploading X" says little without what caused it
        short += f" ({_short(exc.__cause__)})"
    return short


def _root_cause(exc: Exception) -> Exception:
    """With force_download=True, hf_hub_download wraps a failed metadata request in a ValueError: the
    request's own error (ConnectError, a 5xx, RepositoryNotFoundError) is what says what happened."""
    if isinstance(exc, ValueError) and isinstance(exc.__cause__, Exception):
        return exc.__cause__
    return exc


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


class Hub:
    """Requests to the Hub with exactly one layer of retries: this one. huggingface_hub's own retries are
    off (``retry_on_errors=False``; ``force_download=True`` skips hf_hub_download's second, retried
    metadata request), so with the Hub unreachable a file costs at most ``retries + 1`` requests of at
    most ``timeout`` seconds, plus the waits between them."""

    def __init__(self, say: Output, timeout: int, retries: int, retry_wait: float) -> None:
        self.say, self.timeout, self.retries, self.retry_wait = say, timeout, retries, retry_wait

    def attempts(self, what: str, call: Callable[[], T], permanent: Callable[[Exception], str | None]) -> T:
        started = time.monotonic()
        for attempt in range(1, self.retries + 2):
            try:
                return call()
            except Exception as raised:
                exc = _root_cause(raised)
                reason = permanent(exc)
                if reason is not None:
                    raise InstallError(reason) from exc
                if attempt > self.retries:
                    raise HubUnreachable(
                        f"gave up after {attempt} attempts in {time.monotonic() - started:.1f} s; "
                        f"the last: {_short(exc)}"
                    ) from exc
                wait = min(self.retry_wait * 2 ** (attempt - 1), MAX_RETRY_WAIT_S)
                self.say.error(
                    f"[retry] {what}: attempt {attempt} of {self.retries + 1} failed ({_short(exc)}); "
                    f"retrying in {wait:.1f}s"
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def head(self, repo: str, path: str, revision: str) -> Any:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        return get_hf_file_metadata(
            hf_hub_url(repo, path, revision=revision), timeout=self.timeout, retry_on_errors=False
        )

    def preflight(self, entry: ModelFile) -> None:
        """One request before any download: raises HubUnreachable once, for every file, when the Hub does
        not answer. Any answer below 500 (even a 404 for this file) proves it is reachable."""
        from huggingface_hub.errors import HfHubHTTPError

        def answered(exc: Exception) -> str | None:
            if isinstance(exc, HfHubHTTPError) and exc.response is not None:
                status = exc.response.status_code
                return "" if status < 500 and status != 429 else None
            return None

        try:
            self.attempts(
                f"the Hub at {hub_endpoint()}",
                lambda: self.head(entry.repo, entry.path, entry.revision or "main"),
                answered,
            )
        except HubUnreachable:
            raise
        except InstallError:
            pass  # it answered, if only to refuse this file: the download says so


# ------------------------------------------------------------------------------------------- install


@dataclass(frozen=True)
class Result:
    relpath: str
    source: str  # installed / bundle-cache / upstream-cache / downloaded
    nbytes: int
    seconds: float
    detail: str = ""


SOURCES = ("installed", "bundle-cache", "upstream-cache", "downloaded")


class Installer:
    def __init__(self, models_dir: Path, record: HashRecord, say: Output, hub: Hub) -> None:
        self.models_dir, self.record, self.say, self.hub = models_dir, record, say, hub
        self.staging_root = models_dir / STATE_DIRNAME / "staging"

    def ready(self, result: Result) -> Result:
        self.say.line(f"[ready] +{self.say.elapsed():.1f}s {result.relpath}: {result.detail}")
        return result

    def keep(self, step: Step) -> Result:
        detail = f"already installed ({step.reason.removeprefix('present; ')})"
        return self.ready(Result(step.entry.relpath, "installed", step.target.stat().st_size, 0.0, detail))

    def link(self, step: Step) -> Result:
        assert step.cache_path is not None
        started = time.monotonic()
        if step.replace_existing:
            step.target.unlink(missing_ok=True)
        step.target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(step.cache_path, step.target)
        source = "bundle-cache" if step.action is Action.BUNDLE else "upstream-cache"
        detail = f"{source.replace('-', ' ')} {step.origin}, linked"
        nbytes = step.cache_path.stat().st_size
        return self.ready(Result(step.entry.relpath, source, nbytes, time.monotonic() - started, detail))

    def resolve_unpinned(self, entry: ModelFile) -> str:
        meta = self.hub.attempts(
            entry.relpath,
            lambda: self.hub.head(entry.repo, entry.path, "main"),
            lambda exc: _permanent_reason(exc, entry, "main"),
        )
        if meta.commit_hash is None:
            raise InstallError(f"{entry.relpath}: the Hub did not say which commit 'main' is")
        self.say.line(
            f"[unpinned] {entry.relpath}: main is {meta.commit_hash}, size {meta.size}, etag {meta.etag}; "
            "pin these in models/manifest.json"
        )
        return meta.commit_hash

    def _fetch(self, entry: ModelFile, revision: str, stage: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(
                repo_id=entry.repo,
                filename=entry.path,
                revision=revision,
                local_dir=stage,
                # local_dir mode copies from this cache when it has the file: keep it empty so
                # nothing is ever stored twice.
                cache_dir=stage / ".empty-cache",
                etag_timeout=self.hub.timeout,
                # The stage is always empty, so this changes nothing but one thing: hf_hub_download then
                # skips its own retried metadata request (6 tries of up to 60 s) after a failed one.
                force_download=True,
            )
        )

    def download(self, step: Step, progress: Progress | None = None) -> Result:
        entry, started = step.entry, time.monotonic()
        revision = entry.revision or self.resolve_unpinned(entry)
        stage = self.staging_root / hashlib.sha1(entry.relpath.encode()).hexdigest()[:16]
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        if step.replace_existing:  # it is wrong anyway; free its space before the new copy arrives
            step.target.unlink(missing_ok=True)
        if progress is not None:
            progress.started(entry.relpath, stage, entry.size)
        self.say.line(f"[download] {entry.relpath} from {entry.repo}@{revision[:12]}:{entry.path}")
        try:
            local = self.hub.attempts(
                entry.relpath,
                lambda: self._fetch(entry, revision, stage),
                lambda exc: _permanent_reason(exc, entry, revision),
            )
            nbytes = local.stat().st_size
            if entry.size is not None and nbytes != entry.size:
                raise InstallError(f"downloaded {nbytes} bytes, manifest says {entry.size}")
            if entry.sha256 is not None:
                digest = sha256_file(local)
                if digest != entry.sha256:
                    raise InstallError(
                        f"sha256 of the download is {digest}, manifest says {entry.sha256}: "
                        "the manifest or the file on the Hub is wrong"
                    )
            step.target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(local, step.target)  # a rename: the staging folder is inside the models dir
            if entry.sha256 is not None:
                self.record.record(entry.relpath, step.target.stat(), entry.sha256)
        finally:
            if progress is not None:
                progress.finished(entry.relpath, step.target.stat().st_size if step.target.is_file() else 0)
            shutil.rmtree(stage, ignore_errors=True)
        seconds = time.monotonic() - started
        detail = (
            f"downloaded from {entry.repo}@{revision[:12]} ({_fmt_bytes(nbytes)} in {seconds:.1f} s, "
            f"{nbytes / max(seconds, 1e-6) / 1e6:.1f} MB/s)"
        )
        return self.ready(Result(entry.relpath, "downloaded", nbytes, seconds, detail))

    def cleanup(self) -> None:
        shutil.rmtree(self.staging_root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ modes


def _print_plan(say: Output, steps: Sequence[Step]) -> None:
    rows = [
        (s.entry.relpath, s.action.value, str(s.entry.size or f"~{s.entry.planned_size}"), s.reason)
        for s in steps
    ]
    _table(say, ("file", "action", "bytes", "reason"), rows)


def _cached_bundles(say: Output, bundle_repo: str | None, cache_root: Path | None) -> list[CachedBundle]:
    if bundle_repo is None:
        return []
    if cache_root is None:
        say.line(f"[bundle] {bundle_repo}: not looked for (--no-cache)")
        return []
    bundles, notes = find_cached_bundles(cache_root, bundle_repo)
    for note in notes:
        say.error(f"[bundle] {note}")
    if bundles:
        found = ", ".join(f"{b.where()} ({len(b.files)} files)" for b in bundles)
        say.line(f"[bundle] {bundle_repo} in the cache: {found}")
    else:
        say.line(f"[bundle] {bundle_repo} is not in the cache at {snapshots_dir(cache_root, bundle_repo)}")
    return bundles


def _report_failures(say: Output, failures: Sequence[tuple[str, str]]) -> None:
    """One line per distinct reason: the same cause for several files is said once."""
    by_reason: dict[str, list[str]] = {}
    for relpath, reason in failures:
        by_reason.setdefault(reason, []).append(relpath)
    for reason, relpaths in by_reason.items():
        if len(relpaths) == 1:
            say.error(f"[failed] {relpaths[0]}: {reason}")
        else:
            say.error(f"[failed] {len(relpaths)} files: {reason}: {', '.join(relpaths)}")


def run_install(
    args: argparse.Namespace, files: Sequence[ModelFile], models_dir: Path, cache_root: Path | None
) -> int:
    say = Output()
    record = HashRecord(models_dir / STATE_DIRNAME / "verified.json")
    allow_unpinned = args.allow_unpinned
    policy = HashPolicy.NEVER if args.dry_run else HashPolicy.UNRECORDED
    bundles = _cached_bundles(say, args.bundle_repo, cache_root)
    steps = make_plan(
        files,
        models_dir,
        cache_root,
        record,
        allow_unpinned=allow_unpinned,
        policy=policy,
        bundles=bundles,
        say=say,
    )
    token = "set" if args.hf_token_set else "not set"  # never print the token itself
    say.line(f"[plan] {len(steps)} files into {models_dir} (HF_TOKEN {token})")
    _print_plan(say, steps)
    disk = disk_check(steps, models_dir, args.min_free_bytes)
    say.line(disk.line)
    refusals = []
    blocked = [s for s in steps if s.action is Action.BLOCKED]
    if blocked:
        names = ", ".join(s.entry.relpath for s in blocked)
        refusals.append(f"no pinned revision for: {names}. Pin them in the manifest or set {UNPINNED_ENV}=1.")
    if disk.problem:
        refusals.append(disk.problem)
    if args.dry_run:
        for refusal in refusals:
            say.line(f"[dry-run] a real run would refuse: {refusal}")
        say.line("[dry-run] nothing was changed")
        return EXIT_OK
    if refusals:
        for refusal in refusals:
            say.error(f"[refused] {refusal}")
        return EXIT_REFUSED

    hub = Hub(say, args.timeout, args.retries, args.retry_wait)
    installer = Installer(models_dir, record, say, hub)
    results: list[Result] = []
    failures: list[tuple[str, str]] = []
    try:
        for step in steps:
            if step.action is Action.PRESENT:
                results.append(installer.keep(step))
            elif step.action in (Action.BUNDLE, Action.CACHE):
                try:
                    results.append(installer.link(step))
                except OSError as exc:
                    failures.append((step.entry.relpath, f"cannot link {step.cache_path}: {exc}"))
        downloads = [s for s in steps if s.action is Action.DOWNLOAD]
        if downloads:
            try:
                hub.preflight(downloads[0].entry)
            except HubUnreachable as exc:
                reason = f"the Hub at {hub_endpoint()} could not be reached: {exc}"
                failures += [(s.entry.relpath, reason) for s in downloads]
                downloads = []
        if downloads:
            total = sum(s.entry.planned_size for s in downloads)
            with (
                Progress(say, total, args.progress_interval) as progress,
                ThreadPoolExecutor(args.jobs) as pool,
            ):
                futures = {pool.submit(installer.download, s, progress): s for s in downloads}
                for future, step in futures.items():
                    try:
                        results.append(future.result())
                    except Exception as exc:
                        message = str(exc) if isinstance(exc, InstallError) else _short(exc)
                        failures.append((step.entry.relpath, message))
    finally:
        record.save()
        if not failures:
            installer.cleanup()

    rows = []
    for r in sorted(results, key=lambda r: r.relpath):
        speed = f"{r.nbytes / r.seconds / 1e6:.1f}" if r.source == "downloaded" and r.seconds > 0 else "-"
        rows.append((r.relpath, r.source, str(r.nbytes), f"{r.seconds:.1f}", speed))
    _table(say, ("file", "source", "bytes", "seconds", "MB/s"), rows)
    counts = {src: sum(1 for r in results if r.source == src) for src in SOURCES}
    summary = ", ".join(f"{n} {src}" for src, n in counts.items())
    downloaded = _fmt_bytes(sum(r.nbytes for r in results if r.source == "downloaded"))
    if failures:
        _report_failures(say, failures)
        say.error(f"RESULT failed: {len(failures)} of {len(steps)} files not installed ({summary})")
        return EXIT_FAILED
    say.line(
        f"RESULT ok: {len(steps)} files ({summary}), {_fmt_bytes(sum(r.nbytes for r in results))}; "
        f"{downloaded} downloaded"
    )
    return EXIT_OK


def run_verify(files: Sequence[ModelFile], models_dir: Path) -> int:
    say = Output()
    record = HashRecord(models_dir / STATE_DIRNAME / "verified.json")
    rows, problems = [], []
    for entry in files:
        found = check_file(entry, models_dir / entry.folder / entry.filename, record, HashPolicy.ALWAYS, say)
        if found.problem is not None:
            status, detail = "PROBLEM", found.problem
            problems.append(f"{entry.relpath}: {found.problem}")
        elif entry.size is None and entry.sha256 is None:
            status, detail = "unverified", "present; manifest has no size or sha256"
        else:
            status, detail = "ok", "size" + (" + sha256" if found.sha256_checked else "")
        rows.append((entry.relpath, status, detail))
    record.save()
    _table(say, ("file", "status", "detail"), rows)
    for problem in problems:
        say.error(f"[problem] {problem}")
    if problems:
        say.error(f"RESULT failed: {len(problems)} of {len(files)} files have problems")
        return EXIT_FAILED
    say.line(f"RESULT ok: {len(files)} files checked")
    return EXIT_OK


def run_check_remote(args: argparse.Namespace, files: Sequence[ModelFile]) -> int:
    """Ask the Hub (HEAD /resolve) for each file and compare commit, size and sha256 with the manifest."""
    say = Output()
    hub = Hub(say, args.timeout, args.retries, args.retry_wait)
    rows, problems = [], []
    for entry in files:
        revision = entry.revision or "main"
        try:
            meta = hub.attempts(
                entry.relpath,
                lambda entry=entry, revision=revision: hub.head(entry.repo, entry.path, revision),
                lambda exc, entry=entry, revision=revision: _permanent_reason(exc, entry, revision),
            )
        except HubUnreachable as exc:
            say.error(f"[failed] the Hub at {hub_endpoint()} could not be reached: {exc}")
            return EXIT_FAILED
        except InstallError as exc:
            problems.append(f"{entry.relpath}: {exc}")
            rows.append((entry.relpath, revision[:12], "-", "-", "ERROR"))
            continue
        etag = (meta.etag or "").strip('"')
        remote_sha = etag if SHA256_RE.fullmatch(etag) else None
        issues = []
        if entry.revision is not None and meta.commit_hash != entry.revision:
            issues.append(f"commit {meta.commit_hash}")
        if entry.size is not None and meta.size != entry.size:
            issues.append(f"size {meta.size} != {entry.size}")
        if entry.sha256 is not None and remote_sha is not None and remote_sha != entry.sha256:
            issues.append(f"sha256 {remote_sha} != {entry.sha256}")
        if issues:
            problems.append(f"{entry.relpath}: " + "; ".join(issues))
        rows.append(
            (
                entry.relpath,
                meta.commit_hash or "?",
                str(meta.size),
                remote_sha or etag,
                "MISMATCH" if issues else "ok",
            )
        )
    _table(say, ("file", "commit", "size", "sha256/etag", "status"), rows)
    for problem in problems:
        say.error(f"[problem] {problem}")
    return EXIT_FAILED if problems else EXIT_OK


# ----------------------------------------------------------------------------------------------- bundle


@dataclass(frozen=True)
class RemoteFile:
    size: int | None
    sha256: str | None  # LFS files: the sha256 of the content
    blob_id: str | None  # git blob id (of the LFS pointer for LFS files)


@dataclass(frozen=True)
class RemoteBundle:
    sha: str | None  # the head commit of main
    files: dict[str, RemoteFile] = field(default_factory=dict)


def _remote_bundle(repo: str) -> RemoteBundle | None:
    """What the bundle repository holds now; None when it does not exist (or is not visible)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = HfApi().model_info(repo, files_metadata=True)
    except RepositoryNotFoundError:
        return None
    files = {
        s.rfilename: RemoteFile(s.size, s.lfs.sha256 if s.lfs else None, s.blob_id)
        for s in info.siblings or []
    }
    return RemoteBundle(info.sha, files)


@dataclass(frozen=True)
class BundleItem:
    entry: ModelFile
    upload: bool
    size: int | None  # bytes in the bundle (remote or local), None when unknown
    source: Path | None  # local file to upload from
    reason: str


def _local_source(entry: ModelFile, models_dir: Path, cache_root: Path | None) -> tuple[Path | None, str]:
    candidates = [models_dir / entry.relpath]
    cached, _ = cache_lookup(entry, cache_root)
    if cached is not None:
        candidates.append(cached)
    for path in candidates:
        if path.is_file() and (entry.size is None or path.stat().st_size == entry.size):
            return path, str(path)
    return None, f"not available locally (looked in {models_dir} and the cache at {cache_root})"


def _plan_bundle(
    files: Sequence[ModelFile], remote: RemoteBundle | None, models_dir: Path, cache_root: Path | None
) -> list[BundleItem]:
    items = []
    for entry in files:
        there = remote.files.get(entry.relpath) if remote else None
        if there is not None and there.sha256 == entry.sha256:
            items.append(BundleItem(entry, False, there.size, None, "in the bundle, same sha256"))
            continue
        source, where = _local_source(entry, models_dir, cache_root)
        size = source.stat().st_size if source is not None else entry.size
        why = "replaces another version" if there is not None else "not in the bundle"
        items.append(BundleItem(entry, True, size, source, f"{why}; from {where}"))
    return items


def run_bundle(args: argparse.Namespace) -> int:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.utils.sha import git_hash

    say = Output()
    try:
        manifest = load_manifest(args.manifest)
        variant = args.variant or manifest.default_variant
        files = manifest.select(variant)
    except ManifestError as exc:
        say.error(f"[refused] {exc}")
        return EXIT_REFUSED
    unpinned = [f.relpath for f in files if f.sha256 is None or f.revision is None]
    if unpinned:
        say.error(f"[refused] a bundle holds only pinned files (revision and sha256): {', '.join(unpinned)}")
        return EXIT_REFUSED
    models_dir = args.models_dir.absolute()
    cache_root = None if args.no_cache else args.hf_cache_root
    token = "set" if args.hf_token_set else "not set"
    say.line(
        f"[bundle] {args.repo} on {hub_endpoint()}: variant {variant}, {len(files)} files (HF_TOKEN {token})"
    )
    try:
        remote = _remote_bundle(args.repo)
    except Exception as exc:
        say.error(f"[failed] cannot read {args.repo} from the Hub: {_short(exc)}")
        return EXIT_FAILED
    items = _plan_bundle(files, remote, models_dir, cache_root)
    manifest_bytes = bundle_manifest_bytes(
        [bundle_file(i.entry, i.size or i.entry.planned_size) for i in items], variant
    )
    there = remote.files.get(BUNDLE_MANIFEST) if remote else None
    manifest_changed = there is None or there.blob_id != git_hash(manifest_bytes)
    wanted = {f.relpath for f in files}
    stale = sorted(
        path
        for path in (remote.files if remote else {})
        if path.split("/", 1)[0] in FOLDERS and path not in wanted
    )
    uploads = [i for i in items if i.upload]
    rows = [(i.entry.relpath, "upload" if i.upload else "keep", str(i.size or "?"), i.reason) for i in items]
    rows += [(path, "delete", "-", "in the bundle, not in this variant") for path in stale]
    rows.append((BUNDLE_MANIFEST, "upload" if manifest_changed else "keep", str(len(manifest_bytes)), ""))
    _table(say, ("file", "action", "bytes", "reason"), rows)
    upload_bytes = sum(i.size or 0 for i in uploads)
    say.line(
        f"[bundle] to upload: {len(uploads)} of {len(items)} files, {_fmt_bytes(upload_bytes)}; "
        f"to delete: {len(stale)}; repository "
        + ("exists" if remote is not None else "to be created" + (" (private)" if args.private else ""))
    )
    missing = [i.entry.relpath for i in uploads if i.source is None]
    refusal = (
        f"not available locally, so they cannot be uploaded: {', '.join(missing)}. Install them first "
        f"(python download_models.py --models-dir {models_dir} --variant {variant}), then run bundle again."
        if missing
        else None
    )
    if args.dry_run:
        if refusal:
            say.line(f"[dry-run] a real run would refuse: {refusal}")
        say.line("[dry-run] nothing was changed")
        return EXIT_OK
    if refusal:
        say.error(f"[refused] {refusal}")
        return EXIT_REFUSED
    if not uploads and not stale and not manifest_changed:
        sha = remote.sha if remote else "?"
        say.line(f"RESULT ok: {args.repo}@{sha} is up to date ({len(items)} files); nothing uploaded")
        return EXIT_OK

    api = HfApi()
    try:
        if remote is None:
            api.create_repo(args.repo, private=args.private, exist_ok=True)
            say.line(f"[bundle] created {args.repo}" + (" (private)" if args.private else ""))
        operations: list[Any] = []
        sent = 0
        for number, item in enumerate(uploads, start=1):
            assert item.source is not None
            say.line(f"[check] hashing {item.entry.relpath} ({_fmt_bytes(item.size or 0)}) at {item.source}")
            digest = sha256_file(item.source)
            if digest != item.entry.sha256:
                say.error(
                    f"[failed] {item.entry.relpath}: {item.source} has sha256 {digest}, the manifest says "
                    f"{item.entry.sha256}; nothing was committed"
                )
                return EXIT_FAILED
            operation = CommitOperationAdd(path_in_repo=item.entry.relpath, path_or_fileobj=str(item.source))
            operation.upload_info.sha256 = bytes.fromhex(digest)  # hashed once, above
            started = time.monotonic()
            label = f"[upload] {number}/{len(uploads)} {item.entry.relpath}"
            say.line(f"{label}: {_fmt_bytes(item.size or 0)} from {item.source}")
            with heartbeat(say, label, args.progress_interval):
                api.preupload_lfs_files(args.repo, additions=[operation])
            sent += item.size or 0
            say.line(
                f"{label}: done in {time.monotonic() - started:.1f} s; "
                f"{_fmt_bytes(sent)} of {_fmt_bytes(upload_bytes)}"
            )
            operations.append(operation)
        operations.append(CommitOperationAdd(path_in_repo=BUNDLE_MANIFEST, path_or_fileobj=manifest_bytes))
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        commit = api.create_commit(
            args.repo,
            operations=operations,
            commit_message=f"Wan worker model bundle: {variant}, {len(items)} files",
            parent_commit=remote.sha if remote is not None else None,
        )
    except Exception as exc:
        say.error(
            f"[failed] {_short(exc)}; nothing was committed. Files already uploaded stay on the Hub: "
            "running bundle again does not send them again."
        )
        return EXIT_FAILED
    say.line(
        f"RESULT ok: {args.repo}@{commit.oid}: {len(items)} files ({len(uploads)} uploaded, "
        f"{_fmt_bytes(upload_bytes)}). Set the endpoint's Model to {args.repo} and "
        f"{BUNDLE_ENV}={args.repo} (docs/deploy.md)."
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------------- cli


def _common_args(p: argparse.ArgumentParser, env: ModelSettings) -> None:
    """Options whose defaults are the model settings (worker/config.py reads them for both)."""
    p.set_defaults(hf_token_set=env.hf_token_set)
    p.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="default: %(default)s")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=env.models_dir,
        help="ComfyUI models folder (env COMFY_MODELS_DIR, default %(default)s)",
    )
    p.add_argument(
        "--variant", default=env.variant, help="fp8 or bf16 (env MODEL_VARIANT, default %(default)s)"
    )
    p.add_argument(
        "--hf-cache-root",
        type=Path,
        default=env.hf_cache_root,
        help="RunPod cached models root (env RUNPOD_HF_CACHE_ROOT, default %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not use the cached models")
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")


def _repo_id(raw: str) -> str:
    if not is_repo_id(raw):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a Hugging Face repository id (ORG/NAME)")
    return raw


def parse_bundle_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="download_models.py bundle",
        description="Create or update the model bundle: the manifest's files of one variant at "
        "<folder>/<filename>, plus bundle.json, uploaded with huggingface_hub (HF_TOKEN with write access). "
        "Files come from --models-dir or the cache and are checked against the manifest's sha256 first.",
    )
    p.add_argument("--repo", type=_repo_id, required=True, help="the bundle repository, ORG/NAME")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="print what would be uploaded, change nothing")
    _common_args(p, model_settings())
    args = p.parse_args(argv)
    if args.progress_interval <= 0:
        p.error("--progress-interval must be > 0")
    return args


def model_settings() -> ModelSettings:
    """The model settings from the environment; a bad one stops the script (exit 2), saying which."""
    try:
        return ModelSettings.from_env()
    except WorkerError as exc:
        print(f"[refused] {exc.message}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from exc


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = model_settings()
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--dry-run", action="store_true", help="print the plan and the disk check, change nothing"
    )
    mode.add_argument(
        "--verify", action="store_true", help="check installed files (size, and sha256 when known)"
    )
    mode.add_argument(
        "--check-remote", action="store_true", help="compare the manifest with the Hub (HEAD requests)"
    )
    mode.add_argument(
        "--print-filename", metavar="ROLE", help="print the filename of ROLE in the selected variant"
    )
    _common_args(p, env)
    p.add_argument(
        "--bundle-repo",
        type=_repo_id,
        default=env.bundle_repo,
        help=f"the model bundle to link files from when it is in the cache (env {BUNDLE_ENV})",
    )
    p.add_argument("--jobs", type=int, default=4, help="parallel downloads (default %(default)s)")
    p.add_argument(
        "--retries", type=int, default=4, help="retries per file on transient errors (default %(default)s)"
    )
    p.add_argument(
        "--retry-wait", type=float, default=2.0, help="first retry delay, doubled each time, at most 30 s"
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=10,
        help="seconds one request to the Hub may wait for an answer or the next byte (default %(default)s)",
    )
    p.add_argument(
        "--min-free-bytes", type=int, default=1 << 30, help="free space that must remain after downloading"
    )
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        default=env.allow_unpinned,
        help=f"install entries without revision (env {UNPINNED_ENV}=1)",
    )
    args = p.parse_args(argv)
    if (
        args.jobs < 1
        or args.retries < 0
        or args.retry_wait < 0
        or args.progress_interval <= 0
        or args.timeout < 1
    ):
        p.error("--jobs and --timeout must be >= 1, --retries and --retry-wait >= 0, --progress-interval > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress lines replace tqdm bars
    if argv[:1] == ["bundle"]:
        return run_bundle(parse_bundle_args(argv[1:]))
    args = parse_args(argv)
    # Read by huggingface_hub when it is imported (below, lazily): the read timeout of every download.
    os.environ["HF_HUB_DOWNLOAD_TIMEOUT"] = str(args.timeout)
    try:
        manifest = load_manifest(args.manifest)
        files = manifest.select(args.variant)
        if args.print_filename:
            print(manifest.filename_for(args.print_filename, args.variant))
            return EXIT_OK
    except ManifestError as exc:
        print(f"[refused] {exc}", file=sys.stderr)
        return EXIT_REFUSED
    models_dir = args.models_dir.absolute()
    if args.verify:
        return run_verify(files, models_dir)
    if args.check_remote:
        return run_check_remote(args, files)
    cache_root = None if args.no_cache else args.hf_cache_root
    return run_install(args, files, models_dir, cache_root)


if __name__ == "__main__":
    sys.exit(main())
