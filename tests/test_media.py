"""worker.media against real Pillow and real ffmpeg/ffprobe on media generated here."""

from __future__ import annotations

import os
import re
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from localdev.media_fixtures import (
    make_bomb_png,
    make_corrupt_image,
    make_driving_video,
    make_truncated_file,
    make_truncated_mp4,
)
from tests.support.media import extract_frame, file_sha256, stream_facts
from worker.contract import frames_for
from worker.errors import ErrorCode, WorkerError
from worker.media import (
    DrivingVideo,
    conform_driving_video,
    cpu_threads,
    finalize_output,
    prepare_avatar,
    probe_video,
    validate_output,
)

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
MAX_PIXELS = 40_000_000


def near(colour: tuple[int, ...], expected: tuple[int, int, int], tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(colour, expected, strict=True))


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def only_file(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-v", "error", *args], check=True, timeout=120)


def audio_duration(path: Path) -> float:
    (audio,) = [s for s in stream_facts(path) if s["codec_type"] == "audio"]
    return float(audio["duration"])


# -- avatar ------------------------------------------------------------------------------------


def test_jpeg_exif_orientation_6_is_applied(avatar_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = avatar_factory("phone.jpg", width=512, height=768, fmt="JPEG", exif_orientation=6)
    before = file_sha256(src)

    avatar = prepare_avatar(src, tmp_path / "out" / "avatar.png", max_pixels=MAX_PIXELS)

    assert (avatar.width, avatar.height, avatar.source_format) == (768, 512, "JPEG")
    with Image.open(avatar.path) as out:
        assert (out.format, out.mode, out.size) == ("PNG", "RGB", (768, 512))
        # Orientation 6 = turn 90° clockwise: the red top-left marker ends up top-right.
        assert near(out.getpixel((out.width - 5, 5)), RED)
        assert not near(out.getpixel((5, 5)), RED)
    assert file_sha256(src) == before


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("RGBA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("I;16", "PNG"), ("CMYK", "JPEG")],
)
def test_image_modes_become_rgb(
    avatar_factory: Callable[..., Path], tmp_path: Path, mode: str, fmt: str
) -> None:
    src = avatar_factory(f"avatar.{fmt.lower()}", mode=mode, fmt=fmt)
    with Image.open(src) as original:
        assert original.mode == mode
    avatar = prepare_avatar(src, tmp_path / "avatar.png", max_pixels=MAX_PIXELS)
    with Image.open(avatar.path) as out:
        assert out.mode == "RGB"
        assert out.size == (512, 768)
        # the background (70, 110, 160), or its grey: not blown out to white nor crushed to black
        assert 40 <= sum(out.getpixel((5, 300))) / 3 <= 160


def test_transparency_is_flattened_onto_white(avatar_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = avatar_factory("cutout.png", mode="RGBA")  # top-right corner fully transparent
    avatar = prepare_avatar(src, tmp_path / "avatar.png", max_pixels=MAX_PIXELS)
    with Image.open(avatar.path) as out:
        assert out.getpixel((out.width - 5, 5)) == WHITE
        assert near(out.getpixel((5, 5)), RED)


def test_webp_is_accepted(avatar_factory: Callable[..., Path], tmp_path: Path) -> None:
    avatar = prepare_avatar(avatar_factory("a.webp", fmt="WEBP"), tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert (avatar.source_format, avatar.width, avatar.height) == ("WebP", 512, 768)


def test_icc_profiles_are_converted_or_ignored(avatar_png: Path, tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(avatar_png) as image:
        image.save(tmp_path / "srgb.png", icc_profile=srgb)
        image.save(tmp_path / "garbage.png", icc_profile=b"not an icc profile")
        reference = image.convert("RGB")
    for name in ("srgb.png", "garbage.png"):
        avatar = prepare_avatar(tmp_path / name, tmp_path / f"out-{name}", max_pixels=MAX_PIXELS)
        with Image.open(avatar.path) as out:
            assert mean_difference(out, reference) < 2, name


@pytest.mark.parametrize("fmt", ["GIF", "BMP"])
def test_other_image_formats_are_named_and_refused(
    avatar_factory: Callable[..., Path], tmp_path: Path, fmt: str
) -> None:
    src = avatar_factory(f"avatar.{fmt.lower()}", fmt=fmt)
    with pytest.raises(WorkerError) as info:
        prepare_avatar(src, tmp_path / "avatar.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA
    assert f"is a {fmt} file" in info.value.message
    assert "PNG, JPEG and WebP" in info.value.message
    assert not (tmp_path / "avatar.png").exists()


def test_heic_and_non_images_are_named(media_dir: Path, tmp_path: Path) -> None:
    heic = media_dir / "IMG_0001.jpg"
    heic.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    with pytest.raises(WorkerError, match="HEIC") as info:
        prepare_avatar(heic, tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA

    text = media_dir / "notes.png"
    text.write_text("just some text")
    with pytest.raises(WorkerError, match="not in a format we recognise") as info:
        prepare_avatar(text, tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_invalid(
    avatar_factory: Callable[..., Path], media_dir: Path, tmp_path: Path, fmt: str
) -> None:
    whole = avatar_factory(f"whole.{fmt.lower()}", fmt=fmt)
    cut = make_truncated_file(media_dir / f"cut.{fmt.lower()}", source=whole, keep=0.5)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(WorkerError, match="cannot be decoded") as info:
        prepare_avatar(cut, out_dir / "avatar.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA
    assert "truncated or corrupt" in info.value.message
    assert only_file(out_dir) == []  # no half-written or temporary file left


def test_corrupt_image_is_invalid(media_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="the PNG image cannot be decoded") as info:
        prepare_avatar(make_corrupt_image(media_dir / "c.png"), tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (12_000, "12000x12000 (144.0 megapixels); the limit is 40.0 megapixels"),  # our limit
        (20_000, "has 400.0 megapixels; the limit is 40.0 megapixels"),  # past Pillow's hard limit
    ],
)
def test_decompression_bomb_is_refused_without_decoding(
    media_dir: Path, tmp_path: Path, size: int, message: str
) -> None:
    bomb = make_bomb_png(media_dir / "bomb.png", width=size, height=size)
    assert bomb.stat().st_size < 200_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WorkerError) as info:
        prepare_avatar(bomb, tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INPUT_TOO_LARGE
    assert message in info.value.message
    # Decoding would need size*size bytes (144-400 MB): the peak must not have moved much.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 50 * 1024


def test_too_small_image_is_refused(avatar_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = avatar_factory("tiny.png", width=48, height=200)
    with pytest.raises(WorkerError, match="only 48x200; each side must be at least 64 px") as info:
        prepare_avatar(src, tmp_path / "a.png", max_pixels=MAX_PIXELS)
    assert info.value.code == ErrorCode.INVALID_MEDIA


# -- driving video -------------------------------------------------------------------------------


def test_conform_1080p30_to_exactly_120_frames(
    driving_video_factory: Callable[..., Path], tmp_path: Path
) -> None:
    src = driving_video_factory(5.0, fps=30, width=1920, height=1080)
    before = file_sha256(src)

    driving = conform_driving_video(src, tmp_path / "out" / "driving.mp4", max_duration_s=60)

    assert (driving.source.width, driving.source.height, driving.source.frames) == (1920, 1080, 150)
    assert driving.source.fps == 30
    assert driving.frames == 120
    assert driving.has_audio
    info = probe_video(driving.path)
    assert info == driving.info
    assert (info.width, info.height, info.fps, info.frames) == (1280, 720, 24, 120)
    assert (info.video_codec, info.pix_fmt, info.audio_codec) == ("h264", "yuv420p", "aac")
    (video, audio) = stream_facts(driving.path)
    assert (video["avg_frame_rate"], video["r_frame_rate"], video["sample_aspect_ratio"]) == (
        "24/1",
        "24/1",
        "1:1",
    )
    assert (audio["sample_rate"], audio["channels"]) == ("48000", 2)
    assert abs(float(audio["duration"]) - 5.0) < 0.03
    assert file_sha256(src) == before
    assert only_file(tmp_path / "out") == ["driving.mp4"]


@pytest.mark.parametrize(
    ("fps", "seconds"),
    [(30000 / 1001, 2.002), (25, 2.04), (15, 1.0), (60, 1.0)],
)
def test_frame_count_rule(
    driving_video_factory: Callable[..., Path], tmp_path: Path, fps: float, seconds: float
) -> None:
    src = driving_video_factory(seconds, fps=fps, width=160, height=90, audio=False)
    source = probe_video(src)
    driving = conform_driving_video(src, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    assert driving.frames == frames_for(source.duration_s, 24)
    assert driving.frames == round(source.duration_s * 24)
    assert probe_video(driving.path).frames == driving.frames


@pytest.mark.parametrize(
    ("width", "height", "pattern"),
    [(640, 480, "left-right"), (360, 640, "top-bottom")],  # 4:3 landscape, 9:16 portrait
)
def test_other_shapes_are_scaled_to_cover_and_centre_cropped_on_request(
    driving_video_factory: Callable[..., Path], tmp_path: Path, width: int, height: int, pattern: str
) -> None:
    src = driving_video_factory(1.0, fps=30, width=width, height=height, pattern=pattern)
    driving = conform_driving_video(src, tmp_path / "d.mp4", max_duration_s=60, framing="crop")
    assert (driving.info.width, driving.info.height, driving.frames) == (1280, 720, 24)
    frame = extract_frame(driving.path, 0)
    if pattern == "left-right":  # the 4:3 picture fills the width: red and blue reach the sides
        assert near(frame.getpixel((3, 3)), RED) and near(frame.getpixel((3, 716)), RED)
        assert near(frame.getpixel((1276, 3)), BLUE) and near(frame.getpixel((1276, 716)), BLUE)
    else:  # the portrait fills the width (no pillarbox) and only its middle band is kept
        assert near(frame.getpixel((3, 3)), RED) and near(frame.getpixel((1276, 3)), RED)
        assert near(frame.getpixel((3, 716)), BLUE) and near(frame.getpixel((1276, 716)), BLUE)
        # the red/blue boundary of the source's centre stays at the output's centre
        assert near(frame.getpixel((640, 350)), RED) and near(frame.getpixel((640, 370)), BLUE)


def test_phone_rotation_metadata_is_honoured(
    driving_video_factory: Callable[..., Path], tmp_path: Path
) -> None:
    # landscape-coded frames, red left / blue right, tagged as shown turned by 90°
    src = driving_video_factory(1.0, fps=30, width=320, height=180, pattern="left-right", rotate=90)
    assert (probe_video(src).width, probe_video(src).height) == (180, 320)
    driving = conform_driving_video(src, tmp_path / "d.mp4", max_duration_s=60, framing="crop")
    assert (driving.source.width, driving.source.height) == (180, 320)
    assert all("side_data_list" not in s for s in stream_facts(driving.path))  # no rotation left
    frame = extract_frame(driving.path, 0)
    assert frame.size == (1280, 720)
    # turned upright, the halves are one above the other, each across the whole width
    top, bottom = frame.getpixel((640, 20)), frame.getpixel((640, 700))
    assert {near(top, RED), near(bottom, RED)} == {True, False}
    assert {near(top, BLUE), near(bottom, BLUE)} == {True, False}
    assert frame.getpixel((5, 20)) == top and frame.getpixel((1275, 20)) == top
    # fitted (the default), the upright picture is 406x720 in the middle, black beside it
    fitted = extract_frame(conform_driving_video(src, tmp_path / "f.mp4", max_duration_s=60).path, 0)
    assert fitted.getpixel((640, 20)) == top and fitted.getpixel((640, 700)) == bottom
    assert fitted.getpixel((5, 20)) == (0, 0, 0) and fitted.getpixel((1275, 700)) == (0, 0, 0)


def test_hdr_video_is_tone_mapped_to_sdr(media_dir: Path, tmp_path: Path) -> None:
    hlg = media_dir / "iphone-hlg.mp4"
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=0.5"),
        *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"),
        *("-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc", str(hlg)),
    )
    assert probe_video(hlg).pix_fmt == "yuv420p10le"
    driving = conform_driving_video(hlg, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    (stream,) = stream_facts(driving.path)
    assert (stream["pix_fmt"], stream.get("color_transfer"), stream.get("color_primaries")) == (
        "yuv420p",
        "bt709",
        "bt709",
    )
    assert driving.frames == 12


def test_variable_frame_rate_with_a_gap(media_dir: Path, tmp_path: Path) -> None:
    vfr = media_dir / "vfr.mp4"  # 30 fps with frames 10-29 missing: a 2/3 s gap, as phones do
    ffmpeg(
        *("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=2"),
        *("-vf", "select=not(between(n\\,10\\,29))", "-fps_mode", "vfr"),
        *("-c:v", "libx264", "-preset", "ultrafast", str(vfr)),
    )
    source = probe_video(vfr)
    assert source.frames == 40 and abs(source.duration_s - 2.0) < 0.01
    driving = conform_driving_video(vfr, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    assert driving.frames == probe_video(driving.path).frames == 48  # the gap filled by repeats


def test_browser_webm_without_any_duration(media_dir: Path, tmp_path: Path) -> None:
    webm = media_dir / "recorded.webm"
    with webm.open("wb") as sink:  # written to a pipe, as MediaRecorder does: no duration, no index
        subprocess.run(
            [
                *(
                    "ffmpeg",
                    "-nostdin",
                    "-v",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    "testsrc2=size=320x180:rate=30:d=2",
                ),
                *("-f", "lavfi", "-i", "sine=duration=2", "-c:v", "libvpx", "-deadline", "realtime"),
                *("-vf", "select=not(between(n\\,10\\,29))", "-fps_mode:v", "vfr"),  # 40 frames
                *("-cpu-used", "8", "-c:a", "libopus", "-f", "webm", "-"),
            ],
            stdout=sink,
            check=True,
            timeout=120,
        )
    assert "duration" not in stream_facts(webm)[0]
    source = probe_video(webm)
    assert (source.video_codec, source.audio_codec, source.frames) == ("vp8", "opus", 40)
    assert abs(source.duration_s - 2.0) < 0.01  # from the packets' timestamps: not 40 / 30 fps
    driving = conform_driving_video(webm, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    assert (driving.frames, driving.info.audio_codec) == (48, "aac")
    assert abs(audio_duration(driving.path) - 2.0) < 0.03


def test_video_without_audio(driving_video_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = driving_video_factory(1.0, fps=25, width=320, height=240, audio=False)
    driving = conform_driving_video(src, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    assert not driving.has_audio and not driving.info.has_audio
    assert driving.info.audio_codec is None
    assert [s["codec_type"] for s in stream_facts(driving.path)] == ["video"]


def test_late_audio_keeps_its_place(driving_video_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = driving_video_factory(2.0, width=320, height=180, audio_delay_s=0.5)
    driving = conform_driving_video(src, tmp_path / "d.mp4", width=320, height=180, max_duration_s=60)
    assert abs(audio_duration(driving.path) - 2.0) < 0.03
    proc = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-i",
            str(driving.path),
            "-vn",
            "-af",
            "silencedetect=d=0.2",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    first_silence = re.search(r"silence_start: (\S+).*?silence_end: (\S+)", proc.stderr, re.S)
    assert first_silence is not None
    start, end = (float(v) for v in first_silence.groups())
    assert start == 0 and 0.4 < end < 0.6  # the tone still begins half a second in


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_mp4_is_invalid(
    driving_video_factory: Callable[..., Path], media_dir: Path, tmp_path: Path, faststart: bool
) -> None:
    whole = driving_video_factory(2.0, width=320, height=180, faststart=faststart)
    cut = make_truncated_mp4(media_dir / "cut.mp4", source=whole)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(WorkerError) as info:
        conform_driving_video(cut, out_dir / "d.mp4", max_duration_s=60)
    assert info.value.code == ErrorCode.INVALID_MEDIA
    if faststart:  # the index survived, the frames did not
        assert "is truncated: its header lists 48 frames but only" in info.value.message
    else:  # the index (at the end) is gone
        assert "cannot be read (moov atom not found" in info.value.message
        assert str(media_dir) not in info.value.message
    assert only_file(out_dir) == []


def test_not_a_video(avatar_png: Path, media_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="is a still image") as info:
        conform_driving_video(avatar_png, tmp_path / "d.mp4", max_duration_s=60)
    assert info.value.code == ErrorCode.INVALID_MEDIA

    tone = media_dir / "tone.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(tone))
    with pytest.raises(WorkerError, match="has no video stream") as info:
        conform_driving_video(tone, tmp_path / "d.mp4", max_duration_s=60)
    assert info.value.code == ErrorCode.INVALID_MEDIA


def test_too_long_video(driving_video_factory: Callable[..., Path], tmp_path: Path) -> None:
    src = driving_video_factory(2.0, width=160, height=90, audio=False)
    with pytest.raises(WorkerError) as info:
        conform_driving_video(src, tmp_path / "d.mp4", max_duration_s=1.5)
    assert info.value.code == ErrorCode.INPUT_TOO_LARGE
    assert "is 2.0 s long; the limit is 1.5 s" in info.value.message
    assert info.value.details == {"duration_s": 2.0, "max_duration_s": 1.5}
    assert not (tmp_path / "d.mp4").exists()


# -- output --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driving_120(tmp_path_factory: pytest.TempPathFactory) -> DrivingVideo:
    """A conformed driving video: 1280x720, 120 frames (5 s), with audio. Shared: never modified."""
    folder = tmp_path_factory.mktemp("driving-120")
    src = make_driving_video(folder / "src.mp4", seconds=5.0, fps=30, width=320, height=180)
    return conform_driving_video(src, folder / "driving.mp4", max_duration_s=60)


@pytest.fixture(scope="module")
def driving_24_silent(tmp_path_factory: pytest.TempPathFactory) -> DrivingVideo:
    """A conformed driving video: 1280x720, 24 frames (1 s), no audio. Shared: never modified."""
    folder = tmp_path_factory.mktemp("driving-24")
    src = make_driving_video(folder / "src.mp4", seconds=1.0, width=160, height=90, audio=False)
    return conform_driving_video(src, folder / "driving.mp4", max_duration_s=60)


def packet_hashes(path: Path) -> list[str]:
    proc = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v",
            "-c",
            "copy",
            "-f",
            "framemd5",
            "-",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.rsplit(",", 1)[1].strip() for line in proc.stdout.splitlines() if not line.startswith("#")]


def test_finalize_trims_130_to_120_frames_and_muxes_the_audio(
    driving_video_factory: Callable[..., Path], driving_120: DrivingVideo, tmp_path: Path
) -> None:
    raw = driving_video_factory(130 / 24, audio=False)  # 1280x720, 24 fps, H.264 without B-frames
    assert probe_video(raw).frames == 130
    raw_before, driving_before = file_sha256(raw), file_sha256(driving_120.path)
    dest = tmp_path / "final" / "out.mp4"

    info = finalize_output(raw, driving_120, dest)

    assert (info.frames, info.width, info.height, info.fps, info.has_audio) == (120, 1280, 720, 24, True)
    assert probe_video(dest) == info
    assert abs(audio_duration(dest) - 5.0) < 0.03
    assert packet_hashes(dest) == packet_hashes(raw)[:120]  # the stream was copied, not re-encoded
    head = dest.read_bytes()[:65536]
    assert b"moov" in head and head.find(b"moov") < head.find(b"mdat")  # +faststart
    assert (file_sha256(raw), file_sha256(driving_120.path)) == (raw_before, driving_before)
    assert only_file(dest.parent) == ["out.mp4"]


def test_finalize_re_encodes_when_a_copy_cannot_cut_exactly(
    driving_video_factory: Callable[..., Path],
    driving_24_silent: DrivingVideo,
    media_dir: Path,
    tmp_path: Path,
) -> None:
    # B-frames in a fixed I/P B B pattern: the first 24 packets in decode order hold frame 24
    # but not frame 23, so cutting a stream copy there would end on the wrong frame.
    plain = driving_video_factory(30 / 24, audio=False)
    raw = media_dir / "bframes.mp4"
    ffmpeg(
        *("-i", str(plain), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
        *("-x264-params", "bframes=2:b-adapt=0:scenecut=0", str(raw)),
    )
    info = finalize_output(raw, driving_24_silent, tmp_path / "out.mp4")
    assert (info.frames, info.video_codec, info.has_audio) == (24, "h264", False)
    last = extract_frame(tmp_path / "out.mp4", 23)
    assert mean_difference(last, extract_frame(raw, 23)) < mean_difference(last, extract_frame(raw, 24))


def test_finalize_refuses_too_few_frames(
    driving_video_factory: Callable[..., Path], driving_120: DrivingVideo, tmp_path: Path
) -> None:
    raw = driving_video_factory(110 / 24, width=320, height=180, audio=False)
    with pytest.raises(WorkerError) as info:
        finalize_output(raw, driving_120, tmp_path / "out" / "out.mp4")
    assert info.value.code == ErrorCode.OUTPUT_INVALID
    assert info.value.message == "generated 110 frames, expected 120"
    assert not (tmp_path / "out").exists() or only_file(tmp_path / "out") == []


def test_finalize_re_encodes_other_codecs_and_drops_their_audio(
    driving_video_factory: Callable[..., Path], driving_24_silent: DrivingVideo, tmp_path: Path
) -> None:
    raw = driving_video_factory(1.25, video_codec="mpeg4", audio=True)  # 30 frames with a tone
    info = finalize_output(raw, driving_24_silent, tmp_path / "out.mp4")
    assert (info.video_codec, info.pix_fmt, info.frames, info.has_audio) == ("h264", "yuv420p", 24, False)


def test_finalize_failure_leaves_no_file(
    driving_video_factory: Callable[..., Path], driving_24_silent: DrivingVideo, tmp_path: Path
) -> None:
    raw = driving_video_factory(30 / 16, fps=16, audio=False)  # 30 frames, but at 16 fps
    out = tmp_path / "out"
    with pytest.raises(WorkerError) as info:
        finalize_output(raw, driving_24_silent, out / "final.mp4")
    assert info.value.details["problems"] == [
        "average frame rate is 16, expected 24/1",
        "r_frame_rate is 16, expected 24/1",
    ]
    assert only_file(out) == []


def test_validate_accepts_a_good_file(driving_120: DrivingVideo) -> None:
    assert validate_output(driving_120.path, frames=120, has_audio=True) == driving_120.info


@pytest.mark.parametrize(
    ("kwargs", "has_audio", "problems"),
    [
        ({"width": 640, "height": 360}, True, ["size is 640x360, expected 1280x720"]),
        (
            {"seconds": 1.5, "fps": 16},
            True,
            ["average frame rate is 16, expected 24/1", "r_frame_rate is 16, expected 24/1"],
        ),
        ({"audio": False}, True, ["has no audio track, but the driving video has one"]),
        ({}, False, ["has an audio track, but the driving video has none"]),
        ({"video_codec": "mpeg4"}, True, ["video codec is mpeg4, expected h264"]),
    ],
)
def test_validate_names_each_problem(
    driving_video_factory: Callable[..., Path], kwargs: dict, has_audio: bool, problems: list[str]
) -> None:
    video = driving_video_factory(**{"seconds": 1.0, **kwargs})  # 24 frames (16 fps: 1.5 s)
    with pytest.raises(WorkerError) as info:
        validate_output(video, frames=24, has_audio=has_audio)
    assert info.value.code == ErrorCode.OUTPUT_INVALID
    assert info.value.details["problems"] == problems
    assert all(problem in info.value.message for problem in problems)


def test_validate_lists_every_problem_and_audio_drift(
    driving_video_factory: Callable[..., Path], media_dir: Path
) -> None:
    video = driving_video_factory(2.0, audio=False)
    drifting = media_dir / "drift.mp4"
    ffmpeg(
        *("-i", str(video), "-f", "lavfi", "-i", "sine=duration=1.5"),
        *("-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", str(drifting)),
    )
    with pytest.raises(WorkerError) as info:
        validate_output(drifting, frames=48, has_audio=True)
    assert info.value.details["problems"] == ["audio lasts 1.500 s, the video 2.000 s"]

    small = driving_video_factory(1.0, width=320, height=180, fps=16, video_codec="mpeg4", audio=False)
    with pytest.raises(WorkerError) as info:
        validate_output(small, frames=120, has_audio=True)
    assert info.value.details["problems"] == [
        "video codec is mpeg4, expected h264",
        "size is 320x180, expected 1280x720",
        "average frame rate is 16, expected 24/1",
        "r_frame_rate is 16, expected 24/1",
        "has 16 frames, expected 120",
        "has no audio track, but the driving video has one",
    ]


def test_unreadable_output_is_output_invalid(media_dir: Path) -> None:
    junk = media_dir / "out.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(WorkerError, match="cannot be read") as info:
        validate_output(junk, frames=1, has_audio=False)
    assert info.value.code == ErrorCode.OUTPUT_INVALID


def test_cpu_threads_is_a_usable_count() -> None:
    assert 1 <= cpu_threads() <= (os.cpu_count() or 1)


def test_fixture_bomb_is_a_real_png(media_dir: Path) -> None:
    bomb = make_bomb_png(media_dir / "b.png", width=100, height=50)
    with Image.open(bomb) as image:
        image.load()
        assert (image.size, image.mode) == ((100, 50), "1")


def test_fixture_rotation_is_written(media_dir: Path) -> None:
    video = make_driving_video(media_dir / "r.mp4", seconds=0.5, width=160, height=96, audio=False, rotate=90)
    (stream,) = stream_facts(video)
    assert abs(int(stream["side_data_list"][0]["rotation"])) == 90
