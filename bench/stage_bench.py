"""Stage benchmark of the worker on the local stack (moto S3 + the fake ComfyUI).

Runs whole jobs, each in a fresh worker process, for a 10-second and a 60-second driving
video (1920x1080, 30 fps, with audio: conformed to 1280x720/24 by the worker) and prints,
per stage, the median seconds and the worker process's peak memory. "inference" is the
fake ComfyUI writing a still video, not Wan: the numbers that matter here are everything
around it, which is the worker's own cost.

    make bench                     # or: .venv/bin/python -m bench.stage_bench --runs 3
    python -m bench.stage_bench --chunk-frames 288 --seconds 60 --runs 1   # the chunk path

``--chunk-frames N`` runs the chunked stand-in (``workflows/model_free_chunked.json``) with chunks
of N frames (288 = the pinned workflow's 4 windows after the first chunk): the worker's side of a
chunked job (slices, encodes while the next chunk runs, stream-copy join, chunks kept in MinIO).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minio import Minio

from localdev.media_fixtures import make_avatar_image, make_driving_video

REPO = Path(__file__).resolve().parent.parent
STAGES = ("download", "prepare", "queue", "inference", "postprocess", "upload", "total")
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="jobs per video (median reported)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--json", type=Path, help="also write the raw measurements here")
    parser.add_argument(
        "--chunk-frames", type=int, help="run the chunked stand-in with chunks of this many frames"
    )
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="stage-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        s3_port, comfy_port = free_port(), free_port()
        comfy_in, comfy_out = scratch / "comfy-in", scratch / "comfy-out"
        comfy_in.mkdir()
        comfy_out.mkdir()
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "localdev.fake_comfyui",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(comfy_port),
                    "--input-dir",
                    str(comfy_in),
                    "--output-dir",
                    str(comfy_out),
                ],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(s3_port)
        wait_for_port(comfy_port)

        workflow = "workflows/model_free_still.json"
        if args.chunk_frames:
            workflow = str(chunked_workflow(scratch, args.chunk_frames))
        client = Minio(f"127.0.0.1:{s3_port}", access_key="bench", secret_key="bench-secret", secure=False)
        client.make_bucket(BUCKET)
        avatar = make_avatar_image(scratch / "avatar.png", width=768, height=1024)
        client.fput_object(BUCKET, "inputs/avatar.png", str(avatar), content_type="image/png")
        videos = {}
        for seconds in args.seconds:
            progress(f"generating a {seconds:g}-second 1080p30 driving video")
            path = make_driving_video(
                scratch / f"drive-{seconds:g}s.mp4",
                seconds=seconds,
                fps=30,
                width=1920,
                height=1080,
                audio=True,
            )
            key = f"inputs/drive-{seconds:g}s.mp4"
            client.fput_object(BUCKET, key, str(path), content_type="video/mp4")
            videos[seconds] = key

        env = {
            **os.environ,
            "MINIO_ENDPOINT": f"127.0.0.1:{s3_port}",
            "MINIO_ACCESS_KEY": "bench",
            "MINIO_SECRET_KEY": "bench-secret",
            "MINIO_BUCKET": BUCKET,
            "MINIO_REGION": "us-east-1",
            "COMFY_URL": f"http://127.0.0.1:{comfy_port}",
            "COMFY_INPUT_DIR": str(comfy_in),
            "COMFY_OUTPUT_DIR": str(comfy_out),
            "WORKFLOW": workflow,
            "WORK_DIR": str(scratch / "work"),
            "MAX_VIDEO_DURATION_S": "600",
            "JOB_TIMEOUT_S": "3600",
        }
        rows = []
        for seconds, key in videos.items():
            runs = []
            for run in range(args.runs):
                job = {
                    "id": f"bench-{seconds:g}s-{run}",
                    "input": {"input_image_minio_path": "inputs/avatar.png", "driving_video_path": key},
                }
                progress(f"job {run + 1} of {args.runs} for the {seconds:g}-second video")
                started = time.monotonic()
                out = subprocess.run(
                    [sys.executable, "-m", "bench.run_job", json.dumps(job)],
                    cwd=REPO,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                lines = [line for line in out.stdout.splitlines() if line.startswith('{"result"')]
                if out.returncode != 0 or not lines:
                    print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
                    raise RuntimeError(f"benchmark job failed for the {seconds:g}-second video")
                measured = json.loads(lines[-1])
                if "error" in measured["result"]:
                    raise RuntimeError(f"job failed: {measured['result']}")
                runs.append(measured)
                progress(f"  done in {time.monotonic() - started:.1f} s")
            rows.append((seconds, runs))
        print_table(rows)
        if args.json:
            args.json.write_text(json.dumps([{"seconds": s, "runs": r} for s, r in rows], indent=2))
        return 0
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def progress(line: str) -> None:
    """What the benchmark is doing (stderr: the table on stdout stays clean)."""
    print(f"[stage_bench] {line}", file=sys.stderr, flush=True)


def chunked_workflow(folder: Path, chunk_frames: int) -> Path:
    """A copy of the chunked stand-in with ``chunk_frames`` frames per chunk."""
    source = REPO / "workflows" / "model_free_chunked.json"
    bindings = json.loads(source.with_suffix(".bindings.json").read_text())
    bindings["chunks"] = {"frames": chunk_frames}
    (folder / "chunked.json").write_text(source.read_text())
    (folder / "chunked.bindings.json").write_text(json.dumps(bindings))
    return folder / "chunked.json"


def print_table(rows: list[tuple[float, list[dict]]]) -> None:
    header = ["video", "frames", "chunks", *STAGES, "total-inference", "worker peak MB", "ffmpeg peak MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for seconds, runs in rows:
        timings = [run["result"]["timings_s"] for run in runs]
        medians = {stage: statistics.median(t[stage] for t in timings) for stage in STAGES}
        outside = statistics.median(t["total"] - t["inference"] for t in timings)
        cells = [
            f"{seconds:g} s 1080p30",
            str(runs[0]["result"]["video"]["frames"]),
            str(runs[0]["result"].get("chunks", {}).get("count", 1)),
            *(f"{medians[stage]:.2f}" for stage in STAGES),
            f"{outside:.2f}",
            f"{max(run['peak_rss_mb'] for run in runs):.0f}",
            f"{max(run['peak_child_rss_mb'] for run in runs):.0f}",
        ]
        print("| " + " | ".join(cells) + " |")
    print(
        f"\nmedian of {len(rows[0][1])} jobs per video; one worker process per job; 'inference' is the "
        "fake ComfyUI (model-free), not Wan."
    )


if __name__ == "__main__":
    sys.exit(main())
