"""The media the worker reads and writes: the avatar image, the driving video, the output.

- ``prepare_avatar``: PNG, JPEG or WebP in, an upright sRGB RGB PNG out. The pixel limit is
  checked from the header before any pixel is decoded; the whole image is then decoded so a
  truncated or corrupt file fails here, not inside ComfyUI. Transparent pixels are flattened
  onto **white** (a cut-out portrait on white, as every viewer shows it; converting to RGB
  instead would expose whatever colour the transparent pixels happen to hold, often black).
- ``conform_driving_video``: any video ffmpeg reads in, exactly ``width``x``height`` (framing
  ``fit``: the whole picture, centred, the rest black; ``crop``: scaled to cover and centre-cropped;
  square pixels; rotation metadata applied; HDR tone-mapped to SDR BT.709), converted from its own
  colours to BT.709 limited range and tagged so (see Colour), exactly ``fps``/1 constant frame
  rate, H.264 yuv420p, the audio (if any) as 48 kHz stereo AAC that starts with the first frame
  (an offset in the source is kept) and lasts exactly N/fps.
- ``finalize_output``: the generated video cut to the driving video's frame count, the driving
  audio muxed in, ``+faststart``, tagged BT.709; ``validate_output`` checks a finished file and
  lists every problem.

Colour: ComfyUI 0.33.0 (PyAV) turns a frame to RGB with the matrix and range its stream is tagged
with, and with BT.601 when it is untagged, as most phone and editor exports of HD video are; an
untagged BT.709 picture then comes out too green (RGB 32,192,64 read as 45,217,68). So the
conformed video is converted from the source's real colours (its tags; untagged: BT.709 for HD,
BT.601 for SD, as players assume) to BT.709 limited range and tagged BT.709 explicitly. SaveVideo
writes BT.709 with an sRGB transfer tag; ``finalize_output`` retags the stream BT.709 throughout
(the pixels are the model's BT.709 values), so players show what the model made.

Frame count rule (conform): N = floor(D * fps + 1/2), at least 1, where D is the duration of the
source's video stream (first frame to the end of the last one: the stream's duration, else its
Matroska DURATION tag, else its packets' timestamps). The ``fps`` filter shows at each output tick
k/fps the source frame on screen at that moment (no interpolation: frames are dropped or
repeated, gaps of a variable-frame-rate file filled); ticks k = 0 .. N-1 are kept. ffmpeg's
``fps`` filter emits exactly N on ffmpeg 5.1; as its end-of-stream rounding has changed between
versions, the last frame is repeated (at most ``_END_PAD_FRAMES`` times) should it fall short and
the stream is cut at N, so N is known before encoding and exact. 5 s at any frame rate gives
120 frames at 24 fps; 10.01 s (300 frames at 29.97) gives 240; 2.04 s gives 49.

All files are written under a temporary name next to the destination and renamed into place
only once complete and checked: a failure never leaves a half-written destination. Inputs are
only read.

Only the file itself is read: every ffprobe and ffmpeg input (``media_input``, ``_ffprobe_json``)
names the demuxers it may use (``VIDEO_DEMUXERS``: MP4/MOV and MKV/WebM) and ``file`` as the only
protocol. A playlist (HLS, DASH), a concat list, an image sequence, an SDP or IMF file would make
ffmpeg open other files or URLs named inside it; they are refused before their header is read, and
the probed format is checked again before anything decodes. QuickTime references to other files
(``dref`` aliases) stay unopened: the mov demuxer follows them only with ``enable_drefs``, never set.
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import subprocess
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from worker.contract import OUTPUT, frames_for
from worker.errors import ErrorCode, WorkerError, disk_full_error, mentions_disk_full
from worker.ffmpeg_process import FfmpegStopped, run_ffmpeg
from worker.logs import log_event
from worker.probe import ProbeError, ffprobe

# Pillow format name -> the name users know.
IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP"}
AUDIO_RATE = 48_000
# The driving video is an intermediate read once by ComfyUI from the same disk: speed first, at
# a quality that leaves no visible artefacts (ultrafast at CRF 16: about 1.5x the size of
# superfast at CRF 17, 0.5 s less for a 10 s 1080p30 clip on 2 cores, which is most of the
# worker's own time per job). The final output is re-encoded only when it must be (see
# finalize_output), and then for quality: the file is what the user gets.
DRIVING_PRESET, DRIVING_CRF = "ultrafast", 16
# Only when the generated stream cannot be copied (see finalize_output): a second generation of a
# CRF 17 encode (SaveVideo, the workflow's node), so one step lower.
OUTPUT_PRESET, OUTPUT_CRF = "fast", 16
# Framing of a driving video whose shape is not width x height: "fit" shows the whole picture
# (bars of FIT_FILL), "crop" scales it to cover and cuts the overflow.
FRAMINGS = ("fit", "crop")
# Black, as the official Wan2.2 Animate preprocessing pads (wan/animate.py, padding_resize): a flat
# fill is no person to YOLO/ViTPose or SAM2, and the model keeps it as background as it is.
FIT_FILL = "black"
# Bars thinner than this share of a side are cropped instead (a 1920x1088 source loses 8 rows,
# not gets two 5-pixel bars).
FIT_CROP_TOLERANCE = 0.01
# Every video the worker writes: BT.709 primaries, transfer and matrix, limited range.
BT709_TAGS = {"colorspace": "bt709", "color_primaries": "bt709", "color_trc": "bt709", "color_range": "tv"}
# ffprobe's matrix names -> the scale filter's.
_SCALE_MATRICES = {
    "bt709": "bt709",
    "smpte170m": "bt601",
    "bt470bg": "bt601",
    "fcc": "fcc",
    "smpte240m": "smpte240m",
    "bt2020nc": "bt2020",
    "bt2020c": "bt2020",
}
# Exact colour conversion (swscale's default rounding is off by up to 2 levels).
_SCALE_FLAGS = "bicubic+accurate_rnd+full_chroma_int"
AUDIO_BITRATE = "192k"
PROBE_TIMEOUT_S = 120.0
FFMPEG_TIMEOUT_S = 1800.0
_END_PAD_FRAMES = 3
# The output's audio may end this much before or after its video (AAC works in 1024-sample frames).
AUDIO_SYNC_TOLERANCE_S = 0.1
HDR_TRANSFERS = ("smpte2084", "arib-std-b67")
# The demuxers (ffmpeg's names) a video may be read with: MP4/MOV/M4V/3GP and MKV/WebM. None of them
# opens another file or URL; a file any other demuxer claims is refused (see the module docstring).
VIDEO_DEMUXERS = ("mov", "matroska")
ACCEPTED_CONTAINERS = "MP4, MOV, MKV or WebM"
INPUT_PROTOCOLS = ("file",)
_REFUSED_FORMAT = re.compile(r"\[(\S+) @ 0x[0-9a-f]+\] Format not on whitelist")
# What ffmpeg took a refused file for, in words (its demuxer name otherwise).
_REFUSED_KINDS = {
    "hls": "an HLS playlist",
    "dash": "a DASH manifest",
    "concat": "an ffconcat list",
    "sdp": "an SDP session description",
    "imf": "an IMF composition playlist",
    "ffmetadata": "an ffmetadata text file",
    "image2": "a still image",
}


# -- the avatar image ---------------------------------------------------------------------


@dataclass(frozen=True)
class AvatarImage:
    path: Path
    width: int
    height: int
    source_format: str  # "PNG", "JPEG" or "WebP"


def prepare_avatar(src: Path, dest: Path, *, max_pixels: int, min_side: int = 64) -> AvatarImage:
    """Decode, check and normalise the avatar image into an RGB PNG at ``dest``.

    Animated WebP/PNG: the first frame is used. EXIF orientation is applied; an embedded ICC
    profile is converted to sRGB (an unusable profile is ignored); 16-bit greyscale is scaled
    to 8 bits; transparency is flattened onto white.
    """
    with _open_image(src, max_pixels) as image:
        fmt = IMAGE_FORMATS.get(image.format or "")
        if fmt is None:
            raise WorkerError(
                ErrorCode.INVALID_MEDIA,
                f"the image is a {image.format} file; only PNG, JPEG and WebP are accepted",
                details={"format": image.format},
            )
        _check_size(*image.size, max_pixels=max_pixels, min_side=min_side)
        try:
            image.load()
        except Exception as exc:  # Pillow's decoders fail with OSError, SyntaxError, ValueError...
            raise WorkerError(
                ErrorCode.INVALID_MEDIA,
                f"the {fmt} image cannot be decoded ({exc}): the file is truncated or corrupt; "
                "re-export it and upload it again",
                details={"format": fmt},
            ) from exc
        rgb = _to_rgb(_to_srgb(ImageOps.exif_transpose(image)))

    dest.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(dest) as partial:
        rgb.save(partial, format="PNG", compress_level=1)
    return AvatarImage(path=dest, width=rgb.width, height=rgb.height, source_format=fmt)


def _open_image(src: Path, max_pixels: int) -> Image.Image:
    """Pillow's lazy open: the header is parsed, no pixel decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb warning: our limit (_check_size) is the one that applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(src)
    except Image.DecompressionBombError as exc:  # past Pillow's hard limit (2 x 89.5 MP)
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.1f} megapixels" if pixels else "too many pixels"
        raise WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"the image has {size}; the limit is {max_pixels / 1e6:.1f} megapixels: downscale it",
            details={"max_pixels": max_pixels},
        ) from exc
    except UnidentifiedImageError as exc:
        kind = _sniff_unsupported(src)
        raise WorkerError(
            ErrorCode.INVALID_MEDIA,
            f"the image is {kind or 'not in a format we recognise'}: upload a PNG, JPEG or WebP file",
            details={"format": kind} if kind else None,
        ) from exc
    except FileNotFoundError:
        raise
    except Exception as exc:  # a header Pillow recognises but cannot parse (cut short, corrupt)
        raise WorkerError(
            ErrorCode.INVALID_MEDIA,
            f"the image cannot be decoded ({exc}): the file is truncated or corrupt; "
            "re-export it and upload it again",
        ) from exc


