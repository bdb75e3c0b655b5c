"""The fake ComfyUI says what a real ComfyUI 0.33.0 says.

The expected sequences and bodies below are copied from the traces recorded on a real server
(``/work/shared/comfyui/captures/*.json``, named at each constant); the tests drive the fake
over real sockets with a plain websocket client and compare.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import websocket
from PIL import Image

from localdev.fake_comfyui import FakeComfyUI
from tests.support.comfy import REPO, ComfyMedia, model_free_graph, probe_video, stage_inputs, unused_port
from worker.graph.workflow import Workflow, WorkflowParams

# captures/happy_720p24.json "ws_sequence" (nothing cached)
HAPPY_SEQUENCE = [
    "status",
    "status",
    "status",
    "execution_start",
    "execution_cached",
    "progress_state",
    "executing(node=2)",
    "progress_state",
    "progress_state",
    "executing(node=3)",
    "progress_state",
    "progress_state",
    "executing(node=1)",
    "progress_state",
    "progress_state",
    "executing(node=4)",
    "progress_state",
    "progress_state",
    "executing(node=5)",
    "progress_state",
    "progress_state",
    "executing(node=6)",
    "progress_state",
    "progress_state",
    "executing(node=7)",
    "executed(node=7)",
    "progress_state",
    "execution_success",
    "status",
    "executing(node=None)",
]
# captures/noaudio_driving_video.json: same avatar and size as the run before, so 1 and 4 are cached
NOAUDIO_AFTER_HAPPY_SEQUENCE = [
    "status",
    "status",
    "status",
    "execution_start",
    "execution_cached",
    "progress_state",
    "executing(node=5)",
    "progress_state",
    "progress_state",
    "executing(node=2)",
    "progress_state",
    "progress_state",
    "executing(node=3)",
    "progress_state",
    "progress_state",
    "executing(node=6)",
    "progress_state",
    "progress_state",
    "executing(node=7)",
    "executed(node=7)",
    "progress_state",
    "execution_success",
    "status",
    "executing(node=None)",
]
# captures/cached_rerun.json "second"
CACHED_RERUN_SEQUENCE = [
    "status",
    "status",
    "status",
    "execution_start",
    "execution_cached",
    "executed(node=7)",
    "progress_state",
    "execution_success",
    "status",
    "executing(node=None)",
]
# captures/runtime_error_corrupt_image.json and runtime_error_corrupt_video.json
CORRUPT_IMAGE_SEQUENCE = [
    *HAPPY_SEQUENCE[:13],
    "execution_error(node=1)",
    "status",
    "executing(node=None)",
]
CORRUPT_VIDEO_SEQUENCE = [*HAPPY_SEQUENCE[:10], "execution_error(node=3)", "status", "executing(node=None)"]
# data keys of each message type in all captures
DATA_KEYS = {
    "status": [{"status"}, {"status", "sid"}],
    "execution_start": [{"prompt_id", "timestamp"}],
    "execution_cached": [{"nodes", "prompt_id", "timestamp"}],
    "progress_state": [{"nodes", "prompt_id"}],
    "executing": [{"node"}, {"node", "prompt_id"}, {"node", "display_node", "prompt_id"}],
    "executed": [{"node", "display_node", "output", "prompt_id"}],
    "execution_success": [{"prompt_id", "timestamp"}],
    "execution_error": [
        {
            "prompt_id",
            "node_id",
            "node_type",
            "executed",
            "exception_message",
            "exception_type",
            "traceback",
            "current_inputs",
            "current_outputs",
            "timestamp",
        }
    ],
    "execution_interrupted": [{"prompt_id", "node_id", "node_type", "executed", "timestamp"}],
}
PROGRESS_NODE_KEYS = {
    "value",
    "max",
    "state",
    "node_id",
    "prompt_id",
    "display_node_id",
    "parent_node_id",
    "real_node_id",
}
VALIDATION_FAILED = {
    "type": "prompt_outputs_failed_validation",
    "message": "Prompt outputs failed validation",
    "details": "",
    "extra_info": {},
}
# captures/bad_input.json, case by case
WIDTH_ABOVE_MAX = {
    "error": VALIDATION_FAILED,
    "node_errors": {
        "4": {
            "errors": [
                {
                    "type": "value_bigger_than_max",
                    "message": "Value 99999 bigger than max of 16384",
                    "details": "width",
                    "extra_info": {
                        "input_name": "width",
                        "input_config": ["INT", {"default": 512, "max": 16384, "min": 0, "step": 1}],
                        "received_value": 99999,
                    },
                }
            ],
            "dependent_outputs": ["7"],
            "class_type": "ImageScale",
        }
    },
}
LOAD_IMAGE_MISSING = {
    "error": VALIDATION_FAILED,
    "node_errors": {
        "1": {
            "errors": [
                {
                    "type": "custom_validation_failed",
                    "message": "Custom validation failed for node",
                    "details": "image - Invalid image file: missing_xyz.png",
                    "extra_info": {"input_name": "image"},
                }
            ],
            "dependent_outputs": ["7"],
            "class_type": "LoadImage",
        }
    },
}
LOAD_VIDEO_MISSING_DETAILS = "file - Invalid video file: missing_xyz.mp4"
UPSCALE_NOT_IN_LIST = {
    "type": "value_not_in_list",
    "message": "Value not in list",
    "details": "upscale_method: 'magic' not in ['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']",
    "extra_info": {
        "input_name": "upscale_method",
        "input_config": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}],
        "received_value": "magic",
    },
}
UNKNOWN_CLASS = {
    "error": {
        "type": "missing_node_type",
        "message": "Node 'NoSuchNode' not found. The custom node may not be installed.",
        "details": "Node ID '#99'",
        "extra_info": {"node_id": "99", "class_type": "NoSuchNode", "node_title": "NoSuchNode"},
    },
    "node_errors": {},
}
INVALID_PROMPT_ID = {
    "error": {
        "type": "invalid_prompt_id",
        "message": "prompt_id must be a valid UUID",
        "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
        "omit it to let the server generate one",
        "extra_info": {},
    },
    "node_errors": {},
}
NO_PROMPT = {
    "error": {
        "type": "no_prompt",
        "message": "No prompt provided",
        "details": "No prompt provided",
        "extra_info": {},
    },
    "node_errors": {},
}
MALFORMED_JSON_BODY = "500 Internal Server Error\n\nServer got itself in trouble"


class Recorder:
    """A plain websocket client that keeps every message."""

    def __init__(self, server: FakeComfyUI, client_id: str | None = None) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}", timeout=30
        )
        self.messages: list[dict[str, Any]] = []

    def read(self) -> dict[str, Any]:
        raw = self.ws.recv()
        message = {"type": "binary", "data": raw} if isinstance(raw, bytes) else json.loads(raw)
        self.messages.append(message)
        return message

    def read_until_done(self, prompt_id: str) -> list[dict[str, Any]]:
        while True:
            message = self.read()
            data = message["data"]
            if message["type"] == "executing" and data["node"] is None and data.get("prompt_id") == prompt_id:
                return self.messages

    def read_until(self, label_wanted: str) -> None:
        while label(self.read()) != label_wanted:
            pass

    def close(self) -> None:
        self.ws.close()


def label(message: dict[str, Any]) -> str:
    kind, data = message["type"], message["data"]
    if kind in ("executing", "executed"):
        return f"{kind}(node={data['node']})"
    if kind in ("execution_error", "execution_interrupted"):
        return f"{kind}(node={data['node_id']})"
    return kind


def submit(
    server: FakeComfyUI, graph: dict[str, Any], client_id: str | None, **extra: Any
) -> requests.Response:
    body: dict[str, Any] = {"prompt": graph, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    return requests.post(f"{server.url}/prompt", json=body, timeout=10)


def run_prompt(server: FakeComfyUI, graph: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    recorder = Recorder(server)
    try:
        prompt_id = str(uuid.uuid4())
        reply = submit(server, graph, recorder.client_id, prompt_id=prompt_id)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"prompt_id": prompt_id, "number": reply.json()["number"], "node_errors": {}}
        return recorder.read_until_done(prompt_id), prompt_id
    finally:
        recorder.close()


def history(server: FakeComfyUI, prompt_id: str) -> dict[str, Any]:
    return requests.get(f"{server.url}/history/{prompt_id}", timeout=10).json()


def output_files(server: FakeComfyUI) -> list[Path]:
    return sorted(p for p in server.output_dir.rglob("*") if p.is_file())


@pytest.fixture
def staged(fake_comfy: FakeComfyUI, comfy_media: ComfyMedia) -> tuple[str, str]:
    return stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_mp4)


def test_happy_run_has_the_captured_sequence_shapes_and_output(
    fake_comfy: FakeComfyUI, staged: tuple[str, str]
) -> None:
    image, video = staged
    messages, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video, frames=48))

    assert [label(m) for m in messages] == HAPPY_SEQUENCE
    for message in messages:
        assert set(message["data"]) in DATA_KEYS[message["type"]], message
        if message["type"] == "progress_state":
            assert all(set(node) == PROGRESS_NODE_KEYS for node in message["data"]["nodes"].values())
    assert messages[0]["data"]["sid"]
    assert [
        m["data"]["status"]["exec_info"]["queue_remaining"] for m in messages if m["type"] == "status"
    ] == [
        0,
        1,
        1,
        0,
    ]
    executed = next(m for m in messages if m["type"] == "executed")["data"]["output"]
    assert executed == {
        "images": [{"filename": "out_00001_.mp4", "subfolder": "tests", "type": "output"}],
        "animated": [True],
    }

    entry = history(fake_comfy, prompt_id)[prompt_id]
    assert set(entry) == {"prompt", "outputs", "status", "meta"}
    assert entry["outputs"] == {"7": executed}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [event for event, _ in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"] == {
        "7": {"node_id": "7", "display_node": "7", "parent_node": None, "real_node_id": "7"}
    }

    view = requests.get(
        f"{fake_comfy.url}/view",
        params={"filename": "out_00001_.mp4", "subfolder": "tests", "type": "output"},
    )
    assert view.status_code == 200 and view.headers["Content-Type"] == "video/mp4"
    probe = probe_video(fake_comfy.output_dir / "tests" / "out_00001_.mp4")
    video_stream, audio_stream = probe["video"], probe["audio"]
    assert (video_stream["codec_name"], video_stream["pix_fmt"]) == ("h264", "yuv420p")
    assert (video_stream["width"], video_stream["height"]) == (320, 180)
    assert video_stream["avg_frame_rate"] == "24/1" and video_stream["nb_frames"] == "48"
    assert audio_stream["codec_name"] == "aac"
    # the one-second driving audio is not padded to the two-second video (as on the real server)
    assert float(audio_stream["duration"]) == pytest.approx(1.0, abs=0.05)
    assert len(view.content) == (fake_comfy.output_dir / "tests" / "out_00001_.mp4").stat().st_size


def test_still_is_scaled_and_cropped_to_the_requested_size(
    fake_comfy: FakeComfyUI, staged: tuple[str, str]
) -> None:
    image, video = staged
    _, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video, width=160, height=160))
    output = history(fake_comfy, prompt_id)[prompt_id]["outputs"]["7"]["images"][0]
    probe = probe_video(fake_comfy.output_dir / output["subfolder"] / output["filename"])
    assert (probe["video"]["width"], probe["video"]["height"], probe["video"]["nb_frames"]) == (
        160,
        160,
        "24",
    )


def test_cache_survives_across_prompts_like_the_captures(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia, staged: tuple[str, str]
) -> None:
    image, video = staged
    run_prompt(fake_comfy, model_free_graph(image=image, video=video, frames=48))
    before = output_files(fake_comfy)

    rerun, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video, frames=48))
    assert [label(m) for m in rerun] == CACHED_RERUN_SEQUENCE
    cached = next(m for m in rerun if m["type"] == "execution_cached")["data"]["nodes"]
    assert cached == ["1", "2", "3", "4", "5", "6", "7"]
    entry = history(fake_comfy, prompt_id)[prompt_id]
    assert entry["outputs"]["7"]["images"][0]["filename"] == "out_00001_.mp4"
    assert output_files(fake_comfy) == before  # no new file

    _, noaudio = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_noaudio_mp4)
    third, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=noaudio, frames=24))
    assert [label(m) for m in third] == NOAUDIO_AFTER_HAPPY_SEQUENCE
    assert next(m for m in third if m["type"] == "execution_cached")["data"]["nodes"] == ["1", "4"]
    output = history(fake_comfy, prompt_id)[prompt_id]["outputs"]["7"]["images"][0]
    assert output["filename"] == "out_00002_.mp4"  # the counter is per prefix
    probe = probe_video(fake_comfy.output_dir / "tests" / "out_00002_.mp4")
    assert probe["audio"] is None and probe["video"]["nb_frames"] == "24"

    assert requests.post(f"{fake_comfy.url}/free", json={"free_memory": True}).status_code == 200
    after_free, _ = run_prompt(fake_comfy, model_free_graph(image=image, video=noaudio, frames=24))
    assert next(m for m in after_free if m["type"] == "execution_cached")["data"]["nodes"] == []


def test_validation_errors_have_the_captured_bodies(fake_comfy: FakeComfyUI, staged: tuple[str, str]) -> None:
    image, video = staged

    def post(graph: dict[str, Any], **extra: Any) -> requests.Response:
        return submit(fake_comfy, graph, "someone", **extra)

    graph = model_free_graph(image=image, video=video)
    graph["4"]["inputs"]["width"] = 99999
    reply = post(graph)
    assert (reply.status_code, reply.json()) == (400, WIDTH_ABOVE_MAX)

    graph = model_free_graph(image="missing_xyz.png", video=video)
    reply = post(graph)
    assert (reply.status_code, reply.json()) == (400, LOAD_IMAGE_MISSING)

    graph = model_free_graph(image=image, video="missing_xyz.mp4")
    errors = post(graph).json()["node_errors"]["2"]["errors"]
    assert [(e["type"], e["details"]) for e in errors] == [
        ("custom_validation_failed", LOAD_VIDEO_MISSING_DETAILS)
    ]

    graph = model_free_graph(image=image, video=video)
    graph["4"]["inputs"]["upscale_method"] = "magic"
    assert post(graph).json()["node_errors"]["4"]["errors"] == [UPSCALE_NOT_IN_LIST]

    graph = model_free_graph(image=image, video=video)
    graph["99"] = {"class_type": "NoSuchNode", "inputs": {}}
    reply = post(graph)
    assert (reply.status_code, reply.json()) == (400, UNKNOWN_CLASS)

    graph = model_free_graph(image=image, video=video)
    del graph["5"]["inputs"]["amount"]
    error = post(graph).json()["node_errors"]["5"]["errors"][0]
    assert (error["type"], error["details"]) == ("required_input_missing", "amount")

    graph = model_free_graph(image=image, video=video)
    graph["6"]["inputs"]["images"] = ["2", 0]
    error = post(graph).json()["node_errors"]["6"]["errors"][0]
    assert error["details"] == "images, received_type(VIDEO) mismatch input_type(IMAGE)"

    graph = model_free_graph(image=image, video=video)
    del graph["7"]
    assert post(graph).json()["error"]["type"] == "prompt_no_outputs"

    reply = post(model_free_graph(image=image, video=video), prompt_id="NOT-A-UUID")
    assert (reply.status_code, reply.json()) == (400, INVALID_PROMPT_ID)
    reply = post(model_free_graph(image=image, video=video), prompt_id=str(uuid.uuid4()).upper())
    assert reply.json()["error"]["type"] == "invalid_prompt_id"

    reply = requests.post(f"{fake_comfy.url}/prompt", json={"client_id": "x"})
    assert (reply.status_code, reply.json()) == (400, NO_PROMPT)
    reply = requests.post(f"{fake_comfy.url}/prompt", data=b"{not json", timeout=10)
    assert (reply.status_code, reply.text) == (500, MALFORMED_JSON_BODY)

    # DynamicCombo values are not validated: 200, then a runtime error
    graph = model_free_graph(image=image, video=video)
    graph["7"]["inputs"]["format"] = "avi"
    messages, _ = run_prompt(fake_comfy, graph)
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    assert (error["node_id"], error["exception_type"]) == ("7", "TypeError")


def test_corrupt_image_fails_in_load_image_like_the_capture(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia
) -> None:
    image, video = stage_inputs(fake_comfy, comfy_media.corrupt_png, comfy_media.driving_mp4)
    messages, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video))

    assert [label(m) for m in messages] == CORRUPT_IMAGE_SEQUENCE
    error = next(m for m in messages if m["type"] == "execution_error")["data"]
    assert set(error) in DATA_KEYS["execution_error"]
    assert (error["node_id"], error["node_type"], error["exception_type"]) == (
        "1",
        "LoadImage",
        "PIL.UnidentifiedImageError",
    )
    assert (
        error["exception_message"] == f"cannot identify image file '{fake_comfy.input_dir / 'corrupt.png'}'\n"
    )
    assert error["executed"] == ["2", "3"]
    status = history(fake_comfy, prompt_id)[prompt_id]["status"]
    assert (status["status_str"], status["completed"]) == ("error", False)
    assert status["messages"][-1][0] == "execution_error"
    assert history(fake_comfy, prompt_id)[prompt_id]["outputs"] == {}


def test_corrupt_video_fails_in_get_video_components(
    fake_comfy: FakeComfyUI, comfy_media: ComfyMedia
) -> None:
    image, video = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.corrupt_mp4)
    messages, _ = run_prompt(fake_comfy, model_free_graph(image=image, video=video))
    assert [label(m) for m in messages] == CORRUPT_VIDEO_SEQUENCE
    error = messages[-3]["data"]
    assert (error["node_type"], error["exception_type"]) == (
        "GetVideoComponents",
        "av.error.InvalidDataError",
    )
    assert "moov atom not found" in error["exception_message"]


def test_interrupt_is_honoured_between_nodes_but_not_during_the_last(
    fake_comfy: FakeComfyUI, staged: tuple[str, str]
) -> None:
    image, video = staged
    fake_comfy.set_fault("slow", seconds=0.3)
    recorder = Recorder(fake_comfy)
    prompt_id = submit(fake_comfy, model_free_graph(image=image, video=video), recorder.client_id).json()[
        "prompt_id"
    ]
    recorder.read_until("executing(node=3)")
    assert requests.post(f"{fake_comfy.url}/interrupt", json={"prompt_id": prompt_id}).status_code == 200
    messages = recorder.read_until_done(prompt_id)
    recorder.close()
    assert [m["type"] for m in messages[-3:]] == ["execution_interrupted", "status", "executing"]
    interrupted = messages[-3]["data"]
    assert set(interrupted) in DATA_KEYS["execution_interrupted"]
    # honoured when the next node starts (node 1 unless the machine is slow), never in node 3
    assert interrupted["node_id"] in ("1", "4", "5", "6") and "3" in interrupted["executed"]
    assert "execution_success" not in [m["type"] for m in messages]
    assert history(fake_comfy, prompt_id)[prompt_id]["status"]["status_str"] == "error"

    # an interrupt aimed at another prompt, or sent during the last node, changes nothing
    fake_comfy.set_fault("slow", seconds=0.3)
    recorder = Recorder(fake_comfy)
    graph = model_free_graph(image=image, video=video, prefix="tests/second")
    prompt_id = submit(fake_comfy, graph, recorder.client_id).json()["prompt_id"]
    requests.post(f"{fake_comfy.url}/interrupt", json={"prompt_id": str(uuid.uuid4())})
    recorder.read_until("executing(node=7)")
    requests.post(f"{fake_comfy.url}/interrupt")
    messages = recorder.read_until_done(prompt_id)
    recorder.close()
    assert "execution_success" in [m["type"] for m in messages]


def test_queue_delete_removes_a_pending_prompt_silently(
    fake_comfy: FakeComfyUI, staged: tuple[str, str]
) -> None:
    image, video = staged
    fake_comfy.set_fault("hang", node="1")
    first, second = Recorder(fake_comfy), Recorder(fake_comfy)
    running_id = submit(fake_comfy, model_free_graph(image=image, video=video), first.client_id).json()[
        "prompt_id"
    ]
    first.read_until("executing(node=1)")
    graph = model_free_graph(image=image, video=video, prefix="tests/pending")
    pending_id = submit(fake_comfy, graph, second.client_id).json()["prompt_id"]
    queue = requests.get(f"{fake_comfy.url}/queue").json()
    assert [item[1] for item in queue["queue_running"]] == [running_id]
    assert [item[1] for item in queue["queue_pending"]] == [pending_id]
    assert len(queue["queue_pending"][0]) == 5
    assert requests.get(f"{fake_comfy.url}/prompt").json() == {"exec_info": {"queue_remaining": 2}}

    assert requests.post(f"{fake_comfy.url}/queue", json={"delete": [pending_id]}).status_code == 200
    assert requests.get(f"{fake_comfy.url}/queue").json()["queue_pending"] == []
    assert history(fake_comfy, pending_id) == {}

    requests.post(f"{fake_comfy.url}/interrupt")
    first.read_until_done(running_id)
    first.close()
    second.ws.settimeout(0.5)
    seen = []
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            seen.append(second.read()["type"])
    second.close()
    assert set(seen) == {"status"}  # never a word about the deleted prompt


def test_reconnect_with_the_same_client_id_gets_the_current_node_and_no_replay(
    fake_comfy: FakeComfyUI, staged: tuple[str, str]
) -> None:
    image, video = staged
    fake_comfy.set_fault("slow", seconds=0.2)
    old = Recorder(fake_comfy)
    prompt_id = submit(fake_comfy, model_free_graph(image=image, video=video), old.client_id).json()[
        "prompt_id"
    ]
    old.read_until("executing(node=4)")
    new = Recorder(fake_comfy, client_id=old.client_id)
    messages = new.read_until_done(prompt_id)
    old.close()
    new.close()
    assert messages[0] == {
        "type": "status",
        "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": old.client_id},
    }
    # the node running at reconnect time (4 unless the machine is slow), without prompt_id
    assert messages[1]["type"] == "executing" and set(messages[1]["data"]) == {"node"}
    assert messages[1]["data"]["node"] in ("4", "5", "6", "7")
    assert "execution_start" not in [m["type"] for m in messages]
    assert [label(m) for m in messages[-4:]] == [
        "progress_state",
        "execution_success",
        "status",
        "executing(node=None)",
    ]


def test_events_go_only_to_the_prompts_client(fake_comfy: FakeComfyUI, staged: tuple[str, str]) -> None:
    image, video = staged
    watcher = Recorder(fake_comfy)
    run_prompt(fake_comfy, model_free_graph(image=image, video=video))
    # a prompt without client_id: progress_state is broadcast, nothing else
    prompt_id = submit(
        fake_comfy, model_free_graph(image=image, video=video, prefix="tests/anon"), None
    ).json()["prompt_id"]
    while not history(fake_comfy, prompt_id):
        time.sleep(0.05)
    watcher.ws.settimeout(0.5)
    with pytest.raises(websocket.WebSocketTimeoutException):
        while True:
            watcher.read()
    watcher.close()
    assert {m["type"] for m in watcher.messages} == {"status", "progress_state"}
    assert all(m["data"]["prompt_id"] == prompt_id for m in watcher.messages if m["type"] == "progress_state")


def test_uploads_rename_on_conflict_and_refuse_oversize(tmp_path: Path) -> None:
    with FakeComfyUI(tmp_path / "in", tmp_path / "out", max_upload_size=4096) as server:

        def upload(content: bytes, **fields: str) -> requests.Response:
            files = {"image": ("clip.mp4", content, "video/mp4")}
            return requests.post(f"{server.url}/upload/image", files=files, data=fields, timeout=10)

        assert upload(b"one").json() == {"name": "clip.mp4", "subfolder": "", "type": "input"}
        assert upload(b"one").json()["name"] == "clip.mp4"  # same content: same name
        assert upload(b"two").json()["name"] == "clip (1).mp4"
        assert upload(b"three", overwrite="true").json()["name"] == "clip.mp4"
        assert (server.input_dir / "clip.mp4").read_bytes() == b"three"
        reply = upload(b"four", subfolder="wan-worker/job", overwrite="true").json()
        assert reply == {"name": "clip.mp4", "subfolder": "wan-worker/job", "type": "input"}
        assert (server.input_dir / "wan-worker" / "job" / "clip.mp4").read_bytes() == b"four"
        assert upload(b"x", subfolder="../escape").status_code == 400
        assert upload(b"x" * 8192).status_code == 413
        missing = requests.get(f"{server.url}/view", params={"filename": "nope.mp4", "type": "output"})
        assert (missing.status_code, missing.content) == (404, b"")


def test_info_endpoints_are_shaped_like_the_real_ones_and_say_fake(fake_comfy: FakeComfyUI) -> None:
    stats = requests.get(f"{fake_comfy.url}/system_stats").json()
    assert stats["system"]["comfyui_version"] == "0.33.0-fake"
    assert {"os", "ram_total", "ram_free", "python_version", "pytorch_version"} <= set(stats["system"])
    assert {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
    (fake_comfy.input_dir / "a.png").write_bytes(b"x")
    info = requests.get(f"{fake_comfy.url}/object_info").json()
    assert set(info) == {
        "LoadImage",
        "LoadVideo",
        "GetVideoComponents",
        "ImageScale",
        "RepeatImageBatch",
        "ImageFromBatch",
        "ImageCompositeMasked",
        "CreateVideo",
        "SaveVideo",
        "WanWorkerSaveChunk",
    }
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["a.png"]
    assert info["SaveVideo"]["output_node"] is True
    one = requests.get(f"{fake_comfy.url}/object_info/ImageScale").json()
    assert one["ImageScale"]["input"]["required"]["width"][1]["max"] == 16384
    assert requests.get(f"{fake_comfy.url}/queue").json() == {"queue_running": [], "queue_pending": []}


def test_catalogue_is_the_pinned_files_entries(fake_comfy: FakeComfyUI) -> None:
    # With an empty input folder the file lists are the pinned file's empty ones: every entry is
    # served (and checked against) exactly as the pinned stack declares it.
    pinned = json.loads((REPO / "workflows" / "object_info_pinned.json").read_text())["nodes"]
    info = requests.get(f"{fake_comfy.url}/object_info", timeout=10).json()
    assert info == {name: pinned[name] for name in info}

    (fake_comfy.input_dir / "b.mp4").write_bytes(b"x")
    (fake_comfy.input_dir / "a.png").write_bytes(b"x")
    info = requests.get(f"{fake_comfy.url}/object_info", timeout=10).json()
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["a.png"]
    assert info["LoadVideo"]["input"]["required"]["file"][1]["options"] == ["b.mp4"]


@pytest.mark.parametrize(
    ("fault", "params", "expected"),
    [
        ("wrong_size", {}, {"size": (160, 90)}),
        ("wrong_fps", {"fps": 30}, {"fps": "30/1"}),
        ("wrong_frames", {}, {"frames": "23"}),
        ("drop_audio", {}, {"audio": False}),
    ],
)
def test_output_faults_change_the_written_file(
    fake_comfy: FakeComfyUI,
    staged: tuple[str, str],
    fault: str,
    params: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    image, video = staged
    fake_comfy.set_fault(fault, **params)
    _, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video))
    output = history(fake_comfy, prompt_id)[prompt_id]["outputs"]["7"]["images"][0]
    probe = probe_video(fake_comfy.output_dir / output["subfolder"] / output["filename"])
    actual = {
        "size": (probe["video"]["width"], probe["video"]["height"]),
        "fps": probe["video"]["avg_frame_rate"],
        "frames": probe["video"]["nb_frames"],
        "audio": probe["audio"] is not None,
    }
    normal = {"size": (320, 180), "fps": "24/1", "frames": "24", "audio": True}
    assert actual == {**normal, **expected}


def test_runtime_faults_and_progress_messages(fake_comfy: FakeComfyUI, staged: tuple[str, str]) -> None:
    image, video = staged
    fake_comfy.set_fault("progress", node="6", steps=3, step_s=0.01)
    messages, _ = run_prompt(fake_comfy, model_free_graph(image=image, video=video))
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "6"), (2, 3, "6"), (3, 3, "6")]
    assert all(set(p) == {"value", "max", "prompt_id", "node"} for p in progress)
    binary = [m["data"] for m in messages if m["type"] == "binary"]
    assert len(binary) == 3 and binary[0][:8] == b"\x00\x00\x00\x01\x00\x00\x00\x01"

    fake_comfy.set_fault("oom", node="7")  # a cached node would not run, nor fail
    messages, _ = run_prompt(fake_comfy, model_free_graph(image=image, video=video, prefix="tests/oom"))
    error = messages[-3]["data"]
    assert (error["node_id"], error["exception_type"]) == ("7", "torch.OutOfMemoryError")
    assert "out of memory" in error["exception_message"]


def test_command_line_server_serves_and_takes_faults(tmp_path: Path) -> None:
    port = unused_port()
    command = [sys.executable, "-m", "localdev.fake_comfyui", "--port", str(port)]
    command += ["--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()  # "" if it exited instead
        assert f"http://127.0.0.1:{port}" in ready and "fake" in ready
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/system_stats").json()["system"]["comfyui_version"] == "0.33.0-fake"
        reply = requests.post(f"{base}/fake/fault", json={"kind": "oom", "times": 2, "node": "6"})
        assert reply.json() == {"faults": [{"kind": "oom", "remaining": 2, "node": "6"}]}
        assert requests.post(f"{base}/fake/fault", json={"kind": "nope"}).status_code == 400
        assert requests.post(f"{base}/fake/fault", json={"clear": True}).json() == {"faults": []}
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0


# -- ImageFromBatch, ImageCompositeMasked, WanWorkerSaveChunk and the chunked stand-in ------------

CORE_OBJECT_INFO = REPO.parent / "shared" / "comfyui" / "object_info_core_0.33.0.json"
REPO_NODES_CATALOGUE = REPO / "comfyui_nodes" / "wan_worker_nodes" / "catalogue.json"
CHUNKED_WORKFLOW = REPO / "workflows" / "model_free_chunked.json"
# the driving video of these tests: COLOURED_FRAMES frames of one flat colour each, all different
COLOURED_FRAMES, SMALL = 32, (64, 48)
INSET = (240, 30, 200)  # the pasted still
STILL_DESTINATION = (20, 60, 230)
# H.264 (yuv420p) and back to RGB moves a flat colour by a few levels; neighbouring frames differ
# by 8 in red and green and by 53 in blue, so a frame out of place is far outside this
YUV_TOLERANCE = 5


def driving_colour(k: int) -> tuple[int, int, int]:
    return (8 * k, 255 - 8 * k, 53 * k % 256)


@dataclass(frozen=True)
class ChunkMedia:
    coloured_mp4: Path  # 64x48, 24 fps, COLOURED_FRAMES frames: frame k is driving_colour(k)
    inset_png: Path  # 24x16, INSET
    avatar_png: Path  # 400x300, INSET (what the chunked stand-in scales to its 320x180 inset)
    still_png: Path  # 64x48, STILL_DESTINATION


@pytest.fixture(scope="module")
def chunk_media(tmp_path_factory: pytest.TempPathFactory) -> ChunkMedia:
    folder = tmp_path_factory.mktemp("chunk-media")
    coloured = folder / "coloured.mp4"
    colours = "format=gbrp,geq=r='8*N':g='255-8*N':b='mod(53*N\\,256)'"
    source = f"color=c=black:s={SMALL[0]}x{SMALL[1]}:r=24,{colours}"
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", source]
    command += ["-frames:v", str(COLOURED_FRAMES), "-c:v", "libx264", "-preset", "ultrafast", "-crf", "10"]
    subprocess.run(
        [*command, "-pix_fmt", "yuv420p", str(coloured)],
        check=True,
        timeout=60,
    )
    pictures = {"inset.png": ((24, 16), INSET), "avatar.png": ((400, 300), INSET)}
    pictures["still.png"] = (SMALL, STILL_DESTINATION)
    for name, (size, colour) in pictures.items():
        Image.new("RGB", size, colour).save(folder / name)
    return ChunkMedia(coloured, folder / "inset.png", folder / "avatar.png", folder / "still.png")


def stage(server: FakeComfyUI, *paths: Path) -> None:
    for path in paths:
        shutil.copyfile(path, server.input_dir / path.name)


def coloured_frames_graph(
    nodes: dict[str, Any] | None = None, *, images: str = "2", prefix: str = "tests/chunk"
) -> dict[str, Any]:
    """Nodes "1", "2": the coloured video's frames ("2", 0); then ``nodes``; then
    WanWorkerSaveChunk "9" of (``images``, 0)."""
    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "coloured.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        **(nodes or {}),
        "9": {
            "class_type": "WanWorkerSaveChunk",
            "inputs": {"images": [images, 0], "filename_prefix": prefix, "motion_frames": 5},
        },
    }


def from_batch(batch_index: int, length: int, image: list[Any]) -> dict[str, Any]:
    return {
        "class_type": "ImageFromBatch",
        "inputs": {"image": image, "batch_index": batch_index, "length": length},
    }


def cut_graph(batch_index: int, length: int, prefix: str = "tests/chunk") -> dict[str, Any]:
    """The coloured frames through one ImageFromBatch "3" into WanWorkerSaveChunk "9"."""
    return coloured_frames_graph({"3": from_batch(batch_index, length, ["2", 0])}, images="3", prefix=prefix)


def composite(destination: list[Any], source: list[Any], x: int, y: int, **extra: Any) -> dict[str, Any]:
    inputs = {"destination": destination, "source": source, "x": x, "y": y, "resize_source": False}
    return {"class_type": "ImageCompositeMasked", "inputs": {**inputs, **extra}}


def run_chunk(server: FakeComfyUI, graph: dict[str, Any], save: str = "9") -> tuple[dict[str, Any], Path]:
    """Runs the graph; the save node's history output and the file it names."""
    messages, prompt_id = run_prompt(server, graph)
    assert messages[-3]["type"] == "execution_success", messages[-3]
    executed = [m["data"]["output"] for m in messages if m["type"] == "executed"]
    output = history(server, prompt_id)[prompt_id]["outputs"][save]
    assert executed == [output]
    image = output["images"][0]
    return output, server.output_dir / image["subfolder"] / image["filename"]


