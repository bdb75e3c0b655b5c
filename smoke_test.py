#!/usr/bin/env python3
"""Acceptance gate of a deployment: one (or N) real jobs through the queue API, the result
checked independently of the worker.

    python smoke_test.py --endpoint-id ID                  # RunPod (RUNPOD_API_KEY); MINIO_* in the env
    python smoke_test.py --api-url http://127.0.0.1:8000   # the local queue API (localdev/queue_api.py)
    python smoke_test.py ... --image-key a.png --video-key d.mp4   # inputs already in the bucket
    python smoke_test.py ... --jobs 10 --concurrency 2 --report report.json
    python smoke_test.py ... --report-dir DIR    # + pictures of the window joins, seam scores

What it does, as a client of the endpoint would: puts its inputs in MinIO (generated, or
given keys), ``POST /run``, polls ``/status/{id}`` with backoff showing the status and the
worker's progress, cancels the job (``POST /cancel/{id}``) past ``--timeout``, and on
COMPLETED downloads ``output.minio_key`` and checks the file itself with ffprobe/ffmpeg:
H.264, yuv420p, 1280x720, 24/1 fps, one frame per driving frame at 24 fps, audio exactly
when the driving video has audio, decodes to the end; plus the key's naming
(``{prefix}/{user_id}/{avatar_id}/{job_id}.mp4``), its content type, and inputs left
unchanged. What the worker reports about its video is never trusted.

``--report-dir DIR`` also shows what came out (``smoke_report.py``): ``contact_sheet.png`` (the
frames around every window join, driving above output), ``timeline.png`` (mean colour and
frame-to-frame change over time, joins marked) and a seam score per join in the JSON report
(``DIR/report.json`` unless ``--report`` says otherwise), with a warning when a join stands out.
Warnings are for a person to look at; they never fail the run.

Exit code 0 only when every check of every job passed (each failed check is named); 1 when
a check failed; 2 for a usage or configuration problem; 130 when interrupted (Ctrl-C cancels
the jobs in flight first). Needs only requests, minio and
ffprobe/ffmpeg (``--report-dir``: also Pillow and ``smoke_report.py``); generating inputs needs the
repository (``localdev.media_fixtures``).

Cold starts: a job counts as one when its ``delayTime`` (queue wait + worker start) is over
``--cold-start-ms`` (default 10 s: a warm worker takes a job within about a second, a cold
one boots the container and ComfyUI first). With ``--concurrency`` above the endpoint's
worker count jobs also wait behind each other, which this count cannot tell apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import requests
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from worker.contract import OUTPUT, frames_for, key_segment, normalize_prefix, output_key
from worker.probe import ProbeError, ffprobe

RUNPOD_API_BASE = "https://api.runpod.ai/v2"
WIDTH, HEIGHT, FPS = OUTPUT.width, OUTPUT.height, OUTPUT.fps
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
EXIT_PASSED, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_POLL_FAILURES = 5
CANCEL_GRACE_S = 30.0
DEFAULT_BINDINGS = Path(__file__).resolve().parent / "workflows" / "wan22_animate_replace.bindings.json"


class UsageError(Exception):
    """A problem with the command line or the environment (exit code 2)."""


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class JobRecord:
    index: int
    id: str | None = None
    status: str | None = None
    delay_ms: int | None = None
    execution_ms: int | None = None
    worker_id: str | None = None
    error_code: str | None = None
    error: str | None = None  # the message
    error_details: dict[str, Any] | None = None
    output_key: str | None = None
    worker_timings_s: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None  # the worker's output.cost (gpu_s, usd, usd_per_s, gpu, reason)
    checks: list[Check] = field(default_factory=list)
    seams: dict[str, Any] | None = None  # --report-dir: smoke_report.analyse's numbers
    warnings: list[str] = field(default_factory=list)  # things to look at; not failed checks

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, passed, detail))
        return passed


@dataclass
class Inputs:
    image_key: str
    video_key: str
    driving_frames: int  # the driving video's frame count at 24 fps: what the output must have
    driving_has_audio: bool
    driving_duration_s: float
    uploaded: list[str] = field(default_factory=list)
    etags: dict[str, str] = field(default_factory=dict)


# -- the endpoint ---------------------------------------------------------------------------


class EndpointClient:
    """RunPod's queue API (or the local one): /run, /status, /cancel."""

    def __init__(self, base_url: str, api_key: str | None, *, request_timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.request_timeout_s = request_timeout_s
        self.session = requests.Session()
        # Connection failures only: a POST that reached the server is never sent twice.
        retry = Retry(total=3, connect=3, read=0, status=0, other=0, backoff_factor=0.5)
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def run(self, job_input: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/run", json={"input": job_input})

    def status(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/status/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/cancel/{job_id}")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.session.request(
            method, self.base_url + path, timeout=self.request_timeout_s, **kwargs
        )
        if response.status_code >= 400:
            raise requests.HTTPError(
                f"{method} {path}: HTTP {response.status_code}: {response.text[:300]}", response=response
            )
        body = response.json()
        if not isinstance(body, dict):
            raise requests.HTTPError(f"{method} {path}: unexpected reply {body!r:.200}", response=response)
        return body


# -- media facts, measured here -----------------------------------------------------------------


def probe_file(path: Path, *options: str) -> dict[str, Any]:
    try:
        return ffprobe(path, *options, timeout_s=600)
    except ProbeError as exc:
        raise ValueError(f"ffprobe cannot read {path.name}: {exc.reason}") from exc


def _stream_duration(stream: dict[str, Any]) -> float:
    if stream.get("duration"):
        return float(stream["duration"])
    tag = (stream.get("tags") or {}).get("DURATION")  # Matroska/WebM: "00:00:05.000000000"
    if tag:
        hours, minutes, seconds = str(tag).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return 0.0


def driving_facts(path: Path) -> tuple[float, int, bool]:
    """(duration of the video stream in s, frames at 24 fps, has audio) of a driving video."""
    probe = probe_file(path, "-count_packets")
    streams = probe.get("streams") or []
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise ValueError(f"{path.name} has no video stream")
    duration = _stream_duration(video) or float((probe.get("format") or {}).get("duration") or 0.0)
    if duration <= 0:
        raise ValueError(f"{path.name} has no duration")
    has_audio = any(s.get("codec_type") == "audio" and int(s.get("nb_read_packets") or 0) for s in streams)
    return duration, frames_for(duration), has_audio


def check_video_file(record: JobRecord, path: Path, inputs: Inputs) -> None:
    """The output file against the contract, measured with ffprobe and ffmpeg."""
    try:
        probe = probe_file(path)
        counted = probe_file(path, "-count_frames", "-select_streams", "v:0")
    except ValueError as exc:
        record.check("probe", False, str(exc))
        return
    streams = probe.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if not record.check("video_stream", video is not None, "present" if video is not None else "none"):
        return
    assert video is not None
    codec = video.get("codec_name")
    record.check("codec_h264", codec == "h264", f"codec {codec}")
    pix_fmt = video.get("pix_fmt")
    record.check("pixel_format_yuv420p", pix_fmt == "yuv420p", f"pix_fmt {pix_fmt}")
    size = f"{video.get('width')}x{video.get('height')}"
    record.check("resolution_1280x720", size == f"{WIDTH}x{HEIGHT}", size)
    rates = f"r_frame_rate {video.get('r_frame_rate')}, avg_frame_rate {video.get('avg_frame_rate')}"
    record.check(
        "fps_24", video.get("r_frame_rate") == f"{FPS}/1" and video.get("avg_frame_rate") == f"{FPS}/1", rates
    )
    counted_video = (counted.get("streams") or [{}])[0]
    frames = int(counted_video.get("nb_read_frames") or 0)
    record.check(
        "frame_count",
        frames == inputs.driving_frames,
        f"{frames} frames decoded; the driving video has {inputs.driving_frames} at {FPS} fps "
        f"({inputs.driving_duration_s:.3f} s)",
    )
    has_audio = any(s.get("codec_type") == "audio" for s in streams)
    record.check(
        "audio_matches_driving",
        has_audio == inputs.driving_has_audio,
        f"output {'has' if has_audio else 'has no'} audio; driving video "
        f"{'has' if inputs.driving_has_audio else 'has no'} audio",
    )
    decode = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    errors = decode.stderr.strip()
    record.check(
        "decodes_to_end",
        decode.returncode == 0 and not errors,
        f"ffmpeg exit {decode.returncode}" + (f": {errors[:300]}" if errors else ""),
    )


# -- storage -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    client: Minio
    name: str

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Bucket:
        missing = [
            name
            for name in ("MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_BUCKET")
            if not env.get(name, "").strip()
        ]
        if missing:
            raise UsageError(f"set {', '.join(missing)} (the MinIO the worker uses)")
        endpoint = env["MINIO_ENDPOINT"].strip()
        if "://" in endpoint:
            endpoint = urlsplit(endpoint).netloc
        secure = env.get("MINIO_USE_SSL", "").strip().lower() in ("1", "true", "yes", "on")
        client = Minio(
            endpoint,
            access_key=env["MINIO_ACCESS_KEY"].strip(),
            secret_key=env["MINIO_SECRET_KEY"].strip(),
            secure=secure,
            region=env.get("MINIO_REGION", "").strip() or None,
        )
        return cls(client, env["MINIO_BUCKET"].strip())

    def etag(self, key: str) -> str | None:
        try:
            return str(self.client.stat_object(self.name, key).etag)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
                return None
            raise


def generate_inputs(work_dir: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    try:
        from localdev.media_fixtures import make_avatar_image, make_driving_video
    except ImportError as exc:
        raise UsageError(
            "generating inputs needs the repository (localdev.media_fixtures): run from the repository "
            f"root, or pass --image-key and --video-key of inputs already in the bucket ({exc})"
        ) from None
    image = work_dir / "avatar.png"
    video = work_dir / "driving.mp4"
    make_avatar_image(image)
    make_driving_video(
        video,
        seconds=args.fixture_seconds,
        fps=args.fixture_fps,
        width=args.fixture_width,
        height=args.fixture_height,
        audio=not args.fixture_no_audio,
    )
    return image, video


def prepare_inputs(bucket: Bucket, args: argparse.Namespace, work_dir: Path, out: TextIO) -> Inputs:
    image_key, video_key = args.image_key, args.video_key
    uploaded: list[str] = []
    local_video = work_dir / "driving-input"
    if image_key is None or video_key is None:
        image_path, video_path = generate_inputs(work_dir, args)
        prefix = f"{args.input_prefix.strip('/')}/{uuid.uuid4().hex[:12]}"
        if image_key is None:
            image_key = f"{prefix}/avatar.png"
            bucket.client.fput_object(bucket.name, image_key, str(image_path), content_type="image/png")
            uploaded.append(image_key)
        if video_key is None:
            video_key = f"{prefix}/driving.mp4"
            bucket.client.fput_object(bucket.name, video_key, str(video_path), content_type="video/mp4")
            uploaded.append(video_key)
            shutil.copyfile(video_path, local_video)
        print(f"inputs uploaded to s3://{bucket.name}/{prefix}/", file=out, flush=True)
    if video_key not in uploaded:
        try:
            bucket.client.fget_object(bucket.name, video_key, str(local_video))
        except S3Error as exc:
            raise UsageError(f"cannot read --video-key {video_key!r}: {exc.code}") from None
    etags = {key: bucket.etag(key) for key in (image_key, video_key)}
    absent = [key for key, etag in etags.items() if etag is None]
    if absent:
        raise UsageError(f"not in bucket {bucket.name!r}: {', '.join(absent)}")
    try:
        duration, frames, has_audio = driving_facts(local_video)
    except (ValueError, subprocess.TimeoutExpired) as exc:
        raise UsageError(f"the driving video {video_key!r} cannot be used: {exc}") from None
    print(
        f"driving video: {duration:.3f} s -> {frames} frames at {FPS} fps, "
        f"{'with' if has_audio else 'without'} audio",
        file=out,
        flush=True,
    )
    return Inputs(
        image_key=image_key,
        video_key=video_key,
        driving_frames=frames,
        driving_has_audio=has_audio,
        driving_duration_s=duration,
        uploaded=uploaded,
        etags={key: str(etag) for key, etag in etags.items()},
    )


# -- showing progress ------------------------------------------------------------------------------


class ProgressView:
    """A progress bar on a terminal (one job at a time), plain lines otherwise."""

    BAR_WIDTH = 30

    def __init__(self, out: TextIO, *, bar: bool, lock: threading.Lock) -> None:
        self.out = out
        self.bar = bar
        self.lock = lock
        self._last_line: dict[str, str] = {}
        self._bar_open = False

    def show(self, label: str, body: dict[str, Any], elapsed_s: float) -> None:
        """The job's state while it is queued or running (the end is said by the caller)."""
        status = str(body.get("status"))
        if status in TERMINAL:
            return
        progress = body.get("output") if status == "IN_PROGRESS" else None
        percent = _percent(progress)
        stage = _describe_progress(progress)
        with self.lock:
            if self.bar:
                filled = int(self.BAR_WIDTH * (percent or 0.0) / 100.0)
                bar = "#" * filled + "-" * (self.BAR_WIDTH - filled)
                shown = f"{percent:5.1f}%" if percent is not None else "     "
                self.out.write(
                    f"\r{label} [{bar}] {shown} {status:<11} {stage:<40.40} {elapsed_s:6.0f} s\x1b[K"
                )
                self.out.flush()
                self._bar_open = True
                return
            # Plain lines: one per change of status or stage, and per 10 % of progress.
            bucket = "" if percent is None else str(int(percent // 10))
            key = f"{status}|{stage.split(' step')[0]}|{bucket}"
            if self._last_line.get(label) == key:
                return
            self._last_line[label] = key
            if self._bar_open:
                self.out.write("\n")
                self._bar_open = False
            parts = [
                label,
                status,
                f"{percent:.1f}%" if percent is not None else "",
                stage,
                f"({elapsed_s:.0f} s)",
            ]
            self.out.write(" ".join(part for part in parts if part) + "\n")
            self.out.flush()

    def say(self, line: str) -> None:
        with self.lock:
            if self._bar_open:
                self.out.write("\n")
                self._bar_open = False
            self.out.write(line + "\n")
            self.out.flush()


def _percent(progress: Any) -> float | None:
    if isinstance(progress, dict) and isinstance(progress.get("percent"), int | float):
        return max(0.0, min(100.0, float(progress["percent"])))
    return None


def _describe_progress(progress: Any) -> str:
    if not isinstance(progress, dict):
        return ""
    parts = [str(progress.get("stage") or "")]
    if progress.get("node"):
        parts.append(str(progress["node"]))
    if progress.get("step") is not None and progress.get("steps"):
        parts.append(f"step {progress['step']}/{progress['steps']}")
    return " ".join(part for part in parts if part)


# -- one job --------------------------------------------------------------------------------------


def run_job(
    index: int,
    args: argparse.Namespace,
    inputs: Inputs,
    bucket: Bucket,
    view: ProgressView,
    stop: threading.Event,
    work_dir: Path,
) -> JobRecord:
    record = JobRecord(index=index)
    label = f"job {index}"
    client = EndpointClient(args.api_url, args.api_key)
    job_input: dict[str, Any] = {
        "input_image_minio_path": inputs.image_key,
        "driving_video_path": inputs.video_key,
        "user_id": args.user_id,
        "avatar_id": args.avatar_id,
    }
    if args.seed is not None:
        job_input["seed"] = args.seed
    started = time.monotonic()
    try:
        reply = client.run(job_input)
    except (requests.RequestException, ValueError) as exc:
        record.check("submitted", False, f"POST /run failed: {exc}")
        return record
    record.id = str(reply.get("id") or "")
    if not record.check(
        "submitted", bool(record.id), f"POST /run -> {reply}" if not record.id else "POST /run"
    ):
        return record
    label = f"job {index} {record.id}"
    view.say(f"{label}: submitted")
    body = _wait(client, record, args, view, label, started, stop)
    _record_status(record, body)
    elapsed = time.monotonic() - started
    view.say(f"{label}: {_status_detail(record, elapsed)}")
    if not record.check("completed", record.status == "COMPLETED", _status_detail(record, elapsed)):
        return record
    output = body.get("output") if isinstance(body.get("output"), dict) else {}
    assert isinstance(output, dict)
    timings = output.get("timings_s")
    record.worker_timings_s = timings if isinstance(timings, dict) else None
    cost = output.get("cost")
    record.cost = cost if isinstance(cost, dict) else None
    key = output.get("minio_key")
    if not record.check(
        "output_key_reported", isinstance(key, str) and bool(key), f"output.minio_key {key!r:.200}"
    ):
        return record
    assert isinstance(key, str)
    record.output_key = key
    expected_key = output_key(args.output_prefix, record.id, args.user_segment, args.avatar_segment)
    record.check(
        "key_naming", key == expected_key, key if key == expected_key else f"{key}, expected {expected_key}"
    )
    local = work_dir / f"output-{index}.mp4"
    try:
        stat = bucket.client.stat_object(bucket.name, key)
        bucket.client.fget_object(bucket.name, key, str(local))
    except S3Error as exc:
        record.check("output_downloaded", False, f"s3://{bucket.name}/{key}: {exc.code}")
        return record
    record.check("output_downloaded", True, f"{local.stat().st_size} bytes")
    record.check("content_type_video_mp4", stat.content_type == "video/mp4", f"{stat.content_type}")
    check_video_file(record, local, inputs)
    if args.report_dir is not None:
        report_seams(record, args, local, work_dir / "driving-input", inputs, view, label)
    return record


def report_seams(
    record: JobRecord,
    args: argparse.Namespace,
    output: Path,
    driving: Path,
    inputs: Inputs,
    view: ProgressView,
    label: str,
) -> None:
    """--report-dir: pictures of the window joins and a seam score per join (smoke_report.py).
    What it finds is a warning for a person to look at, never a failed check."""
    import smoke_report  # Pillow; checked in main before any job runs

    folder = args.report_dir if args.jobs == 1 else args.report_dir / f"job-{record.index}"
    view.say(f"{label}: measuring the output around its window joins -> {folder}/")
    try:
        record.seams = smoke_report.analyse(
            output,
            driving if driving.is_file() else None,
            folder,
            frames=inputs.driving_frames,
            windows_section=args.windows_section,
        )
    except (ValueError, OSError, subprocess.SubprocessError) as exc:
        record.warnings.append(f"the seam report could not be made: {exc}")
        return
    record.warnings.extend(record.seams["warnings"])


def _wait(
    client: EndpointClient,
    record: JobRecord,
    args: argparse.Namespace,
    view: ProgressView,
    label: str,
    started: float,
    stop: threading.Event,
) -> dict[str, Any]:
    """Polls /status until the job ends, cancelling it past --timeout (or on Ctrl-C)."""
    assert record.id is not None
    interval = args.poll_initial_s
    failures = 0
    last: dict[str, Any] = {"id": record.id, "status": "UNKNOWN"}
    while True:
        try:
            last = client.status(record.id)
            failures = 0
        except (requests.RequestException, ValueError) as exc:
            failures += 1
            view.say(f"{label}: /status failed ({failures}/{MAX_POLL_FAILURES}): {exc}")
            if failures >= MAX_POLL_FAILURES:
                record.check("status_reachable", False, str(exc))
                return last
        elapsed = time.monotonic() - started
        if failures == 0:
            view.show(label, last, elapsed)
            if last.get("status") in TERMINAL:
                record.check("finished_within_timeout", True, f"{elapsed:.1f} s")
                return last
        if elapsed > args.timeout or stop.is_set():
            reason = "interrupted" if stop.is_set() else f"not finished after --timeout {args.timeout:g} s"
            record.check("finished_within_timeout", False, f"{reason}; cancelled")
            return _cancel(client, record, view, label, last)
        stop.wait(min(interval, max(0.05, args.timeout - elapsed)))
        interval = min(interval * 1.5, args.poll_max_s)


def _cancel(
    client: EndpointClient, record: JobRecord, view: ProgressView, label: str, last: dict[str, Any]
) -> dict[str, Any]:
    assert record.id is not None
    view.say(f"{label}: POST /cancel/{record.id}")
    try:
        reply = client.cancel(record.id)
        view.say(f"{label}: cancel -> {reply.get('status')}")
    except (requests.RequestException, ValueError) as exc:
        view.say(f"{label}: cancel failed: {exc}")
        return last
    deadline = time.monotonic() + CANCEL_GRACE_S
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, ValueError):
            last = client.status(record.id)
        if last.get("status") in TERMINAL:
            break
        time.sleep(0.5)
    return last


def _record_status(record: JobRecord, body: dict[str, Any]) -> None:
    record.status = str(body.get("status"))
    record.delay_ms = body.get("delayTime") if isinstance(body.get("delayTime"), int | float) else None
    record.execution_ms = (
        body.get("executionTime") if isinstance(body.get("executionTime"), int | float) else None
    )
    record.worker_id = body.get("workerId")
    if record.status != "COMPLETED" and body.get("error"):
        record.error_code, record.error, record.error_details = parse_error(body["error"])


def parse_error(error: Any) -> tuple[str | None, str, dict[str, Any] | None]:
    """(error_code, message, details) of a failed job's ``error``: the worker's JSON text
    ``{"error_code", "message", "details"}``; the SDK's for a raised exception
    (``error_type``, ``error_message``); or plain text (the platform's timeout)."""
    parsed = error
    if isinstance(error, str):
        try:
            parsed = json.loads(error)
        except ValueError:
            return None, error[:1000], None
    if isinstance(parsed, dict) and parsed.get("error_code"):
        details = parsed.get("details")
        return (
            str(parsed["error_code"]),
            str(parsed.get("message", ""))[:1000],
            details if isinstance(details, dict) else None,
        )
    if isinstance(parsed, dict) and parsed.get("error_message"):
        return None, f"{parsed.get('error_type', 'exception')}: {parsed['error_message']}"[:1000], None
    return None, str(error)[:1000], None


def _status_detail(record: JobRecord, elapsed_s: float) -> str:
    detail = f"{record.status} after {elapsed_s:.1f} s"
    if record.error_code:
        detail += f": {record.error_code}"
    if record.error:
        detail += f": {record.error[:300]}"
    return detail


# -- many jobs, the summary ------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summarize(records: list[JobRecord], cold_start_ms: float) -> dict[str, Any]:
    def spread(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": percentile(values, 50),
            "p90": percentile(values, 90),
            "max": max(values, default=None),
        }

    delays = [float(r.delay_ms) for r in records if r.delay_ms is not None]
    executions = [float(r.execution_ms) for r in records if r.execution_ms is not None]
    return {
        "jobs": len(records),
        "passed": sum(1 for r in records if r.passed),
        "statuses": {
            s: sum(1 for r in records if r.status == s) for s in sorted({str(r.status) for r in records})
        },
        "delayTime_ms": spread(delays),
        "executionTime_ms": spread(executions),
        "cold_starts": sum(1 for d in delays if d > cold_start_ms),
        "cold_start_threshold_ms": cold_start_ms,
        "workers": sorted({r.worker_id for r in records if r.worker_id}),
        "cost": summarize_cost(records),
    }


def summarize_cost(records: list[JobRecord]) -> dict[str, Any]:
    """The jobs' billed seconds and estimated cost as the worker reported them (``gpu_s``: each
    job's wall time on its worker), and the same prices applied to the platform's
    ``executionTime``. A total is null unless every job that reported a cost had a price
    (``unpriced`` says why not). Cold starts and idle time are billed too and are in neither."""
    costs = [(record.cost, record.execution_ms) for record in records if record.cost]
    priced = [(cost, ms) for cost, ms in costs if isinstance(cost.get("usd_per_s"), int | float)]
    unpriced = sorted({str(cost.get("reason")) for cost, _ in costs if cost.get("usd_per_s") is None})
    timed = [cost["usd_per_s"] * ms / 1000 for cost, ms in priced if isinstance(ms, int | float)]
    every_priced = bool(costs) and not unpriced
    return {
        "jobs": len(costs),
        "gpu_s": round(sum(float(cost.get("gpu_s") or 0) for cost, _ in costs), 3),
        "usd": round(sum(float(cost.get("usd") or 0) for cost, _ in priced), 6) if every_priced else None,
        "usd_by_execution_time": round(sum(timed), 6) if every_priced and len(timed) == len(costs) else None,
        "unpriced": unpriced,
    }


def _cost_line(cost: dict[str, Any], execution_ms: float | None) -> str:
    line = f"{cost.get('gpu_s')} GPU-s billed (the job's time on the worker)"
    if not isinstance(cost.get("usd_per_s"), int | float):
        return f"{line}; no price: {cost.get('reason')}"
    line += f" x ${cost['usd_per_s']}/s ({cost.get('gpu')}) = ${cost.get('usd')}"
    if isinstance(execution_ms, int | float):
        by_execution = cost["usd_per_s"] * execution_ms / 1000
        line += f"; by executionTime {execution_ms / 1000:.1f} s: ${by_execution:.6f}"
    return line


def print_seams(seams: dict[str, Any], out: TextIO) -> None:
    plan = seams["window_plan"]
    motion = seams["output_motion"]
    print(
        f"  window joins: {len(plan['joins'])} ({plan['windows']} windows of {plan['window_frames']} frames, "
        f"{plan['source']}); median frame-to-frame change: output {seams['output_median_change']} "
        f"({motion}), driving {seams['driving_median_change']}",
        file=out,
    )
    for join in seams["joins"]:
        ratio = "no motion" if join["output_ratio"] is None else f"{join['output_ratio']:.1f}x median"
        driving = "-" if join["driving_ratio"] is None else f"{join['driving_ratio']:.1f}x median"
        step = join["output_colour_step"] or [0.0, 0.0, 0.0]
        print(
            f"    join {join['join']} at frame {join['frame']}: output change {join['output_change']:.2f} "
            f"({ratio}), driving {driving}; mean colour step R {step[0]:+.1f} G {step[1]:+.1f} "
            f"B {step[2]:+.1f}" + ("  <- stands out" if join["stands_out"] else ""),
            file=out,
        )
    print(f"  pictures: {', '.join(seams['pictures'])}", file=out)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value / 1000:.2f} s"


def print_results(
    records: list[JobRecord], run_checks: list[Check], summary: dict[str, Any], out: TextIO
) -> list[str]:
    failed: list[str] = []
    for record in records:
        print(f"\nchecks of job {record.index} ({record.id or 'not submitted'}):", file=out)
        for check in record.checks:
            print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<24} {check.detail}", file=out)
            if not check.passed:
                failed.append(f"job {record.index}: {check.name}")
        if record.output_key:
            print(f"  output key: {record.output_key}", file=out)
        if record.seams:
            print_seams(record.seams, out)
        for warning in record.warnings:
            print(f"  WARNING  {warning}", file=out)
        if record.worker_timings_s:
            stages = ", ".join(f"{name} {value}" for name, value in record.worker_timings_s.items())
            print(f"  worker timings (s, as reported): {stages}", file=out)
        if record.cost:
            print(f"  cost (as reported): {_cost_line(record.cost, record.execution_ms)}", file=out)
    if run_checks:
        print("\nchecks of the run:", file=out)
        for check in run_checks:
            print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name:<24} {check.detail}", file=out)
            if not check.passed:
                failed.append(check.name)
    delay, execution = summary["delayTime_ms"], summary["executionTime_ms"]
    print(
        f"\ntimings over {summary['jobs']} job(s): "
        f"delayTime p50 {_ms(delay['p50'])} p90 {_ms(delay['p90'])} max {_ms(delay['max'])}; "
        f"executionTime p50 {_ms(execution['p50'])} p90 {_ms(execution['p90'])} max {_ms(execution['max'])}; "
        f"cold starts {summary['cold_starts']} (delayTime > {summary['cold_start_threshold_ms'] / 1000:g} s)",
        file=out,
    )
    cost = summary["cost"]
    if cost["jobs"]:
        usd = "unknown (" + "; ".join(cost["unpriced"]) + ")" if cost["usd"] is None else f"${cost['usd']}"
        print(f"cost over {cost['jobs']} job(s): {cost['gpu_s']} GPU-s billed, {usd}", file=out)
    total = sum(len(r.checks) for r in records) + len(run_checks)
    warnings = sum(len(r.warnings) for r in records)
    noted = f" ({warnings} warning{'s' if warnings != 1 else ''} to look at, above)" if warnings else ""
    if failed:
        print(
            f"SMOKE TEST FAILED: {len(failed)} of {total} checks failed: {', '.join(failed)}{noted}", file=out
        )
    else:
        print(f"SMOKE TEST PASSED: all {total} checks passed{noted}", file=out)
    out.flush()
    return failed


# -- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="smoke_test.py",
        description="Acceptance gate: real jobs through the queue API, results checked with ffprobe.",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--endpoint-id", help=f"RunPod endpoint ({RUNPOD_API_BASE}/ID); needs RUNPOD_API_KEY")
    target.add_argument("--api-url", help="base URL of a queue API, e.g. http://127.0.0.1:8000 (local)")
    parser.add_argument("--image-key", help="avatar image already in the bucket (default: generated)")
    parser.add_argument("--video-key", help="driving video already in the bucket (default: generated)")
    parser.add_argument("--input-prefix", default="smoke-inputs", help="where generated inputs are uploaded")
    parser.add_argument("--user-id", default="smoke-user")
    parser.add_argument("--avatar-id", default="smoke-avatar")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--output-prefix", default=env.get("OUTPUT_PREFIX", "").strip() or "outputs", help="the worker's"
    )
    parser.add_argument("--jobs", type=int, default=1, help="how many jobs (default 1)")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs in flight at once (default 1)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per job, from submission; then cancel")
    parser.add_argument("--poll-initial-s", type=float, default=0.5)
    parser.add_argument("--poll-max-s", type=float, default=5.0)
    parser.add_argument(
        "--cold-start-ms", type=float, default=10_000.0, help="delayTime counted as cold start"
    )
    parser.add_argument("--report", type=Path, help="write everything as JSON to this file")
    parser.add_argument(
        "--report-dir",
        type=Path,
        help="also write pictures of the window joins (contact_sheet.png, timeline.png) and seam scores "
        "here (needs Pillow); the JSON report defaults to DIR/report.json",
    )
    parser.add_argument(
        "--windows-bindings",
        type=Path,
        default=DEFAULT_BINDINGS,
        help="bindings file whose 'windows' section gives the window plan of the deployed workflow "
        "(default: the repository's wan22_animate_replace; 77-frame windows, 5 motion frames)",
    )
    parser.add_argument("--cleanup", action="store_true", help="remove the uploaded inputs and the outputs")
    parser.add_argument("--fixture-seconds", type=float, default=4.0, help="generated driving video length")
    parser.add_argument("--fixture-fps", type=float, default=30.0, help="generated driving video frame rate")
    parser.add_argument("--fixture-width", type=int, default=640)
    parser.add_argument("--fixture-height", type=int, default=480)
    parser.add_argument(
        "--fixture-no-audio", action="store_true", help="generate a driving video without audio"
    )
    parser.add_argument("--no-progress-bar", action="store_true", help="plain lines even on a terminal")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1:
        parser.error("--jobs and --concurrency must be at least 1")
    args.api_key = env.get("RUNPOD_API_KEY", "").strip() or None
    if args.endpoint_id:
        if not args.api_key:
            parser.error("--endpoint-id needs RUNPOD_API_KEY in the environment")
        args.api_url = f"{RUNPOD_API_BASE}/{args.endpoint_id}"
    try:
        args.output_prefix = normalize_prefix(args.output_prefix)
        # The key segments the worker makes of the ids (the worker's own rule, worker/contract.py).
        args.user_segment = key_segment(args.user_id, name="--user-id") if args.user_id.strip() else None
        args.avatar_segment = (
            key_segment(args.avatar_id, name="--avatar-id") if args.avatar_id.strip() else None
        )
    except ValueError as exc:  # IdError is a ValueError
        parser.error(str(exc))
    if args.report_dir is not None and args.report is None:
        args.report = args.report_dir / "report.json"
    args.windows_section = _windows_section(args.windows_bindings)
    return args


