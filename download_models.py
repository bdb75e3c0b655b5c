#!/usr/bin/env python3
"""Install the model files listed in models/manifest.json into ComfyUI's models folders.

    python download_models.py                  # install (skip present, link cached, download the rest)
    python download_models.py --dry-run        # print the plan, touch nothing
    python download_models.py --verify         # check installed files (size, sha256), exit 1 on problems
    python download_models.py --check-remote   # compare the manifest with what the Hub serves
    python download_models.py --print-filename diffusion_model   # filename the workflow must load

Sources, in order of preference, for each file of the selected variant:
1. already installed in ``<models-dir>/<folder>/<filename>`` with the right size and sha256 -> kept;
2. RunPod's cached models, ``<hf-cache-root>/hub/models--ORG--NAME/snapshots/<revision>/<path>``
   at exactly the pinned revision -> symlinked (no copy, no download);
3. the Hugging Face Hub at the pinned revision, through ``huggingface_hub.hf_hub_download``
   (honours HF_ENDPOINT and HF_TOKEN), staged inside the models dir and renamed into place.

Exit status: 0 done, 1 some file failed (named on stderr), 2 refused before starting
(invalid manifest, unpinned entry without ALLOW_UNPINNED_MODELS=1, not enough disk space).
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from worker.models import (
    MANIFEST_PATH,
    SHA256_RE,
    ManifestError,
    ModelFile,
    load_manifest,
)

DEFAULT_MODELS_DIR = "/comfyui/models"
DEFAULT_HF_CACHE_ROOT = "/runpod-volume/huggingface-cache"
UNPINNED_ENV = "ALLOW_UNPINNED_MODELS"
STATE_DIRNAME = ".download_models"  # inside the models dir: staging area + record of hashed files

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


# ------------------------------------------------------------------------------------- local inspection


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class HashRecord:
    """Remembers which installed files were hashed (by size and mtime), so a cold start with files
    already in place does not re-hash tens of GB. Stored as JSON in the models dir."""

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
    problem: str | None  # None: installed and acceptable
    sha256_checked: bool = False


def inspect_installed(
    entry: ModelFile, target: Path, record: HashRecord, policy: HashPolicy, say: Output | None = None
) -> Inspection:
    """Whether ``target`` holds ``entry``: exists (through symlinks), right size, right sha256."""
    if not target.exists():
        return Inspection("missing (broken symlink)" if target.is_symlink() else "missing")
    if not target.is_file():
        return Inspection("not a regular file")
    st = target.stat()
    if entry.size is not None and st.st_size != entry.size:
        return Inspection(f"size {st.st_size} bytes, expected {entry.size}")
    if entry.sha256 is None:
        return Inspection(None)
    if target.is_symlink():
        # Hugging Face caches name LFS blobs by their sha256: the link target says what the content is.
        blob = target.resolve().name
        if SHA256_RE.fullmatch(blob):
            if blob != entry.sha256:
                return Inspection(f"links to blob {blob[:12]}..., expected sha256 {entry.sha256[:12]}...")
            return Inspection(None, sha256_checked=True)
    if policy is HashPolicy.NEVER:
        return Inspection(None)
    if policy is HashPolicy.UNRECORDED and record.matches(entry.relpath, st, entry.sha256):
        return Inspection(None, sha256_checked=True)
    if say is not None:
        say.line(f"[check] hashing {entry.relpath} ({_fmt_bytes(st.st_size)})")
    digest = sha256_file(target)
    if digest != entry.sha256:
        return Inspection(f"sha256 {digest[:12]}..., expected {entry.sha256[:12]}...", sha256_checked=True)
    record.record(entry.relpath, st, digest)
    return Inspection(None, sha256_checked=True)


def cache_lookup(entry: ModelFile, cache_root: Path | None) -> tuple[Path | None, list[str]]:
    """(the cached file at the pinned revision or None, other cached revisions that hold the path)."""
    if cache_root is None:
        return None, []
    snapshots = cache_root / "hub" / ("models--" + entry.repo.replace("/", "--")) / "snapshots"
    if entry.revision is not None:
        candidate = snapshots / entry.revision / entry.path
        if candidate.is_file():
            return candidate, []
    try:
        others = sorted(d.name for d in snapshots.iterdir() if d.name != entry.revision)
    except OSError:
        return None, []
    return None, [rev for rev in others if (snapshots / rev / entry.path).is_file()]


def _cache_problem(entry: ModelFile, cached: Path) -> str | None:
    if entry.size is not None and cached.stat().st_size != entry.size:
        return f"cached file has {cached.stat().st_size} bytes, expected {entry.size}"
    blob = cached.resolve().name
    if entry.sha256 is not None and SHA256_RE.fullmatch(blob) and blob != entry.sha256:
        return f"cached blob is {blob[:12]}..., expected sha256 {entry.sha256[:12]}..."
    return None


# ------------------------------------------------------------------------------------------------- plan


class Action(Enum):
    PRESENT = "present"
    LINK = "cache"
    DOWNLOAD = "download"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class Step:
    entry: ModelFile
    target: Path
    action: Action
    reason: str
    cache_path: Path | None = None
    replace_existing: bool = False


def make_plan(
    files: Sequence[ModelFile],
    models_dir: Path,
    cache_root: Path | None,
    record: HashRecord,
    *,
    allow_unpinned: bool,
    policy: HashPolicy,
    say: Output | None = None,
) -> list[Step]:
    steps = []
    for entry in files:
        target = models_dir / entry.folder / entry.filename
        found = inspect_installed(entry, target, record, policy, say)
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
        cached, other_revisions = cache_lookup(entry, cache_root)
        notes = [found.problem]
        if cached is not None:
            problem = _cache_problem(entry, cached)
            if problem is None:
                steps.append(
                    Step(
                        entry,
                        target,
                        Action.LINK,
                        f"cache at {entry.revision}",
                        cached,
                        replace_existing=replace,
                    )
                )
                continue
            notes.append(problem)
        if other_revisions:
            notes.append(f"cache has other revision {', '.join(r[:12] for r in other_revisions)}")
        if entry.revision is None and not allow_unpinned:
            notes.append(f"no pinned revision; pin it in the manifest or set {UNPINNED_ENV}=1")
            steps.append(Step(entry, target, Action.BLOCKED, "; ".join(notes)))
            continue
        steps.append(Step(entry, target, Action.DOWNLOAD, "; ".join(notes), replace_existing=replace))
    return steps


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def disk_space_problem(steps: Sequence[Step], models_dir: Path, min_free_bytes: int) -> str | None:
    """Refuse early when the downloads cannot fit, saying how much is missing."""
    needed = sum(s.entry.planned_size for s in steps if s.action is Action.DOWNLOAD)
    if needed == 0:
        return None
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
    if needed <= available:
        return None
    return (
        f"not enough disk space under {models_dir}: downloads need {_fmt_bytes(needed)}, "
        f"{_fmt_bytes(free)} free (+{_fmt_bytes(reclaimed)} from files to be replaced), "
        f"{_fmt_bytes(min_free_bytes)} must stay free; missing {_fmt_bytes(needed - available)}"
    )


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

    def line(self, text: str) -> None:
        with self._lock:
            print(text, flush=True)

    def error(self, text: str) -> None:
        with self._lock:
            print(text, file=sys.stderr, flush=True)


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):  # a temporary file may vanish between walk and stat
                total += os.stat(os.path.join(root, name)).st_size
    return total


class Progress:
    """Reports per-file and total download progress by measuring each file's staging folder."""

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
        now, current = time.monotonic(), done
        for relpath, (stage, size, started) in sorted(active.items()):
            got = _dir_bytes(stage)
            current += got
            share = f"{100 * got / size:5.1f}%" if size else "   ?  "
            speed = got / max(now - started, 1e-6) / 1e6
            self.say.line(
                f"[download] {relpath} {share} {_fmt_bytes(got)} of {_fmt_bytes(size or 0)} {speed:.1f} MB/s"
            )
        if self.total:
            share = 100 * current / self.total
            self.say.line(f"[total] {share:5.1f}% {_fmt_bytes(current)} of {_fmt_bytes(self.total)}")