def frames_of(path: Path, width: int, height: int) -> np.ndarray:
    data = np.fromfile(path, dtype=np.uint8)
    assert data.size % (width * height * 3) == 0, data.size
    return data.reshape(-1, height, width, 3)


def mean_colour(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


def assert_colour(pixels: np.ndarray, expected: tuple[int, int, int], tolerance: float, what: str) -> None:
    actual = mean_colour(pixels)
    assert np.abs(actual - np.array(expected)).max() <= tolerance, (what, actual.round(1), expected)


def assert_driving_frames(frames: np.ndarray, expected: list[int]) -> None:
    assert len(frames) == len(expected)
    for frame, k in zip(frames, expected, strict=True):
        assert_colour(frame, driving_colour(k), YUV_TOLERANCE, f"driving frame {k}")


@pytest.mark.parametrize(
    ("cuts", "expected"),
    [
        ([(5, 4)], [5, 6, 7, 8]),
        ([(30, 10)], [30, 31]),  # cut to what is left
        ([(99, 3)], [31]),  # past the end: the last frame
        ([(-3, 2)], [29, 30]),  # negative: from the end
        ([(-99, 2)], [0, 1]),  # before the start: the first frames
        ([(4, 20), (3, 5)], [7, 8, 9, 10, 11]),  # a range of a range
    ],
)
def test_image_from_batch_cuts_the_frames_the_real_node_cuts(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia, cuts: list[tuple[int, int]], expected: list[int]
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    nodes = {str(3 + n): from_batch(index, length, [str(2 + n), 0]) for n, (index, length) in enumerate(cuts)}
    graph = coloured_frames_graph(nodes, images=str(2 + len(cuts)))
    output, path = run_chunk(fake_comfy, graph)
    assert output["wan_chunk"] == [{"width": 64, "height": 48, "frames": len(expected), "motion_frames": 0}]
    assert path.stat().st_size == 64 * 48 * 3 * len(expected)
    assert_driving_frames(frames_of(path, *SMALL), expected)


def test_image_from_batch_of_a_repeated_still(fake_comfy: FakeComfyUI, chunk_media: ChunkMedia) -> None:
    stage(fake_comfy, chunk_media.still_png)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "still.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 5}},
        "3": from_batch(3, 10, ["2", 0]),
        "9": {
            "class_type": "WanWorkerSaveChunk",
            "inputs": {"images": ["3", 0], "filename_prefix": "tests/still", "motion_frames": 1},
        },
    }
    output, path = run_chunk(fake_comfy, graph)
    assert output["wan_chunk"][0]["frames"] == 2
    frames = frames_of(path, *SMALL)
    assert len(frames) == 2 and (frames == np.array(STILL_DESTINATION, dtype=np.uint8)).all()


@pytest.mark.parametrize(
    ("x", "y", "pasted"),
    [
        (8, 4, (8, 4, 32, 20)),  # the whole 24x16 still
        (52, 40, (52, 40, 64, 48)),  # cut at the right and bottom edges: 12x8 of it
        (64, 10, None),  # at the edge: nothing
        (500, 500, None),  # past it (clamped to the edge, as the real node does): nothing
    ],
)
def test_composite_pastes_the_still_on_every_video_frame(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia, x: int, y: int, pasted: tuple[int, int, int, int] | None
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4, chunk_media.inset_png)
    nodes = {
        "3": composite(["2", 0], ["4", 0], x, y),
        "4": {"class_type": "LoadImage", "inputs": {"image": "inset.png"}},
        "5": from_batch(10, 3, ["3", 0]),
    }
    output, path = run_chunk(fake_comfy, coloured_frames_graph(nodes, images="5"))
    assert output["wan_chunk"][0]["frames"] == 3
    for k, frame in zip((10, 11, 12), frames_of(path, *SMALL), strict=True):
        inside = np.zeros(frame.shape[:2], dtype=bool)
        if pasted is not None:
            left, top, right, bottom = pasted
            inside[top:bottom, left:right] = True
            assert (frame[inside] == np.array(INSET, dtype=np.uint8)).all(), f"frame {k}: the still"
        assert_colour(frame[~inside], driving_colour(k), YUV_TOLERANCE, f"frame {k} around the still")
        # every pixel outside, not only on average (the edges of the paste included)
        assert np.abs(frame[~inside].astype(int) - driving_colour(k)).max() <= 2 * YUV_TOLERANCE


def test_composite_onto_a_still_cuts_at_the_edges(fake_comfy: FakeComfyUI, chunk_media: ChunkMedia) -> None:
    stage(fake_comfy, chunk_media.still_png, chunk_media.inset_png)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "still.png"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "inset.png"}},
        "3": composite(["1", 0], ["2", 0], 50, 40),
        "9": {
            "class_type": "WanWorkerSaveChunk",
            "inputs": {"images": ["3", 0], "filename_prefix": "tests/still", "motion_frames": 1},
        },
    }
    _, path = run_chunk(fake_comfy, graph)
    (frame,) = frames_of(path, *SMALL)
    expected = np.empty_like(frame)
    expected[:] = STILL_DESTINATION
    expected[40:48, 50:64] = INSET
    assert (frame == expected).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask": ["4", 1]}, "the fake ComfyUI composites without a mask only\n"),
        ({"resize_source": True}, "the fake ComfyUI pastes the source at its own size only\n"),
        ({"source": ["2", 0]}, "the fake ComfyUI pastes a still source only, not a video's frames\n"),
    ],
)
def test_composite_refuses_what_the_fake_cannot_do(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia, change: dict[str, Any], message: str
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4, chunk_media.inset_png)
    nodes = {
        "3": composite(["2", 0], ["4", 0], 0, 0),
        "4": {"class_type": "LoadImage", "inputs": {"image": "inset.png"}},
    }
    graph = coloured_frames_graph(nodes, images="3")
    graph["3"]["inputs"].update(change)
    messages, _ = run_prompt(fake_comfy, graph)
    error = messages[-3]["data"]
    assert (messages[-3]["type"], error["node_id"], error["exception_type"]) == (
        "execution_error",
        "3",
        "NotImplementedError",
    )
    assert error["exception_message"] == message
    assert output_files(fake_comfy) == []


