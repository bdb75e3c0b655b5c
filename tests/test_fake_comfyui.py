"""The fake ComfyUI says what a real ComfyUI 0.33.0 says.

The expected sequences and bodies below are copied from the traces recorded on a real server
(``/work/shared/comfyui/captures/*.json``, named at each constant); the tests drive the fake
over real sockets with a plain websocket client and compare.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from localdev.fake_comfyui import FakeComfyUI
from tests.support.comfy import ComfyMedia, model_free_graph, probe_video, stage_inputs, unused_port

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
        "CreateVideo",
        "SaveVideo",
    }
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["a.png"]
    assert info["SaveVideo"]["output_node"] is True
    one = requests.get(f"{fake_comfy.url}/object_info/ImageScale").json()
    assert one["ImageScale"]["input"]["required"]["width"][1]["max"] == 16384
    assert requests.get(f"{fake_comfy.url}/queue").json() == {"queue_running": [], "queue_pending": []}


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
