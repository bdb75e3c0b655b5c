"""Driving videos that point at other files or URLs (issue 13): playlists, lists, image-sequence
patterns, reference movies and the like. Each is refused with INVALID_MEDIA by every ffprobe and
ffmpeg run the worker makes, and the file it names is never opened.

How "never opened" is proven: the named file is a FIFO watched by a thread (``Sentinel``). Opening a
FIFO for reading blocks until a writer comes, and the watcher is that writer: it polls with
``O_WRONLY | O_NONBLOCK``, which succeeds only while a reader is waiting, counts the open and closes
it again (the reader sees an empty file and goes on). So no reader can open the sentinel without
being counted, whatever the mount options (an access time is not updated under ``noatime``, and
only rarely under ``relatime``) and whatever the reader does next. The control tests run plain
ffprobe on the same files and see the sentinel opened: each attack is real, and the watcher sees it.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ffmpeg
import pytest

from localdev.fake_comfyui import FakeComfyUI
from localdev.media_fixtures import make_avatar_image, make_driving_video
from tests.support.comfy import worker_env
from worker.chunk_media import join_chunks
from worker.config import Settings
from worker.errors import ErrorCode, WorkerError
from worker.job import JobRunner
from worker.media import _run_ffmpeg, conform_driving_video, header_duration, media_input, probe_video


class Sentinel:
    """A FIFO at ``path`` that counts every open of it (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        self.opens = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading
                    raise
                time.sleep(0.002)
                continue
            self.opens += 1
            os.close(fd)  # the reader gets end-of-file
            time.sleep(0.002)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.opens


@dataclass(frozen=True)
class Attack:
    name: str
    # (job folder, a folder outside it) -> (the uploaded file, the file it points at)
    build: Callable[[Path, Path], tuple[Path, Path]]
    # The plain ffprobe arguments under which ffmpeg itself follows the reference (None: it does not,
    # by its own defaults: only the allow-list case is tested).
    control: list[str] | None = None
    # What the refusal says: ffmpeg took it for another format, or for no format at all.
    message: str = "not a video file"


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def _hls(segment: str, key_uri: str | None = None) -> str:
    key = f'#EXT-X-KEY:METHOD=AES-128,URI="{key_uri}"\n' if key_uri else ""
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n{key}#EXTINF:1,\n{segment}\n#EXT-X-ENDLIST\n"


def hls_plain_path(job: Path, outside: Path) -> tuple[Path, Path]:
    secret = outside / "secret.mp4"
    return _write(job / "driving.src", _hls(str(secret))), secret


def hls_file_url(job: Path, outside: Path) -> tuple[Path, Path]:
    secret = outside / "secret.mp4"
    return _write(job / "driving.src", _hls(f"file://{secret}")), secret


def hls_key_uri(job: Path, outside: Path) -> tuple[Path, Path]:
    """The decryption key's URI (read before the segment; ffmpeg's extension filter applies to it too)."""
    secret = outside / "secret.ts"
    _write(job / "segment.ts", b"\0" * 188)
    return _write(job / "driving.src", _hls("segment.ts", key_uri=f"file://{secret}")), secret


def hls_data_url_variant(job: Path, outside: Path) -> tuple[Path, Path]:
    """A master playlist whose variant is a data: URL of a playlist naming the file."""
    secret = outside / "secret.mp4"
    inner = base64.b64encode(_hls(f"file://{secret}").encode()).decode()
    master = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\ndata:application/vnd.apple.mpegurl;base64,{inner}\n"
    return _write(job / "driving.src", master), secret


def hls_subfile_protocol(job: Path, outside: Path) -> tuple[Path, Path]:
    secret = outside / "secret.mp4"
    return _write(job / "driving.src", _hls(f"subfile,,start,0,end,0,,:{secret}")), secret


def dash_manifest(job: Path, outside: Path) -> tuple[Path, Path]:
    secret = outside / "secret.mp4"
    mpd = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT1S" '
        'minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="video/mp4" contentType="video">'
        '<Representation id="1" bandwidth="1000" width="64" height="64" codecs="avc1.64000a">'
        f'<BaseURL>file://{secret}</BaseURL><SegmentBase indexRange="0-0"/>'
        "</Representation></AdaptationSet></Period></MPD>\n"
    )
    return _write(job / "driving.src", mpd), secret