# ------------------------------------------------------------------------------------------- install


class InstallError(Exception):
    """One file could not be installed; the message is meant for the operator."""


@dataclass(frozen=True)
class Result:
    relpath: str
    source: str  # cache / present / downloaded
    nbytes: int
    seconds: float


def _permanent_reason(exc: Exception, entry: ModelFile, revision: str) -> str | None:
    """A readable reason when retrying cannot help, else None (transient: network, 5xx, 429)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{entry.repo}@{revision}"
    if isinstance(exc, LocalEntryNotFoundError):  # raised when the Hub could not be reached
        return None
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


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class Installer:
    def __init__(
        self, models_dir: Path, record: HashRecord, say: Output, retries: int, retry_wait: float
    ) -> None:
        self.models_dir, self.record, self.say = models_dir, record, say
        self.retries, self.retry_wait = retries, retry_wait
        self.staging_root = models_dir / STATE_DIRNAME / "staging"

    def link(self, step: Step) -> Result:
        assert step.cache_path is not None
        started = time.monotonic()
        if step.replace_existing:
            step.target.unlink(missing_ok=True)
        step.target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(step.cache_path, step.target)
        return Result(step.entry.relpath, "cache", step.cache_path.stat().st_size, time.monotonic() - started)

    def resolve_unpinned(self, entry: ModelFile) -> str:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url

        meta = get_hf_file_metadata(hf_hub_url(entry.repo, entry.path, revision="main"), retry_on_errors=True)
        if meta.commit_hash is None:
            raise InstallError(f"{entry.relpath}: the Hub did not say which commit 'main' is")
        self.say.line(
            f"[unpinned] {entry.relpath}: main is {meta.commit_hash}, size {meta.size}, etag {meta.etag}; "
            "pin these in models/manifest.json"
        )
        return meta.commit_hash

    def download(self, step: Step, progress: Progress | None = None) -> Result:
        from huggingface_hub import hf_hub_download

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
            for attempt in range(1, self.retries + 2):
                try:
                    local = Path(
                        hf_hub_download(
                            repo_id=entry.repo,
                            filename=entry.path,
                            revision=revision,
                            local_dir=stage,
                            # local_dir mode copies from this cache when it has the file: keep it empty so
                            # nothing is ever stored twice.
                            cache_dir=stage / ".empty-cache",
                        )
                    )
                    break
                except Exception as exc:
                    reason = _permanent_reason(exc, entry, revision)
                    if reason is not None:
                        raise InstallError(reason) from exc
                    if attempt > self.retries:
                        raise InstallError(f"failed after {attempt} attempts: {_short(exc)}") from exc
                    wait = self.retry_wait * 2 ** (attempt - 1)
                    self.say.error(
                        f"[retry] {entry.relpath}: attempt {attempt} failed ({_short(exc)}); "
                        f"retrying in {wait:.1f}s"
                    )
                    time.sleep(wait)
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
        return Result(entry.relpath, "downloaded", nbytes, time.monotonic() - started)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging_root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ modes


def _table(say: Output, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        say.line("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_plan(say: Output, steps: Sequence[Step]) -> None:
    rows = [
        (s.entry.relpath, s.action.value, str(s.entry.size or f"~{s.entry.planned_size}"), s.reason)
        for s in steps
    ]
    _table(say, ("file", "action", "bytes", "reason"), rows)


def run_install(
    args: argparse.Namespace, files: Sequence[ModelFile], models_dir: Path, cache_root: Path | None
) -> int:
    say = Output()
    record = HashRecord(models_dir / STATE_DIRNAME / "verified.json")
    allow_unpinned = args.allow_unpinned or os.environ.get(UNPINNED_ENV, "").lower() in ("1", "true", "yes")
    policy = HashPolicy.NEVER if args.dry_run else HashPolicy.UNRECORDED
    steps = make_plan(
        files, models_dir, cache_root, record, allow_unpinned=allow_unpinned, policy=policy, say=say
    )
    token = "set" if os.environ.get("HF_TOKEN") else "not set"  # never print the token itself
    say.line(f"[plan] {len(steps)} files into {models_dir} (HF_TOKEN {token})")
    _print_plan(say, steps)
    blocked = [s for s in steps if s.action is Action.BLOCKED]
    space = disk_space_problem(steps, models_dir, args.min_free_bytes)
    if args.dry_run:
        say.line("[dry-run] nothing was changed")
    if blocked:
        names = ", ".join(s.entry.relpath for s in blocked)
        say.error(
            f"[refused] no pinned revision for: {names}. Pin them in the manifest or set {UNPINNED_ENV}=1."
        )
    if space:
        say.error(f"[refused] {space}")
    if blocked or space:
        return EXIT_REFUSED
    if args.dry_run:
        return EXIT_OK

    installer = Installer(models_dir, record, say, args.retries, args.retry_wait)
    results: list[Result] = []
    failures: list[str] = []
    try:
        for step in steps:
            if step.action is Action.PRESENT:
                results.append(Result(step.entry.relpath, "present", step.target.stat().st_size, 0.0))
            elif step.action is Action.LINK:
                try:
                    results.append(installer.link(step))
                except OSError as exc:
                    failures.append(f"{step.entry.relpath}: cannot link {step.cache_path}: {exc}")
        downloads = [s for s in steps if s.action is Action.DOWNLOAD]
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
                        failures.append(f"{step.entry.relpath}: {message}")
    finally:
        record.save()
        if not failures:
            installer.cleanup()

    rows = []
    for r in sorted(results, key=lambda r: r.relpath):
        speed = f"{r.nbytes / r.seconds / 1e6:.1f}" if r.source == "downloaded" and r.seconds > 0 else "-"
        rows.append((r.relpath, r.source, str(r.nbytes), f"{r.seconds:.1f}", speed))
    _table(say, ("file", "source", "bytes", "seconds", "MB/s"), rows)
    counts = {src: sum(1 for r in results if r.source == src) for src in ("downloaded", "cache", "present")}
    summary = ", ".join(f"{n} {src}" for src, n in counts.items())
    if failures:
        for failure in failures:
            say.error(f"[failed] {failure}")
        say.error(f"RESULT failed: {len(failures)} of {len(steps)} files not installed ({summary})")
        return EXIT_FAILED
    say.line(f"RESULT ok: {len(steps)} files ({summary}), {_fmt_bytes(sum(r.nbytes for r in results))}")
    return EXIT_OK


def run_verify(files: Sequence[ModelFile], models_dir: Path) -> int:
    say = Output()
    record = HashRecord(models_dir / STATE_DIRNAME / "verified.json")
    rows, problems = [], []
    for entry in files:
        found = inspect_installed(
            entry, models_dir / entry.folder / entry.filename, record, HashPolicy.ALWAYS, say
        )
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


def run_check_remote(files: Sequence[ModelFile]) -> int:
    """Ask the Hub (HEAD /resolve) for each file and compare commit, size and sha256 with the manifest."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    say, rows, problems = Output(), [], []
    for entry in files:
        revision = entry.revision or "main"
        try:
            meta = get_hf_file_metadata(
                hf_hub_url(entry.repo, entry.path, revision=revision), retry_on_errors=True
            )
        except Exception as exc:
            reason = _permanent_reason(exc, entry, revision) or _short(exc)
            problems.append(f"{entry.relpath}: {reason}")
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


