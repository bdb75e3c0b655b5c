"""``make demo``: the product's main job end to end on this machine, then the acceptance gate.

Starts, each in its own process group:
  1. an S3-compatible server: a moto server on 127.0.0.1 (or, when ``MINIO_ENDPOINT`` is
     set, that MinIO with ``MINIO_ACCESS_KEY``/``MINIO_SECRET_KEY``/``MINIO_BUCKET``);
  2. a ComfyUI: the project's MODEL-FREE STAND-IN (``localdev/fake_comfyui/`` running
     ``workflows/model_free_chunked.json``), or the real one at ``COMFY_URL`` when set;
  3. the worker (``handler.handler``) behind the local queue API (``localdev/queue_api.py``);
then runs ``smoke_test.py`` against it with generated inputs, prints the output key, the
checks and the timings, saves the output video, the JSON report and pictures of the output
(``contact_sheet.png``, ``timeline.png``: ``smoke_test.py --report-dir``) under ``.work/demo/``, and stops
everything it started, also on Ctrl-C or failure. The exit code is the smoke test's
(130 when interrupted, 1 when a service did not start).

    python -m localdev.demo [--fixture-seconds 7] [--keep-logs]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import requests
from minio import Minio
from minio.error import S3Error

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_FREE_WORKFLOW = REPO_ROOT / "workflows" / "model_free_chunked.json"
DEMO_DIR = REPO_ROOT / ".work" / "demo"  # what the demo leaves to look at: the output and the report
OUTPUT_COPY, REPORT_PATH = DEMO_DIR / "output.mp4", DEMO_DIR / "smoke-report.json"
MOTO_ACCESS_KEY, MOTO_SECRET_KEY, DEMO_BUCKET = "demo-access-key", "demo-secret-key", "wan-demo"
EXECUTION_TIMEOUT_S = 1200  # the deployment plan's endpoint execution timeout
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
SMOKE_CANCEL_GRACE_S = 45.0
EXIT_SERVICE_FAILED, EXIT_INTERRUPTED = 1, 130

STAND_IN_NOTICE = """\
ComfyUI: MODEL-FREE STAND-IN (localdev/fake_comfyui/) -- this is NOT Wan2.2 Animate.
         It speaks ComfyUI 0.33.0's API and runs workflows/model_free_chunked.json with ffmpeg:
         the output is the driving video with the avatar inset, made in chunks of one second
         (one prompt each, as the real workflow makes a long video), with the driving audio.
         Everything else (queue API, worker, chunk encode and join, MinIO, checks) is the real
         code path.
         Set COMFY_URL to a real ComfyUI (GPU, models installed) to run the real workflow."""


class DemoError(Exception):
    """A service did not start; the message says which and shows its log."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"    | {line}" for line in text[-lines:])