def ffconcat_list(job: Path, outside: Path) -> tuple[Path, Path]:
    """The concat demuxer's safe mode allows names beside the list only: the file sits there."""
    return _write(job / "driving.src", "ffconcat version 1.0\nfile 'secret.mp4'\n"), job / "secret.mp4"


def ffconcat_absolute(job: Path, outside: Path) -> tuple[Path, Path]:
    secret = outside / "secret.mp4"
    return _write(job / "driving.src", f"ffconcat version 1.0\nfile '{secret}'\n"), secret


def image_sequence_pattern(job: Path, outside: Path) -> tuple[Path, Path]:
    """A file named like an image2 pattern: ffmpeg would read frame001.png, frame002.png, ..."""
    secret = job / "frame001.png"
    return _write(job / "frame%03d.png", b"not an image"), secret


def sdp_session(job: Path, outside: Path) -> tuple[Path, Path]:
    sdp = (
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\n"
        "m=video 45678 RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    )
    return _write(job / "driving.src", sdp), outside / "unused"


def imf_composition(job: Path, outside: Path) -> tuple[Path, Path]:
    """An IMF CPL reads ASSETMAP.xml beside it (ffmpeg 5.1 opens IMF only when forced: -f imf)."""
    uuid = "urn:uuid:8713c020-2489-45f5-a9f7-87be539e20b"
    cpl = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<CompositionPlaylist xmlns="http://www.smpte-ra.org/schemas/2067-3/2016">'
        f"<Id>{uuid}5</Id><ContentTitle>x</ContentTitle><EditRate>24 1</EditRate>"
        f"<SegmentList><Segment><Id>{uuid}6</Id><SequenceList>"
        '<MainImageSequence xmlns:cc="http://www.smpte-ra.org/schemas/2067-2/2016">'
        f"<Id>{uuid}7</Id><TrackId>{uuid}8</TrackId><ResourceList><Resource><Id>{uuid}9</Id>"
        "<EditRate>24 1</EditRate><IntrinsicDuration>24</IntrinsicDuration>"
        f"<TrackFileId>{uuid}a</TrackFileId></Resource></ResourceList></MainImageSequence>"
        "</SequenceList></Segment></SegmentList></CompositionPlaylist>\n"
    )
    return _write(job / "driving.src", cpl), job / "ASSETMAP.xml"


def ffmetadata_text(job: Path, outside: Path) -> tuple[Path, Path]:
    return _write(job / "driving.src", ";FFMETADATA1\ntitle=x\n"), outside / "unused"


def lavfi_graph_text(job: Path, outside: Path) -> tuple[Path, Path]:
    """What a lavfi input would read (lavfi is a device ffmpeg never picks by itself)."""
    secret = outside / "secret.mp4"
    return _write(job / "driving.src", f"movie={secret}[out0]\n"), secret


def quicktime_reference_movie(job: Path, outside: Path) -> tuple[Path, Path]:
    """A MOV whose track's data lives in another file (a dref 'alis' record), with no media of its own."""
    original = make_driving_video(outside / "made.mp4", seconds=0.5, width=64, height=64, audio=False)
    movie = _reference_movie(original.read_bytes(), target="secret.mp4")
    original.unlink()
    return _write(job / "driving.src", movie), job / "secret.mp4"


_MOV_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"dinf"}


def _reference_movie(mp4: bytes, *, target: str) -> bytes:
    """``mp4`` without its mdat, each track's data reference pointing at ``target`` beside it."""
    out, index = b"", 0
    while index < len(mp4):
        size, kind = struct.unpack(">I4s", mp4[index : index + 8])
        box = mp4[index : index + size]
        index += size
        if kind == b"mdat":
            continue
        if kind in _MOV_CONTAINERS:
            inner = _reference_movie(box[8:], target=target)
            box = struct.pack(">I4s", 8 + len(inner), kind) + inner
        elif kind == b"dref":
            entry = _alias_record(target)
            box = struct.pack(">I4sII", 16 + len(entry), b"dref", 0, 1) + entry
        out += box
    return out