def _check_size(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"the image is {width}x{height} ({width * height / 1e6:.1f} megapixels); "
            f"the limit is {max_pixels / 1e6:.1f} megapixels: downscale it",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    if min(width, height) < min_side:
        raise WorkerError(
            ErrorCode.INVALID_MEDIA,
            f"the image is only {width}x{height}; each side must be at least {min_side} px",
            details={"width": width, "height": height, "min_side": min_side},
        )


def _sniff_unsupported(src: Path) -> str | None:
    """Names the usual suspects Pillow does not open: iPhone photos, videos, PDFs, SVGs."""
    with src.open("rb") as file:
        head = file.read(64)
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            return "a HEIC/HEIF photo (convert it to JPEG)"
        return "a video (MP4/MOV), not an image"
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if b"<svg" in head or head.lstrip().startswith(b"<?xml"):
        return "an SVG drawing (export it as PNG)"
    return None


def _to_srgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        converted = ImageCms.profileToProfile(
            image, source, ImageCms.createProfile("sRGB"), outputMode=output_mode
        )
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log_event("icc_profile_ignored", level="warning", error=str(exc))
        return image
    return converted if converted is not None else image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit greyscale PNG
        image = image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# -- probing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    width: int  # as displayed: rotation metadata applied
    height: int
    fps: Fraction  # average frame rate
    frames: int  # packets of the video stream: frames, for MP4/MOV/MKV/WebM
    duration_s: float  # of the video stream
    video_codec: str
    pix_fmt: str
    has_audio: bool
    audio_codec: str | None
    size_bytes: int


@dataclass(frozen=True)
class _Probe:
    """VideoInfo plus what conforming and validating need."""

    info: VideoInfo
    format_name: str
    video_index: int
    audio_index: int | None
    r_frame_rate: Fraction
    header_frames: int | None  # the container's claim (MP4 sample table), if any
    rotation: int
    sample_aspect: Fraction
    coded_size: tuple[int, int]
    video_start_s: float
    audio_start_s: float | None
    audio_duration_s: float | None
    color_transfer: str  # "" when untagged; smpte2084 (PQ) and arib-std-b67 (HLG) are HDR
    color_space: str  # the YUV matrix as ffprobe names it; "" when untagged
    color_range: str  # "tv" (limited), "pc" (full) or "" when untagged
    color_primaries: str


def probe_video(path: Path) -> VideoInfo:
    """ffprobe facts about a video; frames counted exactly by reading every packet (no decoding).

    Raises INVALID_MEDIA when the file cannot be read or holds no video stream."""
    return _probe(path, what="the video", code=ErrorCode.INVALID_MEDIA).info


HEADER_PROBE_TIMEOUT_S = 20.0
# Only what reaching our own object storage over HTTP(S) needs: no file, pipe, concat or data URLs;
# and only VIDEO_DEMUXERS, so a playlist in the bucket cannot send ffprobe to another URL.
HEADER_PROBE_PROTOCOLS = ("http", "https", "tcp", "tls")


def header_duration(url: str) -> float | None:
    """The video stream's duration as the file's header states it, read over HTTP(S) without
    downloading the file (ffprobe reads the header, with range requests where the index sits at
    the end); None when the header does not say (a browser's WebM), or the file cannot be read:
    the caller then waits for the download. ``url`` carries a signature: never log it."""
    options = [*_allow_list_args(VIDEO_DEMUXERS, HEADER_PROBE_PROTOCOLS)]
    options += ["-rw_timeout", str(int(HEADER_PROBE_TIMEOUT_S * 1_000_000))]
    options += ["-show_entries", "format=duration:stream=codec_type,duration"]
    try:
        data = ffprobe(url, *options, timeout_s=HEADER_PROBE_TIMEOUT_S, streams_and_format=False)
    except (ProbeError, OSError):
        return None
    streams = [s for s in data.get("streams") or [] if s.get("codec_type") == "video"]
    for value in [*(s.get("duration") for s in streams), (data.get("format") or {}).get("duration")]:
        duration = _float(value)
        if duration is not None and duration > 0:
            return duration
    return None


def _probe(path: Path, *, what: str, code: ErrorCode) -> _Probe:
    data = _ffprobe_json(["-count_packets", "-show_streams", "-show_format"], path, what=what, code=code)
    streams: list[dict[str, Any]] = data.get("streams") or []
    fmt: dict[str, Any] = data.get("format") or {}
    format_name = str(fmt.get("format_name") or "")
    if not set(format_name.split(",")) & set(VIDEO_DEMUXERS):  # the allow-list's second line
        raise _not_a_video(what, format_name or "unknown", code)
    video = next(
        (
            s
            for s in streams
            if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
        ),
        None,
    )
    if video is None:
        raise WorkerError(code, f"{what} has no video stream (an audio file?): upload a video file")
    audio = next(
        (s for s in streams if s.get("codec_type") == "audio" and _int(s.get("nb_read_packets"))),
        None,
    )
    frames = _int(video.get("nb_read_packets")) or 0
    header_frames = _int(video.get("nb_frames"))
    if frames == 0:
        raise WorkerError(code, f"{what} has a video stream without any frame: upload a complete video")

    rotation = _rotation(video)
    coded = (int(video.get("width") or 0), int(video.get("height") or 0))
    width, height = (coded[1], coded[0]) if rotation % 180 == 90 else coded
    avg_rate = _fraction(video.get("avg_frame_rate"))
    r_rate = _fraction(video.get("r_frame_rate"))
    fps = avg_rate or r_rate
    # The container's format duration may be the audio's: the video stream's own comes first.
    duration = (
        _float(video.get("duration"))
        or _tag_duration(video)
        or _packets_duration(path, int(video["index"]), what=what, code=code)
        or (frames / fps if fps else 0.0)
    )
    info = VideoInfo(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration_s=duration,
        video_codec=str(video.get("codec_name") or "unknown"),
        pix_fmt=str(video.get("pix_fmt") or "unknown"),
        has_audio=audio is not None,
        audio_codec=str(audio.get("codec_name") or "unknown") if audio is not None else None,
        size_bytes=path.stat().st_size,
    )
    return _Probe(
        info=info,
        format_name=format_name,
        video_index=int(video["index"]),
        audio_index=int(audio["index"]) if audio is not None else None,
        r_frame_rate=r_rate,
        header_frames=header_frames,
        rotation=rotation,
        sample_aspect=_fraction(video.get("sample_aspect_ratio"), sep=":") or Fraction(1),
        coded_size=coded,
        video_start_s=_float(video.get("start_time")) or 0.0,
        audio_start_s=(_float(audio.get("start_time")) or 0.0) if audio is not None else None,
        audio_duration_s=(_float(audio.get("duration")) or _tag_duration(audio))
        if audio is not None
        else None,
        color_transfer=_tag(video, "color_transfer"),
        color_space=_tag(video, "color_space"),
        color_range=_tag(video, "color_range"),
        color_primaries=_tag(video, "color_primaries"),
    )


def _tag(stream: dict[str, Any], name: str) -> str:
    value = str(stream.get(name) or "")
    return "" if value in ("unknown", "reserved", "unspecified") else value


def _input_allow_lists(formats: Sequence[str], protocols: Sequence[str] = INPUT_PROTOCOLS) -> dict[str, str]:
    """The options that keep one ffmpeg/ffprobe input to the given protocols and demuxers (files
    opened by a demuxer, such as the concat demuxer's parts, inherit them)."""
    return {"protocol_whitelist": ",".join(protocols), "format_whitelist": ",".join(formats)}


def _allow_list_args(formats: Sequence[str], protocols: Sequence[str] = INPUT_PROTOCOLS) -> list[str]:
    return [
        arg for name, value in _input_allow_lists(formats, protocols).items() for arg in (f"-{name}", value)
    ]


def media_input(path: Path, *, formats: Sequence[str] = VIDEO_DEMUXERS, **options: Any) -> Any:
    """``ffmpeg.input`` for a file of the worker's, read only with ``formats`` and only as a file:
    every ffmpeg input goes through here (``_run_ffmpeg`` refuses one that did not)."""
    return ffmpeg.input(str(path), **options, **_input_allow_lists(formats))


def _not_a_video(what: str, demuxer: str, code: ErrorCode) -> WorkerError:
    """``code`` for a file ffmpeg reads as something other than VIDEO_DEMUXERS (refused unopened)."""
    kind = _REFUSED_KINDS.get(demuxer) or (
        "a still image" if demuxer.endswith("_pipe") else f"a {demuxer} file"
    )
    return WorkerError(
        code,
        f"{what} is {kind} ({demuxer}), not a video file: upload a video file; only {ACCEPTED_CONTAINERS} "
        "videos are accepted (playlists and lists that point at other files are never opened)",
        details={"format": demuxer, "accepted": ACCEPTED_CONTAINERS},
    )


def _ffprobe_json(options: Sequence[str], path: Path, *, what: str, code: ErrorCode) -> dict[str, Any]:
    try:
        return ffprobe(
            path,
            *_allow_list_args(VIDEO_DEMUXERS),
            *options,
            timeout_s=PROBE_TIMEOUT_S,
            streams_and_format=False,
        )
    except ProbeError as exc:
        if exc.timed_out:
            raise WorkerError(code, f"reading {what} took longer than {PROBE_TIMEOUT_S:g} s") from exc
        if not exc.stderr:
            raise WorkerError(code, f"{what} cannot be read ({exc.reason})") from exc
        refused = _REFUSED_FORMAT.search(exc.stderr)
        if refused:
            raise _not_a_video(what, refused.group(1), code) from exc
        reason = _ffmpeg_reason(exc.stderr, [path])
        raise WorkerError(
            code,
            f"{what} cannot be read ({reason}): the file is truncated, damaged or not a video; "
            "upload a complete MP4, MOV, MKV or WebM file",
            details={"reason": reason},
        ) from exc


def _packets_duration(path: Path, index: int, *, what: str, code: ErrorCode) -> float | None:
    """A stream's duration from its packets' timestamps, for files that do not state it (a WebM
    recorded in a browser has no duration anywhere)."""
    data = _ffprobe_json(
        ["-select_streams", str(index), "-show_entries", "packet=pts_time,duration_time"],
        path,
        what=what,
        code=code,
    )
    starts, ends = [], []
    for packet in data.get("packets") or []:
        start = _float(packet.get("pts_time"))
        if start is not None:
            starts.append(start)
            ends.append(start + (_float(packet.get("duration_time")) or 0.0))
    return max(ends) - min(starts) if starts else None


def _rotation(stream: dict[str, Any]) -> int:
    for side_data in stream.get("side_data_list") or []:
        if "rotation" in side_data:
            return round(float(side_data["rotation"])) % 360
    return round(_float((stream.get("tags") or {}).get("rotate")) or 0) % 360


def _fraction(text: Any, sep: str = "/") -> Fraction:
    """A rate or ratio such as "30000/1001" or "4:3"; zero when absent or undefined ("0/0")."""
    try:
        num, _, den = str(text).partition(sep)
        return Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return Fraction(0)


def _float(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _int(text: Any) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def _tag_duration(stream: dict[str, Any]) -> float | None:
    """Matroska/WebM keep a stream's duration in a tag, "00:00:05.000000000"."""
    text = (stream.get("tags") or {}).get("DURATION")
    if not text:
        return None
    try:
        hours, minutes, seconds = str(text).split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


# -- the driving video ---------------------------------------------------------------------


@dataclass(frozen=True)
class DrivingVideo:
    path: Path
    frames: int  # N: the output must have exactly these many frames
    has_audio: bool
    source: VideoInfo  # the uploaded file
    info: VideoInfo  # the conformed file at ``path``


def conform_driving_video(
    src: Path,
    dest: Path,
    *,
    width: int = OUTPUT.width,
    height: int = OUTPUT.height,
    fps: int = OUTPUT.fps,
    max_duration_s: float,
    framing: str = "fit",
    cancel: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> DrivingVideo:
    """Re-encode the driving video to exactly ``width``x``height`` at ``fps``/1 CFR (see the module
    docstring for the frame count N) as H.264 yuv420p BT.709 + AAC 48 kHz stereo when it has audio.
    ``on_progress(done, N)`` follows ffmpeg's frame count; a set ``cancel`` stops ffmpeg (CANCELLED)."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
    what = "the driving video"
    probe = _probe(src, what=what, code=ErrorCode.INVALID_MEDIA)
    _check_source(probe, what=what, max_duration_s=max_duration_s)
    source = probe.info
    frames = frames_for(source.duration_s, fps)
    threads = cpu_threads()

    inp = media_input(src, threads=threads)
    video = _conformed_video(inp, probe, width=width, height=height, fps=fps, frames=frames, framing=framing)
    streams = [video]
    options: dict[str, Any] = {
        "c:v": "libx264",
        "preset": DRIVING_PRESET,
        "crf": DRIVING_CRF,
        "pix_fmt": "yuv420p",
        **BT709_TAGS,
        "r": fps,
        "threads": threads,
        "map_metadata": -1,
        "map_chapters": -1,
        "f": "mp4",
    }
    if probe.audio_index is not None:
        streams.append(_conformed_audio(inp, probe, total_samples=round(frames * AUDIO_RATE / fps)))
        options.update({"c:a": "aac", "b:a": AUDIO_BITRATE})

    dest.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(dest) as partial:
        _run_ffmpeg(
            ffmpeg.output(*streams, str(partial), **options),
            what=what,
            paths=[src, partial],
            cancel=cancel,
            on_frames=None if on_progress is None else lambda done: on_progress(min(done, frames), frames),
        )
        result = _probe(partial, what="the conformed driving video", code=ErrorCode.INVALID_MEDIA)
        problems = _problems(
            result, width=width, height=height, fps=fps, frames=frames, has_audio=source.has_audio
        )
        if problems:
            raise WorkerError(
                ErrorCode.INVALID_MEDIA,
                f"{what} could not be converted to {width}x{height} at {fps} fps: "
                + "; ".join(problems)
                + " (the file is probably damaged)",
                details={"problems": problems},
            )
    log_event(
        "driving_video_conformed",
        source=f"{source.width}x{source.height}@{float(source.fps):.3f} {source.video_codec}",
        duration_s=round(source.duration_s, 3),
        frames=frames,
        has_audio=source.has_audio,
        framing=framing,
        colours=f"{_source_matrix(probe)}/{_source_range(probe)}"
        + ("" if probe.color_space else " (untagged)"),
    )
    return DrivingVideo(path=dest, frames=frames, has_audio=source.has_audio, source=source, info=result.info)


def _check_source(probe: _Probe, *, what: str, max_duration_s: float) -> None:
    source = probe.info
    if probe.header_frames is not None and probe.header_frames > source.frames:
        raise WorkerError(
            ErrorCode.INVALID_MEDIA,
            f"{what} is truncated: its header lists {probe.header_frames} frames but only "
            f"{source.frames} are in the file; upload the complete file",
            details={"header_frames": probe.header_frames, "frames_present": source.frames},
        )
    if source.duration_s > max_duration_s:
        raise WorkerError(
            ErrorCode.INPUT_TOO_LARGE,
            f"{what} is {source.duration_s:.1f} s long; the limit is {max_duration_s:g} s: trim it",
            details={"duration_s": round(source.duration_s, 3), "max_duration_s": max_duration_s},
        )


def _conformed_video(
    inp: Any, probe: _Probe, *, width: int, height: int, fps: int, frames: int, framing: str = "fit"
) -> Any:
    """Upright, width x height (fitted or cropped), square pixels, SDR BT.709 limited range,
    ``fps`` CFR, exactly ``frames``."""
    hdr = probe.color_transfer in HDR_TRANSFERS
    scale_w, scale_h = _fit_size(probe, width, height) if framing == "fit" else (0, 0)
    if framing == "crop" or (scale_w, scale_h) == (0, 0):
        scale_w, scale_h = _cover_size(probe, width, height)
    # HDR keeps its own colours until tone mapping, which reads them from the frames' tags.
    colour = (
        {}
        if hdr
        else {
            "flags": _SCALE_FLAGS,
            "in_color_matrix": _source_matrix(probe),
            "out_color_matrix": "bt709",
            "in_range": _source_range(probe),
            "out_range": "tv",
        }
    )

    def resize(stream: Any) -> Any:
        stream = stream.filter("scale", scale_w, scale_h, **colour)
        if not hdr:  # convert here, with the matrices above, not in an implicit conversion later
            stream = stream.filter("format", "yuv420p")
        if scale_w >= width and scale_h >= height:
            stream = stream.filter("crop", width, height)
        else:
            x, y = 2 * ((width - scale_w) // 4), 2 * ((height - scale_h) // 4)
            stream = stream.filter("pad", width, height, x, y, color=FIT_FILL)
        return stream.filter("setsar", 1)

    # ffmpeg has already turned the picture upright (autorotate) before the first filter.
    video = inp[str(probe.video_index)].filter("setpts", "PTS-STARTPTS")
    # Resize the fewer frames: after dropping them (higher source rate), before repeating (lower).
    video = resize(video.filter("fps", fps)) if probe.info.fps > fps else resize(video).filter("fps", fps)
    if probe.color_transfer in HDR_TRANSFERS:
        video = _tone_mapped(video)
    return video.filter("tpad", stop_mode="clone", stop=_END_PAD_FRAMES).filter("trim", end_frame=frames)


def _tone_mapped(video: Any) -> Any:
    """HDR (PQ or HLG: an iPhone's default) to SDR BT.709, what ComfyUI and the model assume;
    merely dropping to 8 bits would leave the picture washed out."""
    if not _has_filter("zscale"):
        log_event("hdr_not_tone_mapped", level="warning", reason="this ffmpeg has no zscale filter")
        return video
    return (
        video.filter("zscale", t="linear", npl=100)
        .filter("format", "gbrpf32le")
        .filter("zscale", p="bt709")
        .filter("tonemap", tonemap="hable", desat=0)
        .filter("zscale", t="bt709", m="bt709", r="tv")
        .filter("format", "yuv420p")
    )


@functools.cache
def _has_filter(name: str) -> bool:
    proc = subprocess.run(
        ["ffmpeg", "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30, check=False
    )
    return re.search(rf"^\s*\S+\s+{re.escape(name)}\s", proc.stdout, re.M) is not None


def _source_matrix(probe: _Probe) -> str:
    """The source's YUV matrix (scale filter name): its tag, else what players assume for an
    untagged stream: BT.709 for HD (a side of 1280 or more, or more than 576 lines), else BT.601."""
    tagged = _SCALE_MATRICES.get(probe.color_space)
    if tagged:
        return tagged
    long_side, short_side = max(probe.coded_size), min(probe.coded_size)
    return "bt709" if long_side >= 1280 or short_side > 576 else "bt601"


def _source_range(probe: _Probe) -> str:
    """ "pc" (full range) when tagged so or stored as yuvj (JPEG-range), else "tv" (limited)."""
    if probe.color_range == "pc" or probe.info.pix_fmt.startswith("yuvj"):
        return "pc"
    return "tv"


def _shown_size(probe: _Probe) -> tuple[float, float]:
    """The picture's size upright with square pixels."""
    shown_w = probe.coded_size[0] * float(probe.sample_aspect)
    shown_h = float(probe.coded_size[1])
    if probe.rotation % 180 == 90:
        shown_w, shown_h = shown_h, shown_w
    return shown_w, shown_h


def _fit_size(probe: _Probe, width: int, height: int) -> tuple[int, int]:
    """The even size the picture scales to so all of it fits in width x height; (0, 0) when the
    bars would be thinner than FIT_CROP_TOLERANCE (then it is cropped: see _cover_size)."""
    shown_w, shown_h = _shown_size(probe)
    factor = min(width / shown_w, height / shown_h)
    fit_w = min(width, max(2, 2 * round(shown_w * factor / 2)))
    fit_h = min(height, max(2, 2 * round(shown_h * factor / 2)))
    if fit_w >= width * (1 - FIT_CROP_TOLERANCE) and fit_h >= height * (1 - FIT_CROP_TOLERANCE):
        return 0, 0
    return fit_w, fit_h


def _cover_size(probe: _Probe, width: int, height: int) -> tuple[int, int]:
    """The even size the (upright, square-pixel) picture scales to so it covers width x height."""
    shown_w, shown_h = _shown_size(probe)
    factor = max(width / shown_w, height / shown_h)

    def even_at_least(value: float, minimum: int) -> int:
        return max(minimum, 2 * math.ceil(value / 2 - 1e-6))

    return even_at_least(shown_w * factor, width), even_at_least(shown_h * factor, height)


def _conformed_audio(inp: Any, probe: _Probe, *, total_samples: int) -> Any:
    """48 kHz stereo starting with the first video frame, padded or cut to ``total_samples``."""
    assert probe.audio_start_s is not None
    offset = round((probe.audio_start_s - probe.video_start_s) * AUDIO_RATE)
    audio = (
        inp[str(probe.audio_index)]
        .filter("aresample", AUDIO_RATE)
        .filter("aformat", sample_fmts="fltp", channel_layouts="stereo")
        .filter("asetpts", "PTS-STARTPTS")
    )
    if offset > 0:  # the audio starts after the first frame: silence before it
        audio = audio.filter("adelay", delays=f"{offset}S", all=1)
    elif offset < 0:  # it starts before: drop what precedes the first frame
        audio = audio.filter("atrim", start_sample=-offset).filter("asetpts", "PTS-STARTPTS")
    return audio.filter("apad", whole_len=total_samples).filter("atrim", end_sample=total_samples)


# -- the output ----------------------------------------------------------------------------

_BT709_SPS = "h264_metadata=" + ":".join(
    ("colour_primaries=1", "transfer_characteristics=1", "matrix_coefficients=1", "video_full_range_flag=0")
)


def finalize_output(
    raw: Path, driving: DrivingVideo, dest: Path, *, cancel: threading.Event | None = None
) -> VideoInfo:
    """The deliverable: ``raw`` (what ComfyUI made) cut to ``driving.frames`` frames, with the
    conformed driving audio (when there is some), ``+faststart``, checked by validate_output.

    The video stream is copied as is when it is H.264 yuv420p and its first N packets are exactly
    its first N frames (always true without B-frames), only its colour tags rewritten to BT.709
    (SaveVideo tags the transfer sRGB); otherwise it is re-encoded, from its tagged colours (BT.709
    when untagged) to BT.709. Audio or metadata in ``raw`` (ComfyUI stores the whole prompt there)
    are dropped."""
    what = "the generated video"
    probe = _probe(raw, what=what, code=ErrorCode.OUTPUT_INVALID)
    frames = driving.frames
    if probe.info.frames < frames:
        raise WorkerError(
            ErrorCode.OUTPUT_INVALID,
            f"generated {probe.info.frames} frames, expected {frames}",
            details={"frames": probe.info.frames, "expected_frames": frames},
        )
    copy = (
        probe.info.video_codec == OUTPUT.codec
        and probe.info.pix_fmt == OUTPUT.pix_fmt
        and (probe.info.frames == frames or _cut_keeps_order(raw, frames))
    )
    video = media_input(raw)[str(probe.video_index)]
    video_options: dict[str, Any] = {"map_metadata": -1, "map_chapters": -1, "f": "mp4", **BT709_TAGS}
    if copy:
        # The tags in the stream itself (SPS); the options above set the container's.
        video_options.update({"c:v": "copy", "frames:v": frames, "bsf:v": _BT709_SPS})
    else:
        video = (
            video.filter("trim", end_frame=frames)
            .filter(
                "scale",
                flags=_SCALE_FLAGS,
                in_color_matrix=_SCALE_MATRICES.get(probe.color_space, "bt709"),
                out_color_matrix="bt709",
                in_range=_source_range(probe),
                out_range="tv",
            )
            .filter("format", "yuv420p")
        )
        video_options.update(
            {
                "c:v": "libx264",
                "preset": OUTPUT_PRESET,
                "crf": OUTPUT_CRF,
                "pix_fmt": "yuv420p",
                "threads": cpu_threads(),
            }
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_path(dest) as partial, _scratch_path(dest, "video") as cut:
        # Two steps: reaching -frames:v would end the other streams of the same output too.
        _run_ffmpeg(
            ffmpeg.output(video, str(cut), **video_options),
            what=what,
            paths=[raw, cut],
            code=ErrorCode.OUTPUT_INVALID,
            cancel=cancel,
        )
        streams = [media_input(cut)["v:0"]]
        if driving.has_audio:
            # Already AAC and exactly N frames long (conform_driving_video): copied as is.
            streams.append(media_input(driving.path)["a:0"])
        _run_ffmpeg(
            ffmpeg.output(*streams, str(partial), c="copy", movflags="+faststart", f="mp4"),
            what="the output video",
            paths=[cut, driving.path, partial],
            code=ErrorCode.OUTPUT_INVALID,
            cancel=cancel,
        )
        info = validate_output(
            partial,
            frames=frames,
            has_audio=driving.has_audio,
            width=driving.info.width,
            height=driving.info.height,
            fps=int(driving.info.fps),
        )
    log_event(
        "output_finalized",
        generated_frames=probe.info.frames,
        frames=frames,
        video="copied" if copy else "re-encoded",
        has_audio=driving.has_audio,
    )
    return info


def validate_output(
    path: Path,
    *,
    frames: int,
    has_audio: bool,
    width: int = OUTPUT.width,
    height: int = OUTPUT.height,
    fps: int = OUTPUT.fps,
) -> VideoInfo:
    """``path``'s VideoInfo when it is exactly what we deliver; OUTPUT_INVALID listing every
    problem (in ``details["problems"]``) otherwise."""
    probe = _probe(path, what="the output video", code=ErrorCode.OUTPUT_INVALID)
    problems = _problems(probe, width=width, height=height, fps=fps, frames=frames, has_audio=has_audio)
    if problems:
        raise WorkerError(
            ErrorCode.OUTPUT_INVALID,
            "the output video is not valid: " + "; ".join(problems),
            details={"problems": problems},
        )
    return probe.info


def _problems(probe: _Probe, *, width: int, height: int, fps: int, frames: int, has_audio: bool) -> list[str]:
    info = probe.info
    problems = []
    if info.video_codec != OUTPUT.codec:
        problems.append(f"video codec is {info.video_codec}, expected {OUTPUT.codec}")
    if info.pix_fmt != OUTPUT.pix_fmt:
        problems.append(f"pixel format is {info.pix_fmt}, expected {OUTPUT.pix_fmt}")
    if (info.width, info.height) != (width, height):
        problems.append(f"size is {info.width}x{info.height}, expected {width}x{height}")
    if probe.rotation:
        problems.append(f"has {probe.rotation}° rotation metadata, expected none")
    if probe.sample_aspect != 1:
        problems.append(f"sample aspect ratio is {probe.sample_aspect}, expected 1")
    if info.fps != fps:
        problems.append(f"average frame rate is {info.fps}, expected {fps}/1")
    if probe.r_frame_rate != fps:
        problems.append(f"r_frame_rate is {probe.r_frame_rate}, expected {fps}/1")
    if info.frames != frames:
        problems.append(f"has {info.frames} frames, expected {frames}")
    if has_audio and not info.has_audio:
        problems.append("has no audio track, but the driving video has one")
    elif info.has_audio and not has_audio:
        problems.append("has an audio track, but the driving video has none")
    elif (
        info.has_audio
        and probe.audio_duration_s is not None
        and abs(probe.audio_duration_s - info.duration_s) > AUDIO_SYNC_TOLERANCE_S
    ):
        problems.append(f"audio lasts {probe.audio_duration_s:.3f} s, the video {info.duration_s:.3f} s")
    return problems


def _cut_keeps_order(path: Path, frames: int) -> bool:
    """Whether the first ``frames`` packets in decode order are the first ``frames`` in display
    order: then a stream copy cut after them is exact (and every kept frame's references are kept,
    as references always precede in decode order)."""
    data = _ffprobe_json(
        ["-select_streams", "v:0", "-show_entries", "packet=pts"],
        path,
        what="the generated video",
        code=ErrorCode.OUTPUT_INVALID,
    )
    pts = [_int(packet.get("pts")) for packet in data.get("packets") or []]
    if len(pts) <= frames or any(value is None for value in pts):
        return False
    kept, dropped = pts[:frames], pts[frames:]
    return max(kept) < min(dropped)  # type: ignore[type-var]


# -- running ffmpeg ------------------------------------------------------------------------


def cpu_threads() -> int:
    """The CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota
    (containers often see every CPU of the host but may use only a few)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _run_ffmpeg(
    stream: Any,
    *,
    what: str,
    paths: Sequence[Path],
    code: ErrorCode = ErrorCode.INVALID_MEDIA,
    cancel: threading.Event | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> None:
    """Runs ffmpeg; a set ``cancel`` stops it at once (CANCELLED), ``on_frames`` hears its frame count."""
    args = stream.global_args("-nostdin", "-hide_banner", "-v", "error").overwrite_output().compile()
    inputs = args.count("-i")
    if args.count("-protocol_whitelist") != inputs or args.count("-format_whitelist") != inputs:
        raise ValueError(
            "every ffmpeg input must come from media_input (its protocol and format allow-lists)"
        )
    try:
        proc = run_ffmpeg(args, timeout_s=FFMPEG_TIMEOUT_S, cancel=cancel, on_frames=on_frames)
    except FfmpegStopped as exc:
        if exc.reason == "cancelled":
            raise WorkerError(ErrorCode.CANCELLED, "the job was cancelled") from exc
        raise WorkerError(
            ErrorCode.TIMEOUT, f"converting {what} took longer than {FFMPEG_TIMEOUT_S:g} s"
        ) from exc
    # ffmpeg 5.1 exits 0 when the disk fills up while it writes the trailer (the file is then
    # unreadable, and would be blamed on the input): its log is read whatever its exit status.
    if mentions_disk_full(proc.stderr):
        raise disk_full_error(f"ffmpeg writing {what}")
    if proc.returncode != 0:
        reason = _ffmpeg_reason(proc.stderr, paths)
        raise WorkerError(code, f"ffmpeg could not convert {what} ({reason})", details={"reason": reason})


def _ffmpeg_reason(stderr: str, paths: Sequence[Path]) -> str:
    """ffmpeg's complaint in one line, without local paths or "[demuxer @ 0x...]" prefixes."""
    lines = [re.sub(r"\[[^\]]* @ 0x[0-9a-f]+\] ", "", line.strip()) for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "no error message"
    # The first line usually says what (``moov atom not found``), the last what it led to.
    text = lines[0] if lines[0] == lines[-1] else f"{lines[0]}; {lines[-1]}"
    for path in paths:
        text = text.replace(str(path), path.name)
    return text[:300]


@contextmanager
def _scratch_path(dest: Path, tag: str = "part") -> Iterator[Path]:
    """A hidden sibling of ``dest`` (same folder, so renaming it is atomic), removed on exit."""
    scratch = dest.with_name(f".{dest.stem}.{uuid.uuid4().hex[:8]}.{tag}{dest.suffix}")
    try:
        yield scratch
    finally:
        scratch.unlink(missing_ok=True)


@contextmanager
def _atomic_path(dest: Path) -> Iterator[Path]:
    """A temporary path renamed to ``dest`` when the block succeeds, removed when it fails."""
    with _scratch_path(dest) as partial:
        yield partial
        os.replace(partial, dest)