def test_repeat_of_a_video_frame_range_is_refused(fake_comfy: FakeComfyUI, chunk_media: ChunkMedia) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    nodes = {
        "3": from_batch(2, 3, ["2", 0]),
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["3", 0], "amount": 2}},
    }
    messages, _ = run_prompt(fake_comfy, coloured_frames_graph(nodes, images="4"))
    error = messages[-3]["data"]
    assert (error["node_id"], error["exception_type"], error["exception_message"]) == (
        "4",
        "NotImplementedError",
        "the fake ComfyUI cannot repeat a frame range of a video (ImageFromBatch)\n",
    )


def test_save_chunk_writes_every_frame_raw_in_order(fake_comfy: FakeComfyUI, chunk_media: ChunkMedia) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    messages, prompt_id = run_prompt(fake_comfy, coloured_frames_graph())
    executed = next(m for m in messages if m["type"] == "executed")["data"]
    expected = {
        "images": [{"filename": "chunk_00001_.rgb", "subfolder": "tests", "type": "output"}],
        "wan_chunk": [{"width": 64, "height": 48, "frames": COLOURED_FRAMES, "motion_frames": 0}],
    }
    assert (executed["node"], executed["output"]) == ("9", expected)
    assert history(fake_comfy, prompt_id)[prompt_id]["outputs"] == {"9": expected}
    path = fake_comfy.output_dir / "tests" / "chunk_00001_.rgb"
    assert output_files(fake_comfy) == [path]  # no partial file left behind
    assert path.stat().st_size == 64 * 48 * 3 * COLOURED_FRAMES
    assert_driving_frames(frames_of(path, *SMALL), list(range(COLOURED_FRAMES)))
    view = requests.get(
        f"{fake_comfy.url}/view",
        params={"filename": "chunk_00001_.rgb", "subfolder": "tests", "type": "output"},
        timeout=10,
    )
    assert view.status_code == 200 and view.content == path.read_bytes()

    # the counter goes on from the files already there, whatever their kind
    (fake_comfy.output_dir / "tests" / "chunk_00007_.mp4").write_bytes(b"")
    output, second = run_chunk(fake_comfy, cut_graph(0, 2))
    assert second.name == "chunk_00008_.rgb" and output["wan_chunk"][0]["frames"] == 2