def _alias_record(target: str) -> bytes:
    """A QuickTime 'alis' data reference as ffmpeg's mov demuxer parses it: a volume, a file
    name, one level up and down (the target sits beside the movie), the path as record 2."""
    name = target.encode()
    body = b"\0" * 10 + bytes([3]) + b"vol".ljust(27, b"\0") + b"\0" * 12
    body += bytes([len(name)]) + name.ljust(63, b"\0") + b"\0" * 16
    body += struct.pack(">HH", 1, 1) + b"\0" * 16
    body += struct.pack(">hH", 2, len(name)) + name + (b"\0" if len(name) % 2 else b"")
    body += struct.pack(">hH", -1, 0)
    return struct.pack(">I4sI", 12 + len(body), b"alis", 0) + body


PLAIN = ["-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json"]
ATTACKS = [
    Attack("hls-path", hls_plain_path, PLAIN),
    Attack("hls-file-url", hls_file_url, PLAIN),
    Attack("hls-key-uri", hls_key_uri, PLAIN),
    Attack("hls-data-url-variant", hls_data_url_variant, PLAIN),
    Attack("hls-subfile-protocol", hls_subfile_protocol),
    Attack("dash-manifest", dash_manifest, PLAIN),
    Attack("ffconcat-list", ffconcat_list, PLAIN),
    Attack("ffconcat-absolute", ffconcat_absolute),
    Attack("image-sequence-pattern", image_sequence_pattern, PLAIN),
    Attack("sdp-session", sdp_session),
    Attack("imf-composition", imf_composition, ["-f", "imf", *PLAIN], message="cannot be read"),
    Attack("ffmetadata", ffmetadata_text),
    Attack("lavfi-graph-text", lavfi_graph_text, message="cannot be read"),
    # A mov: its referenced track is skipped, which leaves a track without frames.
    Attack(
        "quicktime-reference-movie",
        quicktime_reference_movie,
        ["-enable_drefs", "1", *PLAIN],
        message="without any frame",
    ),
]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    job, outside = tmp_path / "job", tmp_path / "elsewhere"
    job.mkdir()
    outside.mkdir()
    return job, outside


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.control], ids=lambda a: a.name)
def test_plain_ffprobe_opens_what_the_file_names(attack: Attack, folders: tuple[Path, Path]) -> None:
    """The control: without the worker's allow-lists ffmpeg does open the named file, and the
    sentinel sees it (so its zero in the next test means something)."""
    uploaded, target = attack.build(*folders)
    sentinel = Sentinel(target)
    try:
        subprocess.run(["ffprobe", *(attack.control or []), str(uploaded)], capture_output=True, timeout=60)
    finally:
        opens = sentinel.stop()
    assert opens >= 1


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_the_worker_refuses_it_without_opening_what_it_names(
    attack: Attack, folders: tuple[Path, Path]
) -> None:
    job, _ = folders
    uploaded, target = attack.build(*folders)
    sentinel = Sentinel(target)
    try:
        with pytest.raises(WorkerError) as probed:
            probe_video(uploaded)
        with pytest.raises(WorkerError) as conformed:
            conform_driving_video(uploaded, job / "out" / "driving.mp4", max_duration_s=60)
        # The second line on its own: ffmpeg given the file directly (no probe first) refuses it too.
        with pytest.raises(WorkerError) as converted:
            _run_ffmpeg(
                ffmpeg.output(media_input(uploaded).video, str(job / "direct.mp4"), f="mp4"),
                what="the driving video",
                paths=[uploaded],
            )
    finally:
        opens = sentinel.stop()
    assert opens == 0
    for caught in (probed, conformed, converted):
        assert caught.value.code is ErrorCode.INVALID_MEDIA
        assert caught.value.retryable is False
    assert attack.message in probed.value.message
    assert str(job) not in probed.value.message  # no local paths in what the user sees
    assert not (job / "out").exists() or list((job / "out").iterdir()) == []


