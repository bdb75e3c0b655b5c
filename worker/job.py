"""One job, from MinIO keys to a validated MP4 in MinIO.

``JobRunner.run`` is blocking; the handler runs it in a thread so RunPod's cancel and
timeout reach it (through ``cancel``, which also stops a running ffmpeg). It runs one job at a
time: a cancelled job's thread holds the runner until it has let go of ComfyUI. Each stage is
timed; every failure is a ``WorkerError`` with a stable code; inputs are only read; the output
key is written once, by an atomic (multipart) upload of a file that already passed validation.
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from worker.attention import backend_in_use
from worker.chunk_media import check_chunk, cut_slice, encode_frames, join_chunks
from worker.chunk_store import MOTION_SUFFIX, ChunkStore, file_sha256, fingerprint
from worker.comfy_client import ComfyClient
from worker.comfy_leftovers import WORKER_FOLDER, ComfyLeftovers
from worker.config import Settings
from worker.contract import (
    META_AUDIO,
    META_FINGERPRINT,
    META_FRAMES,
    META_WORKFLOW,
    OUTPUT,
    IdError,
    JobResult,
    frames_for,
    output_key,
    sanitize_id,
)
from worker.cost import pricing_for
from worker.errors import ErrorCode, WorkerError, disk_full_error, is_disk_full
from worker.estimate import TimeModel, figures_for
from worker.graph.checks import load_checked_workflow
from worker.graph.chunks import Chunk
from worker.graph.workflow import WorkflowParams
from worker.logs import job_context, log_event
from worker.media import (
    DrivingVideo,
    VideoInfo,
    conform_driving_video,
    finalize_output,
    header_duration,
    prepare_avatar,
    validate_output,
)
from worker.onnx_providers import providers_in_use, start_refusal
from worker.progress import ProgressReporter, ProgressSink
from worker.request import JobRequest, parse_request
from worker.storage import Storage
from worker.urlfetch import fetch_url


@dataclass
class StageClock:
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.timings[stage] = round(self.timings.get(stage, 0.0) + time.monotonic() - start, 3)

    def report(self) -> dict[str, float]:
        stages = ("download", "prepare", "queue", "inference", "postprocess", "upload")
        result = {stage: self.timings.get(stage, 0.0) for stage in stages}
        result["total"] = round(time.monotonic() - self.started, 3)
        return result


class JobRunner:
    """Holds what lives across jobs (settings, clients, the loaded workflow)."""

    def __init__(self, settings: Settings, *, storage: Storage | None = None) -> None:
        self.settings = settings
        # A broken workflow, a bad WAN_* setting or a model file MODEL_VARIANT does not install stops the
        # worker here, not on the first job.
        self.checked_workflow = load_checked_workflow(
            settings.workflow,
            settings.workflow_overrides,
            model_variant=settings.model_variant,
            chunk_windows=settings.chunk_windows,
        )
        self.workflow = self.checked_workflow.workflow
        self.storage = storage or Storage(
            endpoint=settings.minio_endpoint,
            access_key=settings.minio_access_key,
            secret_key=settings.minio_secret_key,
            bucket=settings.minio_bucket,
            secure=settings.minio_use_ssl,
            region=settings.minio_region,
            public_endpoint=settings.minio_public_endpoint,
            public_secure=settings.minio_public_use_ssl,
            ca_certs=settings.ssl_cert_file,
        )
        self.comfy = ComfyClient(settings.comfy_url, input_dir=settings.comfy_input_dir)
        # A given-up prompt runs at most a job's length after the worker stopped waiting for it.
        self.leftovers = ComfyLeftovers(
            [settings.comfy_input_dir, settings.comfy_output_dir], watch_s=settings.job_timeout_s
        )
        self._one_job = threading.Lock()  # held until a job's thread returns, cancelled or not
        self._attention: dict[str, Any] | None = None
        self._onnx: dict[str, Any] | None = None
        self._check_onnx_at_start()
        device = self._gpu_device()
        self.time_model = self._time_model(device)
        self.pricing = pricing_for(device, settings.gpu_prices_per_s)
        log_event(
            "gpu_pricing",
            device=device,
            gpu=self.pricing.pool,
            usd_per_s=self.pricing.usd_per_s,
            source=self.pricing.source,
            reason=self.pricing.reason,
            level="info" if self.pricing.usd_per_s is not None else "warning",
        )

    def _check_onnx_at_start(self) -> None:
        """On a GPU machine pose detection must get ONNX Runtime's CUDA provider: stop otherwise."""
        report = self.onnx_providers()
        refusal = start_refusal(report)
        if refusal is not None:
            raise WorkerError(ErrorCode.CONFIG_INVALID, refusal, details={"onnx_providers": report})
        if report is None:
            log_event("onnx_providers_unknown", level="warning", comfy_url=self.settings.comfy_url)
        else:
            log_event(
                "onnx_providers",
                gpu=report["gpu"],
                cuda_session_ok=report["cuda_session_ok"],
                available=report["available_providers"],
                reason=report["reason"],
            )

    def onnx_providers(self) -> dict[str, Any] | None:
        """ComfyUI's ONNX Runtime report, read again each time (it lists the sessions the pose
        loader created); the last one known when ComfyUI does not answer."""
        report = providers_in_use(self.settings.comfy_url)
        if report is not None:
            self._onnx = report
        return self._onnx

    def _gpu_device(self) -> str | None:
        """The name ComfyUI gives its device (``/system_stats``), None when it does not answer."""
        try:
            devices = self.comfy.system_stats().get("devices") or [{}]
            return str(devices[0].get("name") or "") or None
        except WorkerError:
            return None

    def _time_model(self, device: str | None) -> TimeModel:
        """The job time model for the GPU ComfyUI runs on, with the workflow's windows and steps."""
        figures = figures_for(device)
        overrides = {
            "sampler_step_s": self.settings.estimate_sampler_step_s,
            "preprocess_frame_s": self.settings.estimate_preprocess_frame_s,
        }
        figures = replace(figures, **{k: v for k, v in overrides.items() if v is not None})
        chunks = None
        if self.workflow.windows is not None:

            def chunks(frames: int) -> list[Chunk]:
                return self.workflow.chunks(frames, chunk_windows=self.settings.chunk_windows)

        model = TimeModel(figures=figures, steps=int(self.workflow.settings.get("steps", 6)), chunks=chunks)
        longest = model.longest_fitting(self.settings.job_timeout_s)
        log_event(
            "time_model",
            gpu=figures.name,
            measured=figures.measured,
            device=device,
            sampler_step_s=figures.sampler_step_s,
            preprocess_frame_s=figures.preprocess_frame_s,
            longest_video_s=round(longest / OUTPUT.fps, 1),
            job_timeout_s=self.settings.job_timeout_s,
            level="info" if figures.measured else "warning",
        )
        return model

    def attention_backend(self) -> dict[str, Any] | None:
        """What ComfyUI's attention node says it runs with (fixed for the process's life);
        None when ComfyUI does not say (no node installed, e.g. the fake ComfyUI)."""
        if self._attention is None:
            self._attention = backend_in_use(self.settings.comfy_url)
        return self._attention

    def run(
        self,
        job_id: str,
        raw_input: Any,
        progress_sink: ProgressSink,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """The job's result dict, or an error dict with a stable ``error_code``."""
        cancel = cancel or threading.Event()
        with job_context(job_id):
            if not self._one_job.acquire(blocking=False):
                # A cancelled job's thread is still letting go of ComfyUI (or of its ffmpeg).
                log_event("job_waiting_for_previous", job_id)
                self._one_job.acquire()
            try:
                self.leftovers.sweep(before=time.time())  # no job runs: whatever is there is left over
                return self._run(job_id, raw_input, progress_sink, cancel)
            finally:
                self.leftovers.sweep(before=time.time())
                self._one_job.release()

    def _run(
        self, job_id: str, raw_input: Any, progress_sink: ProgressSink, cancel: threading.Event
    ) -> dict[str, Any]:
        log_event("job_started", job_id, workflow=self.workflow.name)
        progress = ProgressReporter(progress_sink, job_id, self.settings.progress_interval_s)
        try:
            try:
                result = _Job(self, job_id, raw_input, progress, cancel).run()
            except Exception as exc:
                if is_disk_full(exc) and getattr(exc, "code", None) is not ErrorCode.WORKER_DISK_FULL:
                    raise disk_full_error("writing the job's files") from exc  # whoever reported it
                raise
        except WorkerError as exc:
            log_event(
                "job_failed",
                job_id,
                level="error",
                error_code=exc.code.value,
                error=exc.message,
                details=exc.details,
                refresh_worker=exc.refresh_worker,
            )
            return exc.to_result()
        except Exception as exc:
            log_event("job_crashed", job_id, level="error", error=repr(exc), traceback=traceback.format_exc())
            return WorkerError(
                ErrorCode.INTERNAL_ERROR,
                f"internal error ({type(exc).__name__}): {exc}",
                refresh_worker=True,
            ).to_result()
        finally:
            progress.close()  # an update held back by the throttle must not follow the result
        log_event(
            "job_succeeded",
            job_id,
            minio_key=result["minio_key"],
            reused=result["reused"],
            timings_s=result["timings_s"],
        )
        return result


@dataclass(frozen=True)
class _PromptOutput:
    files: list[Path]  # the output node's files, downloaded, in the order it reported them
    report: dict[str, Any]  # the output node's history entry

    @property
    def motion(self) -> Path | None:
        """The frames the next chunk continues from (``WanWorkerSaveChunk``), when saved."""
        return next((f for f in self.files[1:] if f.name.endswith(MOTION_SUFFIX)), None)

    def chunk_report(self) -> dict[str, Any]:
        entries = self.report.get("wan_chunk") or [{}]
        return entries[0] if isinstance(entries[0], dict) else {}


class _Job:
    def __init__(
        self,
        runner: JobRunner,
        job_id: str,
        raw_input: Any,
        progress: ProgressReporter,
        cancel: threading.Event,
    ) -> None:
        self.runner = runner
        self.settings = runner.settings
        self.job_id = job_id
        self.raw_input = raw_input
        self.progress = progress
        self.cancel = cancel
        self.clock = StageClock()
        self.deadline = time.monotonic() + self.settings.job_timeout_s
        self.chunk_store: ChunkStore | None = None  # a chunked job's finished chunks in MinIO
        self.chunks = {"count": 1, "resumed": 0}  # reported in the result

    def run(self) -> JobResult:
        request = parse_request(
            self.raw_input, default_driving_video=self.settings.default_driving_video_path
        )
        try:
            key = output_key(self.settings.output_prefix, self.job_id, request.user_id, request.avatar_id)
        except IdError as exc:
            raise WorkerError(ErrorCode.INVALID_INPUT, str(exc)) from exc
        seed = (
            request.seed if request.seed is not None else int(self.runner.workflow.defaults.get("seed", 42))
        )

        work_dir = self.settings.work_dir / f"{sanitize_id(self.job_id)}-{uuid.uuid4().hex[:8]}"
        work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._refuse_if_too_long(self._frames_from_header(request), exact=False)
            avatar_src, video_src = self._download(request, work_dir)
            job_fingerprint = self._fingerprint(request, seed, avatar_src, video_src)
            reused = self._existing_output(key, work_dir, job_fingerprint)
            if reused is not None:
                return self._result(request, key, reused, seed, reused=True)
            avatar_path, driving = self._prepare(avatar_src, video_src, work_dir, framing=request.framing)
            self._refuse_if_too_long(driving.frames, exact=True)
            raw_output = self._generate(request, avatar_path, driving, seed, work_dir, job_fingerprint)
            video = self._postprocess(raw_output, driving, work_dir / "final.mp4")
            self._upload(work_dir / "final.mp4", key, driving, job_fingerprint)
            if self.chunk_store is not None:
                self.chunk_store.clear()
            return self._result(request, key, video, seed, reused=False)
        except Exception:
            # A job that fails here is over (RunPod delivers again only a job whose worker died,
            # and then this code never runs): its kept chunks would never be used.
            self._discard_chunks()
            raise
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _discard_chunks(self) -> None:
        if self.chunk_store is None:
            return
        try:
            self.chunk_store.clear()
        except WorkerError as exc:
            log_event("chunks_not_discarded", self.job_id, level="warning", error=exc.message)

    # -- steps -------------------------------------------------------------------------

    def _existing_output(self, key: str, work_dir: Path, job_fingerprint: str) -> VideoInfo | None:
        """RunPod may deliver a job twice: a valid output of this job id made from this very
        request (its fingerprint) is returned as is. Anything else at the key is replaced by the
        new output's upload (one atomic PUT or multipart completion)."""
        info = self.runner.storage.stat(key)
        if info is None:
            return None
        metadata = info.metadata
        if metadata.get(META_FINGERPRINT) != job_fingerprint or META_FRAMES not in metadata:
            log_event("existing_output_ignored", self.job_id, minio_key=key, reason="another request")
            return None
        copy = work_dir / "existing.mp4"
        with self.clock.measure("download"):
            self.runner.storage.download(
                key,
                copy,
                max_bytes=max(info.size, 1),
                field="output",
                deadline=self.deadline,
                cancel=self.cancel,
            )
        try:
            video = validate_output(
                copy,
                frames=int(metadata[META_FRAMES]),
                has_audio=metadata.get(META_AUDIO) == "1",
                width=OUTPUT.width,
                height=OUTPUT.height,
                fps=OUTPUT.fps,
            )
        except (WorkerError, ValueError) as exc:
            log_event("existing_output_ignored", self.job_id, minio_key=key, reason=str(exc))
            return None
        log_event("existing_output_reused", self.job_id, minio_key=key)
        return video

    def _fingerprint(self, request: JobRequest, seed: int, avatar_src: Path, video_src: Path) -> str:
        """What decides the job's frames: kept chunks and an existing output of the job id are
        reused only under the same one. The inputs count by their bytes, whatever their keys."""
        return fingerprint(
            {
                "workflow": self.runner.workflow.sha256,
                "avatar": file_sha256(avatar_src),
                "driving_video": file_sha256(video_src),
                "seed": seed,
                "prompt": request.prompt,
                "negative_prompt": request.negative_prompt,
                "framing": request.framing,
                "chunk_windows": self.settings.chunk_windows,
                "output": [OUTPUT.width, OUTPUT.height, OUTPUT.fps],
            }
        )

    def _download(self, request: JobRequest, work_dir: Path) -> tuple[Path, Path]:
        self.progress.stage("download")
        storage = self.runner.storage
        avatar_src = work_dir / "avatar.src"
        video_src = work_dir / "driving.src"
        with self.clock.measure("download"):
            if request.image_key is not None:
                storage.download(
                    request.image_key,
                    avatar_src,
                    max_bytes=self.settings.max_image_bytes,
                    field="input_image_minio_path",
                    deadline=self.deadline,
                    cancel=self.cancel,
                )
            else:
                assert request.image_url is not None
                fetch_url(
                    request.image_url,
                    avatar_src,
                    max_bytes=self.settings.max_image_bytes,
                    allow_private=self.settings.allow_private_urls,
                    deadline=self.deadline,
                    cancel=self.cancel,
                )
            self._check_time()
            storage.download(
                request.driving_video_key,
                video_src,
                max_bytes=self.settings.max_video_bytes,
                field="driving_video_path",
                deadline=self.deadline,
                cancel=self.cancel,
            )
        self._check_time()
        return avatar_src, video_src

    def _prepare(
        self, avatar_src: Path, video_src: Path, work_dir: Path, *, framing: str
    ) -> tuple[Path, DrivingVideo]:
        self.progress.stage("prepare")

        def converted(done: int, frames: int) -> None:
            message = f"converting the driving video: frame {done} of {frames}"
            self.progress.stage("prepare", done / frames, message=message)

        with self.clock.measure("prepare"):
            avatar = prepare_avatar(
                avatar_src, work_dir / "avatar.png", max_pixels=self.settings.max_image_pixels
            )
            driving = conform_driving_video(
                video_src,
                work_dir / "driving.mp4",
                width=OUTPUT.width,
                height=OUTPUT.height,
                fps=OUTPUT.fps,
                max_duration_s=self.settings.max_video_duration_s,
                framing=framing,
                cancel=self.cancel,
                on_progress=converted,
            )
        log_event(
            "inputs_prepared",
            self.job_id,
            avatar=f"{avatar.width}x{avatar.height} {avatar.source_format}",
            driving_source=f"{driving.source.width}x{driving.source.height}@{driving.source.fps}",
            frames=driving.frames,
            has_audio=driving.has_audio,
        )
        self._check_time()
        return avatar.path, driving

    def _generate(
        self,
        request: JobRequest,
        avatar_path: Path,
        driving: DrivingVideo,
        seed: int,
        work_dir: Path,
        job_fingerprint: str,
    ) -> Path:
        """The generated video (not yet cut or with audio): one prompt, or one per chunk with
        each chunk's encode running while the next chunk's prompt does (``worker.graph.chunks``)."""
        runner = self.runner
        chunks = runner.workflow.chunks(driving.frames, chunk_windows=self.settings.chunk_windows)
        generated = work_dir / "generated.mp4"
        if len(chunks) == 1 and runner.workflow.output_kind == "video":
            output = self._run_prompt(request, avatar_path, driving.path, seed, chunks[0], None, driving)
            output.files[0].replace(generated)
            return generated
        store = None
        if len(chunks) > 1:
            store = ChunkStore(
                runner.storage,
                self.settings.scratch_prefix,
                self.job_id,
                job_fingerprint,
                deadline=self.deadline,
                cancel=self.cancel,
            )
            self.chunk_store = store
        parts = [work_dir / f"chunk-{chunk.index:04d}.mp4" for chunk in chunks]
        done = self._resumed_chunks(store, chunks, parts) if store is not None else 0
        self.chunks = {"count": len(chunks), "resumed": done}
        log_event(
            "chunks_planned",
            self.job_id,
            chunks=len(chunks),
            windows=[len(c.windows) for c in chunks],
            frames=[c.frames for c in chunks],
            resumed=done,
        )
        motion: Path | None = None
        if store is not None and done < len(chunks) and chunks[done].continues:
            motion = work_dir / f"chunk-{done:04d}{MOTION_SUFFIX}"
            store.fetch_motion(chunks[done - 1], motion)
        todo = chunks[done:]
        # One thread does the chunks' media work while ComfyUI runs a chunk: the next chunk's
        # driving slice, then the previous chunk's encode and its upload to MinIO.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-media") as media:
            slices: dict[int, Future[Path]] = {}
            finishing: Future[None] | None = None
            try:
                for position, chunk in enumerate(todo):
                    for ahead in todo[position : position + 2]:
                        if store is not None and ahead.index not in slices:
                            slices[ahead.index] = media.submit(self._cut_slice, ahead, driving, work_dir)
                    driving_input = driving.path
                    if store is not None:
                        with self.clock.measure("prepare"):  # waiting for the slice, if at all
                            driving_input = slices.pop(chunk.index).result()
                    output = self._run_prompt(
                        request, avatar_path, driving_input, seed, chunk, motion, driving
                    )
                    if store is not None:
                        driving_input.unlink(missing_ok=True)
                    if finishing is not None:
                        with self.clock.measure("postprocess"):  # waiting for the previous encode
                            finishing.result()  # one chunk's media at a time; a failure stops the job
                    if motion is not None:
                        motion.unlink()  # this chunk's prompt used it; the previous chunk's finish kept it
                    motion = output.motion
                    finishing = media.submit(self._finish_chunk, chunk, output, parts[chunk.index - 1], store)
                if finishing is not None:
                    with self.clock.measure("postprocess"):
                        finishing.result()
            except BaseException:
                for future in [finishing, *slices.values()]:
                    if future is not None:
                        future.cancel()
                raise
        with self.clock.measure("postprocess"):
            join_chunks(parts, generated, fps=OUTPUT.fps, cancel=self.cancel)
        return generated

    def _resumed_chunks(self, store: ChunkStore, chunks: list[Chunk], parts: list[Path]) -> int:
        """Chunks an earlier delivery of this job finished, fetched and checked; 0 when none."""
        done = store.finished(chunks)
        for chunk in chunks[:done]:
            try:
                with self.clock.measure("download"):
                    store.fetch_video(chunk, parts[chunk.index - 1], width=OUTPUT.width, height=OUTPUT.height)
            except WorkerError as exc:
                if exc.code is ErrorCode.TIMEOUT:  # the job's time is up: nothing left to regenerate with
                    raise
                log_event("chunk_not_reused", self.job_id, chunk=chunk.index, reason=exc.message)
                return chunk.index - 1
        if done:
            log_event("job_resumed", self.job_id, from_chunk=done + 1, chunks=len(chunks))
        return done

    def _cut_slice(self, chunk: Chunk, driving: DrivingVideo, work_dir: Path) -> Path:
        """A chunk's driving frames (in the media thread, while ComfyUI runs the chunk before)."""
        path = work_dir / f"driving-{chunk.index:04d}.mp4"
        cut_slice(
            driving.path,
            path,
            start=chunk.start,
            real_frames=chunk.real_frames,
            reflected=chunk.reflected,
            total_frames=driving.frames,
            fps=OUTPUT.fps,
            cancel=self.cancel,
        )
        return path

    def _run_prompt(
        self,
        request: JobRequest,
        avatar_path: Path,
        driving_input: Path,
        seed: int,
        chunk: Chunk,
        motion: Path | None,
        driving: DrivingVideo,
    ) -> _PromptOutput:
        """One prompt (the whole clip, or one chunk): its files, downloaded; ComfyUI's copies removed."""
        comfy = self.runner.comfy
        workflow = self.runner.workflow
        chunked = chunk.count > 1
        # A fresh prefix per attempt: ComfyUI caches node outputs across prompts, and a
        # re-delivered job must not be answered with a file an earlier attempt removed.
        prefix = f"{WORKER_FOLDER}/{sanitize_id(self.job_id)}-{uuid.uuid4().hex[:8]}"
        inputs: list[str] = []
        run = None
        work_dir = driving.path.parent
        if chunk.index == 1:
            self.progress.stage("queue")
        try:
            with self.clock.measure("queue"):
                inputs.append(comfy.put_input(avatar_path, f"{prefix}/avatar.png"))
                inputs.append(comfy.put_input(driving_input, f"{prefix}/driving.mp4"))
                motion_name = None
                if chunk.continues:
                    assert motion is not None
                    motion_name = comfy.put_input(motion, f"{prefix}/motion.safetensors")
                    inputs.append(motion_name)
            params = WorkflowParams(
                image=inputs[0],
                driving_video=inputs[1],
                frames=chunk.frames,
                filename_prefix=prefix,
                seed=seed,
                prompt=request.prompt
                if request.prompt is not None
                else str(workflow.defaults.get("prompt", "")),
                negative_prompt=(
                    request.negative_prompt
                    if request.negative_prompt is not None
                    else str(workflow.defaults.get("negative_prompt", ""))
                ),
                width=OUTPUT.width,
                height=OUTPUT.height,
                fps=float(OUTPUT.fps),
            )
            graph = self.runner.checked_workflow.graph(
                params,
                chunk=chunk if chunked else None,
                clip_frames=driving.frames,
                driving_frames=chunk.slice_frames if chunked else driving.frames,
                motion_file=motion_name,
            )
            self.progress.set_graph(
                graph,
                chunk=(chunk.index, chunk.count) if chunked else None,
                window_offset=max(0, chunk.first_window - 1),
                clip_windows=len(workflow.window_plan(driving.frames)) or None,
            )
            if chunked:
                log_event("chunk_started", self.job_id, **chunk.as_dict())
            run = comfy.run(
                graph,
                output_node=workflow.output_node,
                deadline=self.deadline,
                on_progress=self.progress.comfy,
                cancel=self.cancel,
            )
            self.clock.timings["queue"] = round(self.clock.timings.get("queue", 0.0) + run.queue_s, 3)
            self.clock.timings["inference"] = round(
                self.clock.timings.get("inference", 0.0) + run.inference_s, 3
            )
            files = []
            with self.clock.measure("postprocess"):
                for number, output in enumerate(run.files or (run.output,)):
                    suffix = "".join(Path(output.filename).suffixes[-2:]) or ".bin"
                    local = work_dir / f"chunk-{chunk.index:04d}-out{number}{suffix}"
                    comfy.take_output(output, local, self.settings.comfy_output_dir)
                    files.append(local)
            log_event(
                "generation_done",
                self.job_id,
                prompt_id=run.prompt_id,
                frames=chunk.frames,
                chunk=chunk.index,
            )
            return _PromptOutput(files=files, report=run.report)
        except BaseException:
            # Cancelled, out of time or cut off: ComfyUI may still finish the prompt and write its files.
            self.runner.leftovers.give_up(prefix)
            raise
        finally:
            comfy.remove_inputs(inputs)
            if run is not None:
                for output in run.files or (run.output,):
                    comfy.remove_output(output, self.settings.comfy_output_dir)

    def _finish_chunk(
        self, chunk: Chunk, output: _PromptOutput, part: Path, store: ChunkStore | None
    ) -> None:
        """In the encode thread: the chunk's raw frames to its MP4, kept in MinIO when chunked."""
        frames_file, motion, meta = output.files[0], output.motion, output.chunk_report()
        try:
            encode_frames(
                frames_file,
                part,
                width=int(meta.get("width", OUTPUT.width)),
                height=int(meta.get("height", OUTPUT.height)),
                frames=int(meta.get("frames", chunk.frames)),
                fps=OUTPUT.fps,
                cancel=self.cancel,
            )
            check_chunk(part, frames=chunk.frames, width=OUTPUT.width, height=OUTPUT.height)
            if store is not None:
                store.save(chunk, part, motion if not chunk.last else None)
        finally:
            frames_file.unlink(missing_ok=True)
        log_event("chunk_finished", self.job_id, chunk=chunk.index, chunks=chunk.count, frames=chunk.frames)

    def _postprocess(self, raw_output: Path, driving: DrivingVideo, dest: Path) -> VideoInfo:
        self.progress.stage("postprocess")
        with self.clock.measure("postprocess"):
            return finalize_output(raw_output, driving, dest, cancel=self.cancel)

    def _upload(self, path: Path, key: str, driving: DrivingVideo, job_fingerprint: str) -> None:
        self._check_time()
        self.progress.stage("upload")
        with self.clock.measure("upload"):
            self.runner.storage.upload(
                path,
                key,
                content_type=OUTPUT.content_type,
                metadata={
                    META_FRAMES: str(driving.frames),
                    META_AUDIO: "1" if driving.has_audio else "0",
                    META_WORKFLOW: self.runner.workflow.sha256,
                    META_FINGERPRINT: job_fingerprint,
                },
            )

    def _result(
        self, request: JobRequest, key: str, video: VideoInfo, seed: int, *, reused: bool
    ) -> JobResult:
        timings = self.clock.report()
        result: JobResult = {
            "minio_key": key,
            "video": {
                "width": video.width,
                "height": video.height,
                "fps": float(video.fps),
                "frames": video.frames,
                "duration_s": round(video.duration_s, 3),
                "has_audio": video.has_audio,
                "size_bytes": video.size_bytes,
            },
            "timings_s": timings,
            "cost": self.runner.pricing.job_cost(timings["total"]),
            "estimate_s": self.runner.time_model.estimate(video.frames).as_dict(),
            "workflow": {"name": self.runner.workflow.name, "sha256": self.runner.workflow.sha256},
            "seed": seed,
            "reused": reused,
            "chunks": self.chunks,
            "attention_backend": self.runner.attention_backend(),
            "onnx_providers": self.runner.onnx_providers(),
        }
        if request.return_presigned_url:
            result["presigned_url"] = self.runner.storage.presigned_get(
                key, self.settings.presigned_url_expiry_s
            )
        return result

    def _frames_from_header(self, request: JobRequest) -> int | None:
        """N from the driving video's header, read through a presigned URL before any download."""
        storage = self.runner.storage
        if storage.stat(request.driving_video_key) is None:
            return None  # the download says so, with the right code
        duration = header_duration(storage.internal_get_url(request.driving_video_key))
        if duration is None:
            log_event("duration_unknown_before_download", self.job_id, key=request.driving_video_key)
            return None
        return frames_for(duration)

    def _refuse_if_too_long(self, frames: int | None, *, exact: bool) -> None:
        """INPUT_TOO_LARGE, at once, for a job the time model says cannot end within JOB_TIMEOUT_S."""
        if frames is None:
            return
        model, budget = self.runner.time_model, self.settings.job_timeout_s
        estimate = model.estimate(frames)
        log_event("job_estimated", self.job_id, exact=exact, **estimate.as_dict())
        if estimate.total_s <= budget:
            return
        longest = model.longest_fitting(budget)
        raise WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"the driving video is {frames / OUTPUT.fps:.1f} s ({frames} frames, "
            f"{estimate.windows} windows): it needs about {estimate.total_s:.0f} s on this worker "
            f"({estimate.gpu}), more than "
            f"JOB_TIMEOUT_S={budget:g} s. The longest video that fits is {longest / OUTPUT.fps:.1f} s: "
            "trim it (or raise JOB_TIMEOUT_S together with the endpoint's execution timeout)",
            details={
                "estimate_s": estimate.as_dict(),
                "job_timeout_s": budget,
                "max_frames": longest,
                "max_duration_s": round(longest / OUTPUT.fps, 2),
            },
        )

    def _check_time(self) -> None:
        if self.cancel.is_set():
            raise WorkerError(ErrorCode.CANCELLED, "the job was cancelled")
        if time.monotonic() > self.deadline:
            raise WorkerError(
                ErrorCode.TIMEOUT,
                f"the job exceeded JOB_TIMEOUT_S={self.settings.job_timeout_s:g} s",
                details={"job_timeout_s": self.settings.job_timeout_s},
            )