class Services:
    """Processes this demo started; ``stop_all`` ends each one's whole process group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Service] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> Service:
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C is ours to handle, and killpg reaches its children.
                start_new_session=True,
            )
        service = Service(name, process, log_path)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.started):
            stop_process_group(service.process)
        self.started.clear()


def stop_process_group(process: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the process group, SIGKILL after ``grace_s``."""
    if process.poll() is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # children it may have left behind
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_answering(url: str, service: Service | None, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until ``url`` answers (any status below 500); fails early when ``service`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service is not None and service.process.poll() is not None:
            code = service.process.returncode
            raise DemoError(f"{service.name} exited with code {code}; its log:\n{service.log_tail()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    log = f"; its log:\n{service.log_tail()}" if service is not None else ""
    raise DemoError(f"{url} did not answer within {timeout_s:g} s{log}")


def say(line: str = "") -> None:
    print(line, flush=True)


# -- the three services ---------------------------------------------------------------------------


def start_s3(services: Services, env: dict[str, str]) -> dict[str, str]:
    """The MINIO_* variables of the S3 server the demo uses (started here unless given)."""
    if os.environ.get("MINIO_ENDPOINT", "").strip():
        minio_env = {
            name: os.environ.get(name, "")
            for name in (
                "MINIO_ENDPOINT",
                "MINIO_ACCESS_KEY",
                "MINIO_SECRET_KEY",
                "MINIO_USE_SSL",
                "MINIO_REGION",
            )
        }
        minio_env["MINIO_BUCKET"] = os.environ.get("MINIO_BUCKET", "").strip() or DEMO_BUCKET
        endpoint, bucket = minio_env["MINIO_ENDPOINT"], minio_env["MINIO_BUCKET"]
        say(f"S3:      your MinIO at {endpoint} (MINIO_ENDPOINT), bucket {bucket}")
    else:
        port = free_port()
        service = services.start(
            "s3-moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env
        )
        wait_until_answering(f"http://127.0.0.1:{port}/moto-api/", service)
        minio_env = {
            "MINIO_ENDPOINT": f"127.0.0.1:{port}",
            "MINIO_ACCESS_KEY": MOTO_ACCESS_KEY,
            "MINIO_SECRET_KEY": MOTO_SECRET_KEY,
            "MINIO_BUCKET": DEMO_BUCKET,
            "MINIO_USE_SSL": "0",
            "MINIO_REGION": "us-east-1",
        }
        say(f"S3:      moto server (in-memory S3) at http://127.0.0.1:{port}, bucket {DEMO_BUCKET}")
    ensure_bucket(minio_env)
    return minio_env


def minio_client(minio_env: dict[str, str]) -> Minio:
    endpoint = minio_env["MINIO_ENDPOINT"].strip()
    if "://" in endpoint:
        endpoint = endpoint.split("://", 1)[1].split("/", 1)[0]
    return Minio(
        endpoint,
        access_key=minio_env["MINIO_ACCESS_KEY"],
        secret_key=minio_env["MINIO_SECRET_KEY"],
        secure=minio_env.get("MINIO_USE_SSL", "").strip().lower() in ("1", "true", "yes", "on"),
        region=minio_env.get("MINIO_REGION") or None,
    )


def ensure_bucket(minio_env: dict[str, str]) -> None:
    client, bucket = minio_client(minio_env), minio_env["MINIO_BUCKET"]
    try:
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
            say(f"         created bucket {bucket}")
    except S3Error as exc:
        raise DemoError(f"the S3 server refused bucket {bucket!r}: {exc.code}: {exc.message}") from None


def start_comfy(services: Services, env: dict[str, str], work_dir: Path) -> tuple[dict[str, str], bool]:
    """The COMFY_*/WORKFLOW variables of the worker, and whether the stand-in is used."""
    comfy_url = os.environ.get("COMFY_URL", "").strip()
    if comfy_url:
        comfy_env = {
            name: os.environ[name]
            for name in ("COMFY_URL", "COMFY_INPUT_DIR", "COMFY_OUTPUT_DIR", "WORKFLOW")
            if os.environ.get(name, "").strip()
        }
        version, device = describe_comfy(comfy_url)
        workflow = comfy_env.get("WORKFLOW", "the default (WORKFLOW unset)")
        say(f"ComfyUI: your ComfyUI {version} at {comfy_url} (COMFY_URL) on {device}, workflow {workflow}")
        stand_in = version.endswith("-fake")
        if stand_in:
            say(STAND_IN_NOTICE)
        return comfy_env, stand_in
    port = free_port()
    input_dir, output_dir = work_dir / "comfy" / "input", work_dir / "comfy" / "output"
    for folder in (input_dir, output_dir):
        folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "localdev.fake_comfyui", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--input-dir", str(input_dir), "--output-dir", str(output_dir)]
    service = services.start("comfyui-stand-in", command, env)
    wait_until_answering(f"http://127.0.0.1:{port}/system_stats", service)
    say(STAND_IN_NOTICE)
    say(f"         listening at http://127.0.0.1:{port}")
    return {
        "COMFY_URL": f"http://127.0.0.1:{port}",
        "COMFY_INPUT_DIR": str(input_dir),
        "COMFY_OUTPUT_DIR": str(output_dir),
        "WORKFLOW": str(MODEL_FREE_WORKFLOW),
    }, True


def describe_comfy(comfy_url: str) -> tuple[str, str]:
    """(ComfyUI version, first device) from ``/system_stats``, which answers once it is ready."""
    stats_url = f"{comfy_url.rstrip('/')}/system_stats"
    wait_until_answering(stats_url, None, timeout_s=10)
    try:
        stats = requests.get(stats_url, timeout=5).json()
        devices = stats.get("devices") or [{}]
        return str(stats["system"]["comfyui_version"]), str(devices[0].get("name", "an unknown device"))
    except (requests.RequestException, ValueError, KeyError, TypeError, AttributeError):
        raise DemoError(f"{stats_url} does not answer like ComfyUI's /system_stats") from None


def start_queue_api(services: Services, env: dict[str, str]) -> str:
    port = free_port()
    command = [sys.executable, "-m", "localdev.queue_api", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--execution-timeout-s", str(EXECUTION_TIMEOUT_S)]
    service = services.start("worker-queue-api", command, env)
    url = f"http://127.0.0.1:{port}"
    wait_until_answering(f"{url}/health", service)
    say(f"worker:  handler.handler behind the local queue API (development tool) at {url}")
    return url


# -- the run --------------------------------------------------------------------------------------


def run_smoke_test(api_url: str, env: dict[str, str], report: Path, args: argparse.Namespace) -> int:
    command = [sys.executable, str(REPO_ROOT / "smoke_test.py"), "--api-url", api_url]
    command += ["--user-id", "demo-user", "--avatar-id", "demo-avatar", "--report", str(report)]
    command += ["--report-dir", str(DEMO_DIR)]
    command += ["--timeout", str(EXECUTION_TIMEOUT_S + 60), "--fixture-seconds", str(args.fixture_seconds)]
    say(f"\n$ smoke_test.py --api-url {api_url} ...")
    # Its own process group, so that a Ctrl-C reaches it once, from us, after the demo saw it.
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # The smoke test cancels its job on SIGINT; give it the time to, then make sure it is gone.
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(SMOKE_CANCEL_GRACE_S)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            stop_process_group(process, grace_s=2.0)
        raise


def print_summary(report_path: Path, minio_env: dict[str, str], stand_in: bool) -> None:
    try:
        report: dict[str, Any] = json.loads(report_path.read_text())
    except (OSError, ValueError):
        say("\n(no smoke test report)")
        return
    say("\n== demo summary ==")
    checks = [check for job in report["jobs"] for check in job["checks"]] + report["run_checks"]
    passed = sum(1 for check in checks if check["passed"])
    for job in report["jobs"]:
        if job.get("output_key"):
            say(f"output key: {job['output_key']} (bucket {minio_env['MINIO_BUCKET']})")
        say(
            f"status:     {job['status']}"
            + (f" {job['error_code']}: {job['error']}" if job.get("error") else "")
        )
        say(f"timings:    delayTime {job['delay_ms']} ms, executionTime {job['execution_ms']} ms")
        if job.get("worker_timings_s"):
            say("worker:     " + ", ".join(f"{k} {v} s" for k, v in job["worker_timings_s"].items()))
    say(
        f"checks:     {passed}/{len(checks)} passed"
        + ("" if report["passed"] else f"; failed: {report['failed_checks']}")
    )
    for job in report["jobs"]:
        seams = job.get("seams")
        if seams:
            joins = seams["window_plan"]["joins"]
            say(
                f"joins:      {len(joins)} (output frames {joins or '-'}); output motion: "
                f"{seams['output_motion']}; {sum(j['stands_out'] for j in seams['joins'])} stand out"
            )
            if stand_in:
                say("            (the stand-in makes no windows: these are where Wan2.2 Animate would join)")
            for picture in seams["pictures"]:
                say(f"picture:    {_shown(Path(picture))}")
    for warning in report.get("warnings", []):
        say(f"warning:    {warning}")
    if stand_in:
        say("ComfyUI:    model-free stand-in (not Wan2.2 Animate): see the notice above")


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def save_output(report_path: Path, minio_env: dict[str, str]) -> None:
    """Copies the output video under .work/demo/ (a moto server forgets it when stopped)."""
    with contextlib.suppress(OSError, ValueError, KeyError, S3Error):
        report = json.loads(report_path.read_text())
        key = next(job["output_key"] for job in report["jobs"] if job.get("output_key"))
        minio_client(minio_env).fget_object(minio_env["MINIO_BUCKET"], key, str(OUTPUT_COPY))
        say(f"saved:      {OUTPUT_COPY.relative_to(REPO_ROOT)} (a copy of the output, to watch)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localdev.demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fixture-seconds",
        type=float,
        default=7.0,
        help="length of the generated driving video (default 7 s: 168 frames, 3 windows, 2 joins)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs (path printed)")
    args = parser.parse_args(argv)
    for tool in ("ffmpeg", "ffprobe"):
        if shutil.which(tool) is None:
            say(f"demo: {tool} is required (make ffmpeg, or apt-get install ffmpeg)")
            return EXIT_SERVICE_FAILED
    work_dir = Path(tempfile.mkdtemp(prefix="wan-demo-"))
    services = Services(work_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    code = EXIT_SERVICE_FAILED
    say("== Wan2.2 Animate worker: local end-to-end demo ==")
    try:
        # A run that stops early must not leave the previous run's output and pictures as its own.
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        for stale in [
            OUTPUT_COPY,
            REPORT_PATH,
            DEMO_DIR / "timeline.png",
            *DEMO_DIR.glob("contact_sheet*.png"),
        ]:
            stale.unlink(missing_ok=True)
        with sigterm_as_interrupt():
            minio_env = start_s3(services, env)
            comfy_env, stand_in = start_comfy(services, env, work_dir)
            worker_dir = work_dir / "worker"
            worker_dir.mkdir()
            worker_env = {**env, **minio_env, **comfy_env, "WORK_DIR": str(worker_dir)}
            api_url = start_queue_api(services, worker_env)
            code = run_smoke_test(api_url, {**env, **minio_env}, REPORT_PATH, args)
            print_summary(REPORT_PATH, minio_env, stand_in)
            save_output(REPORT_PATH, minio_env)
            if os.environ.get("MINIO_ENDPOINT", "").strip():
                say("note:       the inputs (smoke-inputs/) and the output stay in your bucket")
    except DemoError as exc:
        say(f"\ndemo: {exc}")
    except KeyboardInterrupt:
        say("\ndemo: interrupted; stopping what it started")
        code = EXIT_INTERRUPTED
    finally:
        services.stop_all()
        if args.keep_logs:
            say(f"logs: {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)
    say(f"demo: stopped every service it started; exit code {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
