"""What leaves the worker is what users see: colours through the whole chain, and framing.

The chain, each step as the product does it:

1. a driving video, untagged or tagged, with a flat patch of RGB (32, 192, 64);
2. the worker's conform step (``conform_driving_video``);
3. ComfyUI 0.33.0's decode (``VideoFromFile.get_components``: PyAV ``to_ndarray``, which converts
   with the matrix and range the stream is tagged with and BT.601 limited range when it is
   untagged), reproduced here from the decoded YUV planes and the stream's tags. PyAV is not a
   worker dependency; this reproduction was checked against ComfyUI's own code (PyAV 18.1.0):
   within 0.5 of a level on every case below, and an untagged BT.709 source read as
   (45.2, 217.0, 68.1) by both;
4. the chunk's frames as ``WanWorkerSaveChunk`` writes them (8-bit RGB, truncated as ComfyUI's
   SaveVideo does) and the worker's encode of them (``worker.chunk_media.encode_frames``: BT.709
   limited range, tagged BT.709, libx264 CRF 17);
5. the worker's ``finalize_output``;
6. a player's decode, by the output's tags.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.support.media import extract_frame, stream_facts
from worker.chunk_media import encode_frames
from worker.media import conform_driving_video, finalize_output

PATCH = (32, 192, 64)
GREY = (200, 200, 200)
# Kr, Kb of each matrix as ffprobe names it; an untagged stream is BT.601 to PyAV/swscale.
_MATRICES = {
    "bt709": (0.2126, 0.0722),
    "smpte170m": (0.299, 0.114),
    "bt470bg": (0.299, 0.114),
    "": (0.299, 0.114),
}


def _ffmpeg(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], input=stdin, capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()[-600:]
    return proc.stdout


def _tags(path: Path) -> tuple[str, str, str, str]:
    video = next(s for s in stream_facts(path) if s["codec_type"] == "video")
    values = [video.get(k, "") for k in ("color_space", "color_primaries", "color_transfer", "color_range")]
    return tuple("" if v in ("unknown", "unspecified") else v for v in values)  # type: ignore[return-value]


def _patch_source(path: Path, *, size: tuple[int, int], matrix: str, full_range: bool, tagged: bool) -> Path:
    """1 s at 24 fps of a flat patch on grey, in ``matrix`` (scale filter name), losslessly coded."""
    width, height = size
    picture = Image.new("RGB", size, GREY)
    ImageDraw.Draw(picture).rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=PATCH)
    png = path.with_suffix(".png")
    picture.save(png)
    rng = "pc" if full_range else "tv"
    tags: list[str] = []
    if tagged:
        name = {"bt709": "bt709", "bt601": "smpte170m"}[matrix]
        tags = ["-colorspace", name, "-color_primaries", name, "-color_trc", name, "-color_range", rng]
    _ffmpeg(
        *("-loop", "1", "-framerate", "24", "-i", str(png), "-t", "1"),
        *("-vf", f"scale=out_color_matrix={matrix}:out_range={rng}:flags=accurate_rnd+full_chroma_int"),
        *(
            "-pix_fmt",
            "yuvj420p" if full_range else "yuv420p",
            "-c:v",
            "libx264",
            "-qp",
            "0",
            *tags,
            str(path),
        ),
    )
    return path


def _yuv_to_rgb(yuv: np.ndarray, matrix: str, full_range: bool) -> np.ndarray:
    kr, kb = _MATRICES[matrix]
    kg = 1 - kr - kb
    y, u, v = (yuv[..., i].astype(np.float64) for i in range(3))
    if full_range:
        y, u, v = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        y, u, v = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    r = y + 2 * (1 - kr) * v
    b = y + 2 * (1 - kb) * u
    g = (y - kr * r - kb * b) / kg
    return np.clip(np.stack([r, g, b], axis=-1) * 255, 0, 255)


def _decode_rgb(path: Path, *, matrix: str | None = None) -> np.ndarray:
    """Frames as RGB floats 0..255, converted as PyAV does: by the stream's matrix and range tags,
    BT.601 limited range when untagged (or by ``matrix``, an ffprobe name, when given)."""
    video = next(s for s in stream_facts(path) if s["codec_type"] == "video")
    width, height = int(video["width"]), int(video["height"])
    tagged, _, _, rng = _tags(path)
    full = rng == "pc" or video.get("pix_fmt", "").startswith("yuvj")
    planar = "yuvj444p" if full else "yuv444p"  # the same range: the values as stored
    raw = _ffmpeg("-i", str(path), "-f", "rawvideo", "-pix_fmt", planar, "-sws_flags", "neighbor", "-")
    planes = np.frombuffer(raw, np.uint8).reshape(-1, 3, height, width).transpose(0, 2, 3, 1)
    return _yuv_to_rgb(planes, tagged if matrix is None else matrix, full)


def _patch_mean(frames: np.ndarray) -> np.ndarray:
    height, width = frames.shape[1:3]
    return (
        frames[:, height * 3 // 8 : height * 5 // 8, width * 3 // 8 : width * 5 // 8].reshape(-1, 3).mean(0)
    )


def _chunk_video(frames: np.ndarray, dest: Path) -> Path:
    """The frames as WanWorkerSaveChunk writes them, encoded by the worker."""
    rgb = np.clip(frames, 0, 255).astype(np.uint8)  # ComfyUI: (frame * 255).clamp(0, 255).byte()
    height, width = rgb.shape[1:3]
    raw = dest.with_suffix(".rgb")
    raw.write_bytes(rgb.tobytes())
    encode_frames(raw, dest, width=width, height=height, frames=rgb.shape[0], fps=24)
    return dest


CASES = {
    # name: size, matrix the pixels are in, full range, tagged
    "untagged HD (BT.709)": ((1920, 1080), "bt709", False, False),
    "tagged BT.709": ((1920, 1080), "bt709", False, True),
    "tagged BT.601 HD": ((1920, 1080), "bt601", False, True),
    "tagged BT.709 full range": ((1920, 1080), "bt709", True, True),
    "untagged SD (BT.601)": ((640, 480), "bt601", False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_flat_patch_keeps_its_colour_through_the_whole_chain(tmp_path: Path, case: str) -> None:
    size, matrix, full_range, tagged = CASES[case]
    src = _patch_source(tmp_path / "src.mp4", size=size, matrix=matrix, full_range=full_range, tagged=tagged)
    # The source as a player shows it (its real colours): 8-bit BT.601 cannot hold PATCH exactly.
    source = _patch_mean(_decode_rgb(src, matrix={"bt709": "bt709", "bt601": "smpte170m"}[matrix]))
    assert np.abs(source - PATCH).max() <= 1, source

    driving = conform_driving_video(src, tmp_path / "driving.mp4", max_duration_s=60)
    assert _tags(driving.path) == ("bt709", "bt709", "bt709", "tv")
    seen_by_comfy = _decode_rgb(driving.path)
    assert np.abs(_patch_mean(seen_by_comfy) - source).max() <= 2, _patch_mean(seen_by_comfy)

    raw = _chunk_video(seen_by_comfy, tmp_path / "raw.mp4")
    info = finalize_output(raw, driving, tmp_path / "out.mp4")
    assert info.frames == driving.frames == 24
    assert _tags(tmp_path / "out.mp4") == ("bt709", "bt709", "bt709", "tv")
    shown = _patch_mean(_decode_rgb(tmp_path / "out.mp4"))
    assert np.abs(shown - source).max() <= 2, (
        f"{case}: the user sees {shown.round(1)}, the source {source.round(1)}"
    )


def test_without_the_conversion_an_untagged_hd_source_comes_out_wrong(tmp_path: Path) -> None:
    """The bug the conform step fixes: ComfyUI reads untagged HD video as BT.601."""
    src = _patch_source(
        tmp_path / "src.mp4", size=(1920, 1080), matrix="bt709", full_range=False, tagged=False
    )
    assert _tags(src) == ("", "", "", "")
    seen = _patch_mean(_decode_rgb(src))
    assert np.abs(seen - PATCH).max() > 10, seen  # about (45, 217, 68)


def test_the_re_encoded_output_is_bt709_too(tmp_path: Path) -> None:
    """finalize_output's other path (a stream it cannot cut by copying) keeps the colours."""
    src = _patch_source(
        tmp_path / "src.mp4", size=(1920, 1080), matrix="bt709", full_range=False, tagged=True
    )
    driving = conform_driving_video(src, tmp_path / "driving.mp4", max_duration_s=60)
    frames = _decode_rgb(driving.path)
    raw = tmp_path / "raw.mkv"  # not H.264: re-encoded
    rgb = np.clip(frames, 0, 255).astype(np.uint8)
    _ffmpeg(
        *("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "1280x720", "-r", "24", "-i", "-"),
        *(
            "-vf",
            "scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int,format=yuv420p",
        ),
        *("-c:v", "mpeg4", "-q:v", "1", "-colorspace", "bt709", "-color_range", "tv", str(raw)),
        stdin=rgb.tobytes(),
    )
    finalize_output(raw, driving, tmp_path / "out.mp4")
    assert _tags(tmp_path / "out.mp4") == ("bt709", "bt709", "bt709", "tv")
    shown = _patch_mean(_decode_rgb(tmp_path / "out.mp4"))
    assert np.abs(shown - PATCH).max() <= 2, shown


# -- framing -------------------------------------------------------------------------------

HEAD, BODY, FEET, BACKDROP = (230, 40, 40), (40, 60, 200), (40, 200, 60), (235, 235, 235)


def _portrait_figure(path: Path) -> Path:
    """A 720x1280 phone video of a standing figure from the top edge (head) to the bottom (feet)."""
    picture = Image.new("RGB", (720, 1280), BACKDROP)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((300, 0, 420, 159), fill=HEAD)  # the head touches the top
    draw.rectangle((240, 160, 480, 1119), fill=BODY)
    draw.rectangle((260, 1120, 460, 1279), fill=FEET)  # the feet touch the bottom
    png = path.with_suffix(".png")
    picture.save(png)
    _ffmpeg(
        *("-loop", "1", "-framerate", "30", "-i", str(png), "-t", "1"),
        *("-vf", "scale=out_color_matrix=bt709:out_range=tv", "-pix_fmt", "yuv420p"),
        *("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", str(path)),
    )
    return path


def _share(frame: Image.Image, colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> float:
    """The share of ``box``'s pixels within 24 levels of ``colour``."""
    pixels = np.asarray(frame.crop(box), dtype=np.int16)
    return float((np.abs(pixels - colour).max(axis=-1) <= 24).mean())


def test_fit_keeps_a_full_body_portrait_whole(tmp_path: Path) -> None:
    driving = conform_driving_video(
        _portrait_figure(tmp_path / "phone.mp4"), tmp_path / "d.mp4", max_duration_s=60
    )
    assert (driving.info.width, driving.info.height, driving.frames) == (1280, 720, 24)
    frame = extract_frame(driving.path, 0)
    # 720x1280 scaled to 406x720, centred (x 436..842); black beside it
    assert _share(frame, HEAD, (612, 0, 666, 6)) > 0.9  # the head (x 605..673) still reaches the top row
    assert _share(frame, FEET, (590, 714, 688, 720)) > 0.9  # the feet (x 583..695) the bottom row
    assert _share(frame, BACKDROP, (440, 300, 560, 420)) > 0.9
    assert _share(frame, (0, 0, 0), (0, 0, 430, 720)) > 0.99
    assert _share(frame, (0, 0, 0), (848, 0, 1280, 720)) > 0.99


def test_crop_on_request_cuts_head_and_feet(tmp_path: Path) -> None:
    src = _portrait_figure(tmp_path / "phone.mp4")
    driving = conform_driving_video(src, tmp_path / "d.mp4", max_duration_s=60, framing="crop")
    assert (driving.info.width, driving.info.height) == (1280, 720)
    frame = extract_frame(driving.path, 0)
    whole = (0, 0, 1280, 720)
    assert _share(frame, HEAD, whole) == 0 and _share(frame, FEET, whole) == 0
    assert _share(frame, BODY, (600, 0, 680, 720)) > 0.99  # only the middle of the body is left
    assert _share(frame, (0, 0, 0), whole) < 0.01


def test_near_16_9_sources_are_not_given_thin_bars(tmp_path: Path) -> None:
    """1920x1088 (a common encoder size) fits within 1 %: cropped by 8 rows, not pillarboxed."""
    src = _patch_source(
        tmp_path / "src.mp4", size=(1920, 1088), matrix="bt709", full_range=False, tagged=True
    )
    frame = extract_frame(conform_driving_video(src, tmp_path / "d.mp4", max_duration_s=60).path, 0)
    assert _share(frame, (0, 0, 0), (0, 0, 1280, 720)) == 0