def test_save_chunk_refuses_motion_frames_and_prefixes_outside_the_output_folder(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    graph = coloured_frames_graph()
    graph["9"]["inputs"]["motion"] = ["2", 0]
    messages, _ = run_prompt(fake_comfy, graph)
    error = messages[-3]["data"]
    assert (error["node_id"], error["exception_type"], error["exception_message"]) == (
        "9",
        "NotImplementedError",
        "the fake ComfyUI does not write motion frames\n",
    )

    messages, _ = run_prompt(fake_comfy, coloured_frames_graph(prefix="../escape/chunk"))
    error = messages[-3]["data"]
    assert (error["node_id"], error["exception_type"]) == ("9", "Exception")
    assert "Saving image outside the output folder is not allowed" in error["exception_message"]
    assert output_files(fake_comfy) == [] and not (fake_comfy.output_dir.parent / "escape").exists()


@pytest.mark.parametrize(
    ("fault", "params", "size", "frames", "last_frame"),
    [
        ("wrong_frames", {}, (64, 48), 3, 12),
        ("wrong_frames", {"frames": 6}, (64, 48), 6, 13),  # more than there are: the last repeated
        ("wrong_size", {}, (32, 24), 4, 13),
        ("wrong_size", {"width": 40, "height": 30}, (40, 30), 4, 13),
        ("wrong_fps", {"fps": 30}, (64, 48), 4, 13),  # no meaning for raw frames
        ("drop_audio", {}, (64, 48), 4, 13),
    ],
)
def test_output_faults_change_the_written_chunk(
    fake_comfy: FakeComfyUI,
    chunk_media: ChunkMedia,
    comfy_media: ComfyMedia,
    fault: str,
    params: dict[str, Any],
    size: tuple[int, int],
    frames: int,
    last_frame: int,
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    fake_comfy.set_fault(fault, **params)
    output, path = run_chunk(fake_comfy, cut_graph(10, 4))
    assert output["wan_chunk"] == [
        {"width": size[0], "height": size[1], "frames": frames, "motion_frames": 0}
    ]
    written = frames_of(path, *size)
    assert len(written) == frames
    assert_driving_frames(written[:3], [10, 11, 12])
    assert_colour(written[-1], driving_colour(last_frame), YUV_TOLERANCE, "the last frame")

    # the fault was for one prompt: taken by this save, not left for the next one's SaveVideo
    image, video = stage_inputs(fake_comfy, comfy_media.avatar_png, comfy_media.driving_mp4)
    _, prompt_id = run_prompt(fake_comfy, model_free_graph(image=image, video=video))
    output = history(fake_comfy, prompt_id)[prompt_id]["outputs"]["7"]["images"][0]
    probe = probe_video(fake_comfy.output_dir / output["subfolder"] / output["filename"])
    normal = ((320, 180), "24/1", "24", True)
    assert (
        (probe["video"]["width"], probe["video"]["height"]),
        probe["video"]["avg_frame_rate"],
        probe["video"]["nb_frames"],
        probe["audio"] is not None,
    ) == normal


def test_save_chunk_is_cached_and_rerun_like_save_video(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4)
    first, path = run_chunk(fake_comfy, cut_graph(0, 5))
    written = path.read_bytes()

    messages, prompt_id = run_prompt(fake_comfy, cut_graph(0, 5))
    assert [label(m) for m in messages] == [
        *CACHED_RERUN_SEQUENCE[:5],
        "executed(node=9)",
        *CACHED_RERUN_SEQUENCE[6:],
    ]
    assert history(fake_comfy, prompt_id)[prompt_id]["outputs"] == {"9": first}

    fake_comfy.set_fault("cached_rerun")
    messages, prompt_id = run_prompt(fake_comfy, cut_graph(3, 2))
    assert next(m for m in messages if m["type"] == "execution_cached")["data"]["nodes"] == [
        "1",
        "2",
        "3",
        "9",
    ]
    assert history(fake_comfy, prompt_id)[prompt_id]["outputs"] == {"9": first}
    assert output_files(fake_comfy) == [path] and path.read_bytes() == written

    # without the fault the new range runs: a new file
    second, new_path = run_chunk(fake_comfy, cut_graph(3, 2))
    assert new_path.name == "chunk_00002_.rgb" and second["wan_chunk"][0]["frames"] == 2


def test_composited_frames_encode_through_save_video(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4, chunk_media.inset_png)
    graph = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "coloured.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "inset.png"}},
        "4": composite(["2", 0], ["3", 0], 8, 4),
        "5": from_batch(20, 6, ["4", 0]),
        "6": {"class_type": "CreateVideo", "inputs": {"images": ["5", 0], "fps": 24.0}},
        "7": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["6", 0], "filename_prefix": "tests/composite", "format": "mp4"},
        },
    }
    _, path = run_chunk(fake_comfy, graph, save="7")
    assert probe_video(path)["video"]["nb_frames"] == "6"
    decoded = fake_comfy.output_dir / "decoded.rgb"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            str(decoded),
        ],
        check=True,
        timeout=60,
    )
    for k, frame in zip(range(20, 26), frames_of(decoded, *SMALL), strict=True):
        assert_colour(frame[6:18, 10:30], INSET, 3 * YUV_TOLERANCE, f"frame {k}: the still")
        assert_colour(frame[24:, :], driving_colour(k), 3 * YUV_TOLERANCE, f"frame {k}: the driving frame")