# --------------------------------------------------------------------------------------------------- cli


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    env = os.environ
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
    p.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="default: %(default)s")
    p.add_argument(
        "--models-dir",
        type=Path,
        default=Path(env.get("COMFY_MODELS_DIR", DEFAULT_MODELS_DIR)),
        help="ComfyUI models folder (env COMFY_MODELS_DIR, default %(default)s)",
    )
    p.add_argument(
        "--variant", default=env.get("MODEL_VARIANT") or None, help="e.g. bf16 (env MODEL_VARIANT)"
    )
    p.add_argument(
        "--hf-cache-root",
        type=Path,
        default=Path(env.get("RUNPOD_HF_CACHE_ROOT", DEFAULT_HF_CACHE_ROOT)),
        help="RunPod cached models root (env RUNPOD_HF_CACHE_ROOT, default %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not link from the cached models")
    p.add_argument("--jobs", type=int, default=4, help="parallel downloads (default %(default)s)")
    p.add_argument(
        "--retries", type=int, default=4, help="retries per file on transient errors (default %(default)s)"
    )
    p.add_argument("--retry-wait", type=float, default=2.0, help="first retry delay, doubled each time (s)")
    p.add_argument(
        "--min-free-bytes", type=int, default=1 << 30, help="free space that must remain after downloading"
    )
    p.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress lines")
    p.add_argument(
        "--allow-unpinned",
        action="store_true",
        help=f"install entries without revision (env {UNPINNED_ENV}=1)",
    )
    args = p.parse_args(argv)
    if args.jobs < 1 or args.retries < 0 or args.retry_wait < 0 or args.progress_interval <= 0:
        p.error("--jobs must be >= 1, --retries and --retry-wait >= 0, --progress-interval > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress lines replace tqdm bars
    args = parse_args(argv)
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
        return run_check_remote(files)
    cache_root = None if args.no_cache else args.hf_cache_root
    return run_install(args, files, models_dir, cache_root)


if __name__ == "__main__":
    sys.exit(main())
