"""Chunk media on real ffmpeg: slices decode to exactly the clip's frames (reflection included),
raw frames encode to the output format, and chunk videos join by stream copy in order."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from worker.chunk_media import check_chunk, cut_slice, encode_frames, join_chunks
from worker.errors import WorkerError
from worker.graph.chunks import Chunk, slice_indices
from worker.media import conform_driving_video, probe_video
from worker.probe import ffprobe

W, H, FPS = 1280, 720, 24
FRAME_BYTES = W * H * 3


def decode(path: Path) -> list[bytes]:
    """Every frame of ``path`` as rgb24 bytes."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return [raw[i : i + FRAME_BYTES] for i in range(0, len(raw), FRAME_BYTES)]


@pytest.fixture(scope="module")
def conformed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    folder = tmp_path_factory.mktemp("chunk-media")
    source = folder / "source.mp4"
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={W}x{H}:rate={FPS}:duration=4"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(source)),
        ],
        check=True,
    )
    driving = conform_driving_video(source, folder / "driving.mp4", max_duration_s=60)
    assert driving.frames == 96
    return driving.path, decode(driving.path)


@pytest.mark.parametrize(("start", "real", "reflected"), [(0, 40, 0), (35, 30, 0), (72, 24, 20)])
def test_a_slice_decodes_to_exactly_the_clips_frames(conformed, tmp_path, start, real, reflected):
    path, frames = conformed
    chunk = Chunk(1, 1, 0, (), start, real, reflected, real, 0)
    out = tmp_path / "slice.mp4"
    assert cut_slice(
        path, out, start=start, real_frames=real, reflected=reflected, total_frames=96, fps=FPS
    ) == (real + reflected)
    got = decode(out)
    expected = [frames[i] for i in slice_indices(chunk, 96)]
    assert len(got) == len(expected)
    assert [i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b] == []
    if reflected:
        assert got[real] == frames[94] and got[real + 1] == frames[93]  # back from the last frame


def test_a_slice_outside_the_clip_is_refused(conformed, tmp_path):
    path, _ = conformed
    with pytest.raises(ValueError):
        cut_slice(path, tmp_path / "x.mp4", start=90, real_frames=10, reflected=0, total_frames=96, fps=FPS)


def test_raw_frames_encode_and_chunks_join_in_order(conformed, tmp_path):
    _, frames = conformed
    parts = []
    for number, (first, count) in enumerate([(0, 30), (30, 40), (70, 26)], start=1):
        raw = tmp_path / f"chunk{number}.rgb"
        raw.write_bytes(b"".join(frames[first : first + count]))
        parts.append(tmp_path / f"chunk{number}.mp4")
        encode_frames(raw, parts[-1], width=W, height=H, frames=count, fps=FPS)
    joined = tmp_path / "joined.mp4"
    join_chunks(parts, joined, fps=FPS)
    info = probe_video(joined)
    assert (info.frames, info.video_codec, info.pix_fmt, info.fps) == (96, "h264", "yuv420p", FPS)
    got = decode(joined)
    assert len(got) == 96
    # Lossy (CRF 17), so each frame is compared with its source and with its neighbours: it must
    # be nearest to its own source frame (order kept across the joins).
    for index in (0, 29, 30, 31, 69, 70, 95):
        errors = {k: _mean_abs(got[index], frames[k]) for k in range(max(0, index - 2), min(96, index + 3))}
        assert min(errors, key=errors.__getitem__) == index, (index, errors)
        assert errors[index] < 2.0, (index, errors[index])


def test_a_raw_file_of_the_wrong_size_is_refused(tmp_path):
    raw = tmp_path / "short.rgb"
    raw.write_bytes(b"\0" * (FRAME_BYTES * 2 - 1))
    with pytest.raises(WorkerError) as caught:
        encode_frames(raw, tmp_path / "out.mp4", width=W, height=H, frames=2, fps=FPS)
    assert caught.value.code.value == "OUTPUT_INVALID" and not (tmp_path / "out.mp4").exists()


def test_check_chunk_names_what_differs(conformed):
    path, _ = conformed
    with pytest.raises(WorkerError, match="with 96 frames, expected h264 yuv420p 1280x720 with 95"):
        check_chunk(path, frames=95, width=W, height=H)


def _mean_abs(a: bytes, b: bytes) -> float:
    step = 97  # a sparse sample is enough to tell neighbouring test-card frames apart
    return sum(abs(x - y) for x, y in zip(a[::step], b[::step], strict=True)) / len(a[::step])


def test_the_workers_encode_keeps_colours_as_saved(tmp_path):
    """As SaveVideo did for the pinned graph: RGB to BT.709 limited range, tagged BT.709; decoded by
    its tags, a flat patch comes back within 2 levels (an untagged or BT.601 encode of this green
    comes back ~10 levels off)."""
    patches = [(32, 192, 64), (200, 40, 40), (40, 40, 200), (128, 128, 128), (16, 16, 16), (235, 235, 235)]
    frame = bytearray()
    band = W // len(patches)
    for _row in range(H):
        for x in range(W):
            frame += bytes(patches[min(x // band, len(patches) - 1)])
    raw = tmp_path / "flat.rgb"
    raw.write_bytes(bytes(frame) * 2)
    out = tmp_path / "flat.mp4"
    encode_frames(raw, out, width=W, height=H, frames=2, fps=FPS)
    (stream,) = ffprobe(out)["streams"]
    tags = {
        key: stream.get(key) for key in ("color_range", "color_space", "color_transfer", "color_primaries")
    }
    assert tags == {
        "color_range": "tv",
        "color_space": "bt709",
        "color_transfer": "bt709",
        "color_primaries": "bt709",
    }
    decoded = decode(out)[0]
    for number, colour in enumerate(patches):
        x, y = number * band + band // 2, H // 2
        pixel = decoded[(y * W + x) * 3 : (y * W + x) * 3 + 3]
        assert max(abs(a - b) for a, b in zip(pixel, colour, strict=True)) <= 2, (colour, tuple(pixel))