def _id_segment(value: str, name: str) -> str | None:
    """The key segment the worker makes of an id (None: absent, the worker's placeholder)."""
    return key_segment(value, name=name) if value.strip() else None


def _windows_section(path: Path | None) -> dict[str, Any] | None:
    """The bindings' ``windows`` section, or None (the default plan) when there is none."""
    try:
        section = json.loads(path.read_text()).get("windows") if path else None
    except (OSError, ValueError, AttributeError):
        return None
    return section if isinstance(section, dict) else None


def main(
    argv: list[str] | None = None, *, env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    args = parse_args(argv, env)
    for tool in ("ffprobe", "ffmpeg"):
        if shutil.which(tool) is None:
            print(f"smoke_test: {tool} is required (e.g. apt-get install ffmpeg)", file=sys.stderr)
            return EXIT_USAGE
    if args.report_dir is not None:
        try:
            import smoke_report  # noqa: F401  (Pillow, and the module beside this one)
        except ImportError as exc:
            print(
                f"smoke_test: --report-dir needs Pillow and smoke_report.py beside it ({exc})",
                file=sys.stderr,
            )
            return EXIT_USAGE
    work_dir = Path(tempfile.mkdtemp(prefix="smoke-test-"))
    bucket: Bucket | None = None
    inputs: Inputs | None = None
    records: list[JobRecord] = []
    try:
        bucket = Bucket.from_env(env)
        print(f"endpoint: {args.api_url}", file=out, flush=True)
        inputs = prepare_inputs(bucket, args, work_dir, out)
        stop = threading.Event()
        records = _run_all(args, inputs, bucket, out, work_dir, stop)
        run_checks = [_inputs_unchanged(bucket, inputs)]
        if stop.is_set():
            run_checks.append(
                Check("not_interrupted", False, "stopped by Ctrl-C; the jobs in flight were cancelled")
            )
        summary = summarize(records, args.cold_start_ms)
        failed = print_results(records, run_checks, summary, out)
        if args.report:
            _write_report(args, inputs, records, run_checks, summary, failed)
            print(f"report: {args.report}", file=out, flush=True)
        if stop.is_set():
            return EXIT_INTERRUPTED
        return EXIT_FAILED if failed else EXIT_PASSED
    except KeyboardInterrupt:
        print("smoke_test: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"smoke_test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (MinioException, urllib3.exceptions.HTTPError) as exc:
        print(f"smoke_test: MinIO at {env.get('MINIO_ENDPOINT')}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if args.cleanup and bucket is not None:
            keys = (inputs.uploaded if inputs else []) + [r.output_key for r in records if r.output_key]
            for key in keys:
                try:
                    bucket.client.remove_object(bucket.name, key)
                except S3Error as exc:
                    print(f"smoke_test: could not remove {key}: {exc.code}", file=sys.stderr)
        shutil.rmtree(work_dir, ignore_errors=True)


def _run_all(
    args: argparse.Namespace,
    inputs: Inputs,
    bucket: Bucket,
    out: TextIO,
    work_dir: Path,
    stop: threading.Event,
) -> list[JobRecord]:
    bar = args.concurrency == 1 and not args.no_progress_bar and out.isatty()
    view = ProgressView(out, bar=bar, lock=threading.Lock())
    with ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="smoke-job") as pool:
        futures = [
            pool.submit(run_job, index, args, inputs, bucket, view, stop, work_dir)
            for index in range(1, args.jobs + 1)
        ]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            view.say("interrupted: cancelling the jobs in flight")
            stop.set()
            for future in futures:
                future.cancel()
            return [future.result() for future in futures if not future.cancelled()]


def _inputs_unchanged(bucket: Bucket, inputs: Inputs) -> Check:
    changed = [key for key, etag in inputs.etags.items() if bucket.etag(key) != etag]
    return Check(
        "inputs_unchanged", not changed, f"changed: {', '.join(changed)}" if changed else "ETags equal"
    )


def _write_report(
    args: argparse.Namespace,
    inputs: Inputs,
    records: list[JobRecord],
    run_checks: list[Check],
    summary: dict[str, Any],
    failed: list[str],
) -> None:
    report = {
        "endpoint": args.api_url,
        "passed": not failed,
        "failed_checks": failed,
        "warnings": [f"job {record.index}: {warning}" for record in records for warning in record.warnings],
        "summary": summary,
        "inputs": asdict(inputs),
        "run_checks": [asdict(check) for check in run_checks],
        "jobs": [{**asdict(record), "passed": record.passed} for record in records],
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