def test_chunked_stand_in_workflow_runs_through_the_fake(
    fake_comfy: FakeComfyUI, chunk_media: ChunkMedia
) -> None:
    stage(fake_comfy, chunk_media.coloured_mp4, chunk_media.avatar_png)
    workflow = Workflow.load(CHUNKED_WORKFLOW)
    bindings = json.loads(CHUNKED_WORKFLOW.with_suffix(".bindings.json").read_text())
    assert (bindings["output"], bindings["chunks"]) == ({"node": "8", "kind": "frames"}, {"frames": 24})
    params = WorkflowParams(
        image="avatar.png",
        driving_video="coloured.mp4",
        frames=30,
        filename_prefix="wan-worker/job-1",
        seed=1,
        prompt="",
        negative_prompt="",
    )
    output, path = run_chunk(fake_comfy, workflow.build(params), save="8")
    assert output == {
        "images": [{"filename": "job-1_00001_.rgb", "subfolder": "wan-worker", "type": "output"}],
        "wan_chunk": [{"width": 1280, "height": 720, "frames": 30, "motion_frames": 0}],
    }
    assert path.stat().st_size == 1280 * 720 * 3 * 30
    inset = np.zeros((720, 1280), dtype=bool)
    inset[32:212, 32:352] = True  # the 320x180 avatar at 32, 32
    for k, frame in enumerate(frames_of(path, 1280, 720)):
        assert np.abs(frame[inset].astype(int) - INSET).max() <= 1, f"frame {k}: the avatar"
        assert_colour(frame[~inset], driving_colour(k), YUV_TOLERANCE, f"frame {k}: its driving frame")
        # the inset's edges: driving frame right outside it
        for x, y in ((31, 100), (352, 100), (200, 31), (200, 212)):
            assert np.abs(frame[y, x].astype(int) - driving_colour(k)).max() <= 2 * YUV_TOLERANCE, (k, x, y)


def test_new_classes_have_the_object_info_of_what_they_stand_for(fake_comfy: FakeComfyUI) -> None:
    info = requests.get(f"{fake_comfy.url}/object_info", timeout=10).json()
    keys = ["input", "input_order", "output", "output_name", "output_is_list", "output_node", "name"]
    keys += ["category", "display_name", "description", "python_module"]
    ours = json.loads(REPO_NODES_CATALOGUE.read_text())["WanWorkerSaveChunk"]
    assert {k: info["WanWorkerSaveChunk"][k] for k in keys} == {k: ours[k] for k in keys}
    if not CORE_OBJECT_INFO.is_file():
        pytest.skip("../shared is not beside the checkout")
    core = json.loads(CORE_OBJECT_INFO.read_text())
    for name in ("ImageFromBatch", "ImageCompositeMasked"):
        assert {k: info[name][k] for k in keys} == {k: core[name][k] for k in keys}, name
