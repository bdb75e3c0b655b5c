"""entrypoint.sh, run for real with small stand-ins for ComfyUI, download_models.py and handler.py.

The stand-ins (one script, its role as first argument) record what happened to them as files in a folder:
`<role>.<event>` holding JSON (time, pid, argv, observations). Ordering is proven with those records and
with stand-ins that wait for each other, never with timing thresholds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "entrypoint.sh"

STANDIN = r'''
import http.server, json, os, signal, sys, threading, time, urllib.request

ROLE = sys.argv[1]
DIR = os.environ["STANDIN_DIR"]


def record(event, **fields):
    fields.update(t=time.time(), pid=os.getpid(), argv=sys.argv[2:])
    tmp = os.path.join(DIR, f".{ROLE}.{event}.tmp")
    with open(tmp, "w") as f:
        json.dump(fields, f)
    os.replace(tmp, os.path.join(DIR, f"{ROLE}.{event}"))


def wait_for(name, limit_s=20.0):
    """Block until another stand-in recorded `name`; give up (exit 4) after limit_s."""
    end = time.time() + limit_s
    while not os.path.exists(os.path.join(DIR, name)):
        if time.time() > end:
            print(f"{ROLE}: gave up waiting for {name}", flush=True)
            sys.exit(4)
        time.sleep(0.02)


def on_term(signum, frame):
    record("sigterm")
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)
record("start")


def comfy():
    mode = os.environ.get("FAKE_COMFY", "ready")
    port = int(sys.argv[sys.argv.index("--port") + 1])
    print("\x1b[32m[INFO]\x1b[0m fake ComfyUI booting", flush=True)
    if os.environ.get("FAKE_COMFY_WAIT_FOR_DOWNLOAD") == "1":
        wait_for("download.start")
    if mode == "crash":
        print("Traceback (most recent call last):", flush=True)
        print("RuntimeError: fake CUDA error during boot", flush=True)
        sys.exit(3)
    time.sleep(float(os.environ.get("FAKE_COMFY_DELAY_S", "0")))
    if mode == "never":
        while True:
            time.sleep(1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = 404, json.dumps({"system": {"comfyui_version": "fake"}}).encode()
            onnx = os.environ.get("FAKE_COMFY_ONNX")  # what wan_worker_nodes serves at /wan_worker/onnx
            if self.path == "/system_stats":
                status = 200
            elif self.path == "/wan_worker/onnx" and onnx:
                status, body = 200, onnx.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    record("ready")
    print(f"To see the GUI go to: http://127.0.0.1:{port}", flush=True)
    if mode == "crash_after_handler":
        threading.Thread(target=server.serve_forever, daemon=True).start()
        wait_for("handler.start")
        print("RuntimeError: CUDA error: an illegal memory access was encountered", flush=True)
        os._exit(1)
    server.serve_forever()


def download():
    print("downloading 2 files", flush=True)
    if os.environ.get("FAKE_DOWNLOAD_WAIT_FOR_COMFY") == "1":
        wait_for("comfy.start")
    if os.environ.get("FAKE_DOWNLOAD") == "fail":
        print("ERROR: 404 for diffusion_models/wan.safetensors", flush=True)
        sys.exit(5)
    if os.environ.get("FAKE_DOWNLOAD") == "hang":
        while True:
            time.sleep(1)
    record("done")
    print("all models in place", flush=True)


def handler():
    try:
        with urllib.request.urlopen(os.environ["COMFY_URL"] + "/system_stats", timeout=5) as reply:
            comfy_answered = reply.status == 200
    except OSError:
        comfy_answered = False
    record(
        "start",
        comfy_answered=comfy_answered,
        models_done=os.path.exists(os.path.join(DIR, "download.done")),
        env={k: os.environ.get(k) for k in ("COMFY_URL", "COMFY_INPUT_DIR", "COMFY_OUTPUT_DIR")},
    )
    print("--- Starting Serverless Worker |  Version stand-in ---", flush=True)
    mode = os.environ.get("FAKE_HANDLER", "exit:0")
    if mode.startswith("exit:"):
        sys.exit(int(mode.split(":")[1]))
    while True:
        time.sleep(1)


{"comfy": comfy, "download": download, "handler": handler}[ROLE]()
'''

SAGE_OK = "VERSION = 'stand-in'\n"
SAGE_BROKEN = "raise ImportError('stand-in: no CUDA kernels for this GPU')\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Run:
    code: int
    output: str


class Box:
    """A folder with the stand-ins and an environment that points entrypoint.sh at them."""

    def __init__(self, root: Path) -> None:
        self.events = root / "events"
        self.events.mkdir()
        script = root / "standin.py"
        script.write_text(STANDIN)
        self.sage_dir = root / "sage"
        self.sage_dir.mkdir()
        self.port = free_port()
        py = f"{sys.executable} -u {script}"
        self.env = {
            "PATH": os.environ["PATH"],
            "STANDIN_DIR": str(self.events),
            "PYTHON": sys.executable,
            "PYTHONPATH": str(self.sage_dir),
            "APP_DIR": str(root),
            "COMFY_DIR": str(root / "comfyui"),
            "COMFY_PORT": str(self.port),
            "COMFY_URL": f"http://127.0.0.1:{self.port}",
            "COMFY_LOG_FILE": str(root / "comfyui.log"),
            "COMFY_CMD": f"{py} comfy",
            "DOWNLOAD_CMD": f"{py} download",
            "HANDLER_CMD": f"{py} handler",
            "PREFLIGHT_CMD": "true",
            "READY_POLL_S": "0.05",
            "STOP_TIMEOUT_S": "5",
        }

    def run(self, *args: str, timeout: float = 60, **env: str) -> Run:
        result = subprocess.run(
            ["bash", str(ENTRYPOINT), *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Run(result.returncode, result.stdout + result.stderr)

    def event(self, name: str) -> dict:
        return json.loads((self.events / name).read_text())

    def has(self, name: str) -> bool:
        return (self.events / name).exists()

    def leftover_pids(self) -> list[int]:
        pids = []
        for path in self.events.glob("*.start"):
            pid = json.loads(path.read_text())["pid"]
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            pids.append(pid)
        return pids


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    b = Box(tmp_path)
    yield b
    leftovers = b.leftover_pids()
    for pid in leftovers:
        os.kill(pid, signal.SIGKILL)
    assert not leftovers, f"entrypoint.sh left stand-ins running: {leftovers}"


def test_models_download_while_comfyui_boots_then_the_handler_starts(box: Box) -> None:
    # Each stand-in waits until the other has started: run one after the other, they would never finish.
    run = box.run(
        "--rp_serve_api",
        "--rp_api_port",
        "8000",
        FAKE_COMFY_WAIT_FOR_DOWNLOAD="1",
        FAKE_DOWNLOAD_WAIT_FOR_COMFY="1",
    )
    assert run.code == 0, run.output
    comfy_start, comfy_ready = box.event("comfy.start"), box.event("comfy.ready")
    download_start, download_done = box.event("download.start"), box.event("download.done")
    handler = box.event("handler.start")
    assert download_start["t"] < comfy_ready["t"] and comfy_start["t"] < download_done["t"]
    assert handler["t"] > max(comfy_ready["t"], download_done["t"])
    assert handler["comfy_answered"] and handler["models_done"]
    assert handler["argv"] == ["--rp_serve_api", "--rp_api_port", "8000"]
    assert handler["env"]["COMFY_URL"] == f"http://127.0.0.1:{box.port}"
    comfy_argv = comfy_start["argv"]
    assert comfy_argv[:3] == ["--disable-auto-launch", "--listen", "127.0.0.1"]
    assert comfy_argv[comfy_argv.index("--port") + 1] == str(box.port)
    assert comfy_argv[comfy_argv.index("--input-directory") + 1] == handler["env"]["COMFY_INPUT_DIR"]
    assert comfy_argv[comfy_argv.index("--output-directory") + 1] == handler["env"]["COMFY_OUTPUT_DIR"]
    assert Path(handler["env"]["COMFY_INPUT_DIR"]).is_dir()
    assert "--models-dir" in download_start["argv"] and "--manifest" in download_start["argv"]
    assert "[comfyui] [INFO] fake ComfyUI booting" in run.output, "ANSI colour codes are dropped"
    assert "[models] all models in place" in run.output
    assert "[worker] --- Starting Serverless Worker" in run.output
    timeline = [line for line in run.output.splitlines() if "start-up timeline" in line]
    assert len(timeline) == 1, run.output
    assert "models ready" in timeline[0] and "ComfyUI ready" in timeline[0] and "handler ready" in timeline[0]


def test_the_handler_waits_for_a_slow_comfyui(box: Box) -> None:
    run = box.run(FAKE_COMFY_DELAY_S="1")
    assert run.code == 0, run.output
    handler = box.event("handler.start")
    assert handler["t"] > box.event("comfy.ready")["t"]
    assert handler["comfy_answered"]


def test_the_handler_waits_for_the_download_when_comfyui_is_ready_first(box: Box) -> None:
    # The download only finishes once ComfyUI has started; ComfyUI answers at once.
    run = box.run(FAKE_DOWNLOAD_WAIT_FOR_COMFY="1")
    assert run.code == 0, run.output
    assert box.event("handler.start")["models_done"]
    assert box.event("handler.start")["t"] > box.event("download.done")["t"]


def test_comfyui_not_ready_in_time_exits_non_zero_with_its_log(box: Box) -> None:
    # The download waits for ComfyUI's stand-in to start, so it is up (and its SIGTERM trap set)
    # before the readiness wait can run out, however loaded the machine is.
    run = box.run(FAKE_COMFY="never", COMFY_READY_TIMEOUT_S="3", FAKE_DOWNLOAD_WAIT_FOR_COMFY="1")
    assert run.code != 0
    assert "ComfyUI not ready after 3 s" in run.output
    assert "[comfyui last lines] [INFO] fake ComfyUI booting" in run.output
    assert box.has("comfy.sigterm")
    assert not box.has("handler.start")


def test_comfyui_crash_during_boot_exits_non_zero_with_its_last_lines(box: Box) -> None:
    run = box.run(FAKE_COMFY="crash", FAKE_DOWNLOAD="hang", FAKE_COMFY_WAIT_FOR_DOWNLOAD="1")
    assert run.code != 0
    assert "ComfyUI exited (code 3) while booting" in run.output
    assert "[comfyui last lines] RuntimeError: fake CUDA error during boot" in run.output
    assert box.has("download.sigterm"), "the running download must be stopped"
    assert not box.has("handler.start")


def test_comfyui_crash_while_the_handler_runs_exits_non_zero(box: Box) -> None:
    run = box.run(FAKE_COMFY="crash_after_handler", FAKE_HANDLER="serve")
    assert run.code != 0
    assert "ComfyUI exited (code 1) while the worker was running" in run.output
    assert "[comfyui last lines] RuntimeError: CUDA error: an illegal memory access" in run.output
    assert box.has("handler.sigterm"), "the handler must be stopped so RunPod replaces the worker"


def test_a_failed_model_download_exits_non_zero_and_stops_comfyui(box: Box) -> None:
    run = box.run(FAKE_DOWNLOAD="fail", FAKE_COMFY="never", FAKE_DOWNLOAD_WAIT_FOR_COMFY="1")
    assert run.code != 0
    assert "model download failed (exit code 5)" in run.output
    assert "[models] ERROR: 404 for diffusion_models/wan.safetensors" in run.output
    assert box.has("comfy.sigterm")
    assert not box.has("handler.start")


def test_the_handlers_exit_code_is_the_containers_and_comfyui_is_stopped(box: Box) -> None:
    run = box.run(FAKE_HANDLER="exit:2")
    assert run.code == 2, run.output
    assert box.has("comfy.sigterm")


@pytest.mark.parametrize(
    ("enabled", "package", "flag_expected"),
    [("1", SAGE_OK, True), ("1", SAGE_BROKEN, False), ("0", SAGE_OK, False), ("0", SAGE_BROKEN, False)],
    ids=["enabled-imports", "enabled-import-fails", "disabled-imports", "disabled-import-fails"],
)
def test_sage_attention_flag_only_when_enabled_and_importable(
    box: Box, enabled: str, package: str, flag_expected: bool
) -> None:
    (box.sage_dir / "sageattention.py").write_text(package)
    run = box.run(ENABLE_SAGE_ATTENTION=enabled)
    assert run.code == 0, run.output
    assert ("--use-sage-attention" in box.event("comfy.start")["argv"]) is flag_expected
    warned = "WARNING: ENABLE_SAGE_ATTENTION=1 but sageattention does not import" in run.output
    assert warned is (enabled == "1" and package == SAGE_BROKEN)
    if warned:
        assert "stand-in: no CUDA kernels for this GPU" in run.output


@pytest.mark.parametrize(("package", "flag_expected"), [(SAGE_OK, True), (SAGE_BROKEN, False)])
def test_attention_backend_sage_asks_for_the_sage_flag(box: Box, package: str, flag_expected: bool) -> None:
    (box.sage_dir / "sageattention.py").write_text(package)
    run = box.run(ATTENTION_BACKEND="sage")
    assert run.code == 0, run.output
    assert ("--use-sage-attention" in box.event("comfy.start")["argv"]) is flag_expected
    assert (
        "WARNING: ATTENTION_BACKEND=sage but sageattention does not import" in run.output
    ) is not flag_expected


def test_sigterm_is_forwarded_to_comfyui_and_the_handler(box: Box) -> None:
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT)],
        env={**box.env, "FAKE_HANDLER": "serve"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not box.has("handler.start"):
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the handler never started"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, output
    assert "received SIGTERM" in output
    assert box.has("comfy.sigterm") and box.has("handler.sigterm")


def test_a_bad_timeout_setting_is_refused(box: Box) -> None:
    run = box.run(COMFY_READY_TIMEOUT_S="ten")
    assert run.code == 2
    assert "COMFY_READY_TIMEOUT_S must be a whole number" in run.output
    assert not box.has("comfy.start")


def test_a_misconfigured_worker_fails_before_anything_starts(box: Box) -> None:
    # The real configuration check (worker.config) of this repository, with no MINIO_* set.
    run = box.run(APP_DIR=str(ROOT), PREFLIGHT_CMD="")
    assert run.code == 2, run.output
    assert "configuration is invalid; nothing started" in run.output
    assert "MINIO_ENDPOINT is required but not set" in run.output
    assert not box.has("comfy.start") and not box.has("download.start")


VALID_WORKER_ENV = {
    "PREFLIGHT_CMD": "",
    "MINIO_ENDPOINT": "127.0.0.1:9",
    "MINIO_ACCESS_KEY": "key",
    "MINIO_SECRET_KEY": "secret",
    "MINIO_BUCKET": "media",
    "WORKFLOW": "workflows/model_free_still.json",
}


def test_a_valid_configuration_passes_the_check(box: Box) -> None:
    run = box.run(APP_DIR=str(ROOT), **VALID_WORKER_ENV)
    assert run.code == 0, run.output
    assert "preflight: settings valid; workflow model_free_still" in run.output
    assert box.has("handler.start")


def test_comfy_url_on_another_port_than_comfy_port_is_refused_before_anything_starts(box: Box) -> None:
    # Changing only COMFY_PORT used to leave COMFY_URL on 8188: a 600-s wait for a ComfyUI not there.
    run = box.run(APP_DIR=str(ROOT), COMFY_URL="http://127.0.0.1:8188", **VALID_WORKER_ENV)
    assert run.code == 2, run.output
    assert "configuration is invalid; nothing started" in run.output
    assert f"COMFY_URL='http://127.0.0.1:8188' (port 8188) and COMFY_PORT={box.port} disagree" in run.output
    assert not box.has("comfy.start") and not box.has("download.start")


def test_comfy_port_alone_decides_where_comfyui_listens_and_the_worker_looks(box: Box) -> None:
    run = box.run(APP_DIR=str(ROOT), COMFY_URL="", **VALID_WORKER_ENV)
    assert run.code == 0, run.output
    comfy_argv = box.event("comfy.start")["argv"]
    assert comfy_argv[comfy_argv.index("--port") + 1] == str(box.port)
    assert box.event("handler.start")["env"]["COMFY_URL"] == f"http://127.0.0.1:{box.port}"


def test_a_gpu_machine_without_the_onnx_cuda_provider_stops_at_the_worker_start(box: Box) -> None:
    # The real handler: it reads ComfyUI's ONNX Runtime report once ComfyUI is up and refuses to start.
    report = {
        "gpu": True,
        "cuda_session_ok": False,
        "available_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "session_providers": ["CPUExecutionProvider"],
        "reason": "CUDAExecutionProvider is listed but the session fell back to ['CPUExecutionProvider']",
        "sessions": {},
    }
    run = box.run(
        APP_DIR=str(ROOT),
        HANDLER_CMD=f"{sys.executable} -u {ROOT / 'handler.py'}",
        FAKE_COMFY_ONNX=json.dumps(report),
        MINIO_ENDPOINT="127.0.0.1:9",
        MINIO_ACCESS_KEY="key",
        MINIO_SECRET_KEY="secret",
        MINIO_BUCKET="media",
    )
    assert run.code == 2, run.output
    assert (
        "[worker] wan-worker: an NVIDIA GPU is present but ONNX Runtime in ComfyUI cannot create a "
        "CUDA session" in run.output
    )
    assert "pose detection would silently run on the CPU" in run.output
    assert "the worker exited with code 2; stopping ComfyUI" in run.output
    assert box.has("comfy.sigterm")


def test_a_bad_workflow_setting_fails_before_anything_starts(box: Box) -> None:
    # Settings alone pass; python -m worker.preflight also loads the workflow with its WAN_* settings.
    env = {**VALID_WORKER_ENV, "WORKFLOW": "workflows/wan22_animate_replace.json", "WAN_STEPS": "abc"}
    run = box.run(APP_DIR=str(ROOT), **env)
    assert run.code == 2, run.output
    assert "configuration is invalid; nothing started" in run.output
    assert "WAN_STEPS (workflow setting 'steps') must be an integer, not 'abc'" in run.output
    assert not box.has("comfy.start") and not box.has("download.start")