def test_a_chunk_join_does_not_follow_a_playlist_given_as_a_part(folders: tuple[Path, Path]) -> None:
    """The concat demuxer passes the allow-lists on to the parts it opens. (A later part that cannot
    be opened ends the join early without an error: the output's frame count check catches that.)"""
    job, outside = folders
    playlist, secret = hls_plain_path(job, outside)
    part = make_driving_video(job / "part.mp4", seconds=0.5, width=64, height=64, audio=False)
    sentinel = Sentinel(secret)
    try:
        with pytest.raises(WorkerError) as caught:
            join_chunks([playlist, part], job / "joined.mp4", fps=24)
    finally:
        opens = sentinel.stop()
    assert opens == 0
    assert caught.value.code is ErrorCode.OUTPUT_INVALID
    assert not (job / "joined.mp4").exists()


def test_an_ffmpeg_input_without_the_allow_lists_is_refused(tmp_path: Path) -> None:
    video = make_driving_video(tmp_path / "v.mp4", seconds=0.5, width=64, height=64, audio=False)
    with pytest.raises(ValueError, match="media_input"):
        _run_ffmpeg(ffmpeg.output(ffmpeg.input(str(video)), str(tmp_path / "o.mp4")), what="x", paths=[])


@pytest.mark.parametrize(
    ("suffix", "codec", "extra"),
    [
        (".mov", "libx264", []),
        (".mkv", "libx264", []),
        (".webm", "libvpx-vp9", ["-b:v", "200k", "-deadline", "realtime", "-cpu-used", "8"]),
    ],
)
def test_mov_mkv_and_webm_videos_are_still_accepted(
    tmp_path: Path, suffix: str, codec: str, extra: list[str]
) -> None:
    source = tmp_path / f"driving{suffix}"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=24:duration=0.5"),
            *("-c:v", codec, "-pix_fmt", "yuv420p", *extra, str(source)),
        ],
        check=True,
        timeout=120,
    )
    driving = conform_driving_video(source, tmp_path / "out" / "driving.mp4", max_duration_s=60)
    assert (driving.frames, driving.info.width, driving.info.height) == (12, 1280, 720)


# -- the header probe over HTTP, and a whole job --------------------------------------------------


class _Canary(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def canary() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1 that records every request (an internal service to reach)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    server.hits = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_header_probe_does_not_follow_a_playlist_to_another_url(
    s3: Any, canary: ThreadingHTTPServer
) -> None:
    """Before any download the worker reads the driving video's header over HTTP from MinIO; a
    playlist there naming an internal URL must not make ffprobe request it."""
    internal = f"http://127.0.0.1:{canary.server_address[1]}/internal/secret.mp4"
    s3.put("inputs/playlist.mp4", _hls(internal).encode())
    url = s3.storage.internal_get_url("inputs/playlist.mp4")

    assert header_duration(url) is None
    assert canary.hits == []  # type: ignore[attr-defined]

    # The control: the probe as it was (protocols allow-listed, demuxers not) requests the URL.
    subprocess.run(
        ["ffprobe", "-v", "error", "-protocol_whitelist", "http,https,tcp,tls", "-show_format", url],
        capture_output=True,
        timeout=60,
    )
    assert canary.hits == ["/internal/secret.mp4"]  # type: ignore[attr-defined]


def test_a_job_whose_driving_video_is_a_playlist_fails_without_reading_the_named_file(
    s3: Any, s3_env: dict[str, str], fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """The reported attack, end to end: a 100-byte HLS playlist naming a video on the worker's disk."""
    secret = tmp_path / "worker-disk" / "someone-elses.mp4"
    s3.put("inputs/avatar.png", make_avatar_image(tmp_path / "avatar.png", width=300, height=400))
    s3.put("inputs/talk.mp4", _hls(str(secret)).encode())
    env = worker_env(s3_env, fake_comfy, tmp_path / "work", "workflows/model_free_still.json")
    runner = JobRunner(Settings.from_env(env))
    before = s3.snapshot()
    sentinel = Sentinel(secret)
    try:
        result = runner.run(
            "job-playlist",
            {"input_image_minio_path": "inputs/avatar.png", "driving_video_path": "inputs/talk.mp4"},
            lambda update: None,
        )
    finally:
        opens = sentinel.stop()
    assert opens == 0
    assert result["error_code"] == "INVALID_MEDIA", result
    assert "HLS playlist" in result["error"]
    assert result["details"]["retryable"] is False
    assert s3.snapshot() == before  # nothing written, the input untouched
    assert fake_comfy.history() == {}  # nothing reached ComfyUI
    assert str(secret) not in json.dumps(result)
