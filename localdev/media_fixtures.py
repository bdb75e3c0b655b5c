"""Media made on the spot for tests, the demo, the benchmark and the smoke test.

Nothing here is committed media: every file is generated with Pillow or ffmpeg (lavfi
``testsrc2``/``color`` + ``sine``) when needed, fast (``-preset ultrafast``), small by default.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw

_EXIF_ORIENTATION_TAG = 0x0112


def make_avatar_image(
    path: Path,
    *,
    width: int = 512,
    height: int = 768,
    fmt: str = "PNG",
    exif_orientation: int | None = None,
    mode: str = "RGB",
) -> Path:
    """A portrait-like picture: a head and shoulders on a two-tone background, with a red
    marker in the top-left corner (so a rotation shows). ``fmt``: any format Pillow writes
    (PNG, JPEG, WEBP, GIF, BMP...). ``exif_orientation`` is stored as the EXIF Orientation tag
    (JPEG/WebP/PNG), the pixels being left as drawn. ``mode``: RGB, RGBA (transparent corners),
    L, P..."""
    image = Image.new("RGB", (width, height), (70, 110, 160))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height * 2 // 3, width, height), fill=(40, 60, 90))
    cx, cy, r = width // 2, height * 2 // 5, max(4, min(width, height) // 6)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(230, 190, 160))
    draw.rectangle((cx - 2 * r, cy + r, cx + 2 * r, height), fill=(200, 60, 60))
    draw.rectangle((0, 0, max(2, width // 8), max(2, height // 8)), fill=(255, 0, 0))
    if mode == "RGBA":
        image = image.convert("RGBA")
        ImageDraw.Draw(image).rectangle((width - width // 4, 0, width, height // 4), fill=(0, 0, 0, 0))
    elif mode == "I;16":  # 16-bit greyscale: 0..65535
        image = image.convert("L").convert("I").point(lambda value: value * 257).convert("I;16")
    elif mode != "RGB":
        image = image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[_EXIF_ORIENTATION_TAG] = exif_orientation
        options["exif"] = exif.tobytes()
    if fmt.upper() in ("JPEG", "JPG") and image.mode not in ("RGB", "L", "CMYK"):
        raise ValueError(f"JPEG cannot store mode {image.mode}")
    image.save(path, format=fmt, **options)
    return path


def make_bomb_png(path: Path, *, width: int = 20_000, height: int = 20_000) -> Path:
    """A valid 1-bit black PNG of ``width`` x ``height``: a few KB on disk, ``width * height``
    bytes of memory once Pillow decodes it. Compressed row block by row block, never held whole."""
    rows = b"\x00" * (1 + (width + 7) // 8) * 512  # 512 rows: filter byte + packed pixels each
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(rows) for _ in range(height // 512)]
    parts.append(compressor.compress(rows[: (height % 512) * (1 + (width + 7) // 8)]))
    idat = b"".join(parts) + compressor.flush()
    return _write_png(path, struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0), idat)


def make_corrupt_image(path: Path) -> Path:
    """A PNG with a valid signature and header (Pillow opens it) whose pixel data is garbage
    (decoding fails)."""
    garbage = bytes((i * 73 + 41) % 251 for i in range(4096))
    return _write_png(path, struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0), garbage)


def _write_png(path: Path, ihdr: bytes, idat: bytes) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_truncated_file(path: Path, *, source: Path, keep: float = 0.5) -> Path:
    """The first ``keep`` fraction of ``source``'s bytes (a transfer cut short)."""
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_truncated_mp4(path: Path, *, source: Path, keep: float = 0.5) -> Path:
    """``source`` (an MP4) cut after ``keep`` of its bytes. With ffmpeg's default layout the
    index (moov) is at the end, so it is lost; remux with ``-movflags +faststart`` first to get
    a file whose index survives but whose frames are missing."""
    return make_truncated_file(path, source=source, keep=keep)


_PATTERNS = {
    # red over blue / red beside blue: where each half lands shows how a frame was turned and cropped
    "top-bottom": "drawbox=x=0:y=0:w=iw:h=ih/2:color=red:t=fill",
    "left-right": "drawbox=x=0:y=0:w=iw/2:h=ih:color=red:t=fill",
}


def make_driving_video(
    path: Path,
    *,
    seconds: float,
    fps: float = 24,
    width: int = 1280,
    height: int = 720,
    audio: bool = True,
    video_codec: str = "libx264",
    rotate: int = 0,
    pattern: str = "testsrc2",
    audio_delay_s: float = 0.0,
    faststart: bool = False,
) -> Path:
    """An MP4 of ``seconds`` of video (``fps`` may be fractional: 29.97) with a 440 Hz tone as
    AAC 48 kHz when ``audio``, made with ffmpeg's lavfi sources in well under a second for small
    sizes.

    ``video_codec``: libx264 (yuv420p, ultrafast, no B-frames) or anything ffmpeg encodes
    (``mpeg4``...). ``rotate``: display rotation metadata, in degrees as ffprobe reports it
    (phones held upright record landscape frames tagged 90 or -90). ``pattern``: ``testsrc2`` (moving test
    card), ``top-bottom`` (red over blue) or ``left-right`` (red beside blue).
    ``audio_delay_s``: the audio track starts that much after the first frame (and lasts
    ``seconds - audio_delay_s``). ``faststart``: index at the front of the file."""
    rate = Fraction(fps).limit_denominator(1001)
    size = f"{width}x{height}"
    if pattern == "testsrc2":
        source = f"testsrc2=size={size}:rate={rate}:duration={seconds}"
    else:
        source = f"color=c=blue:size={size}:rate={rate}:duration={seconds},{_PATTERNS[pattern]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-f", "lavfi", "-i", source]
    if audio:
        tone = f"sine=frequency=440:sample_rate=48000:duration={seconds - audio_delay_s}"
        args += (["-itsoffset", str(audio_delay_s)] if audio_delay_s else []) + ["-f", "lavfi", "-i", tone]
    args += ["-map", "0:v"] + (["-map", "1:a", "-c:a", "aac", "-b:a", "96k"] if audio else [])
    args += ["-c:v", video_codec, "-pix_fmt", "yuv420p", "-t", str(seconds)]
    if video_codec == "libx264":
        args += ["-preset", "ultrafast"]
    if faststart:
        args += ["-movflags", "+faststart"]
    target = path if not rotate else path.with_name(path.stem + ".unrotated" + path.suffix)
    _ffmpeg(*args, str(target))
    if rotate:
        _set_rotation(target, path, rotate)
        target.unlink()
    return path


def _set_rotation(src: Path, dest: Path, degrees: int) -> None:
    major = _ffmpeg_major_version()
    if major >= 6:  # the "rotate" tag is no longer written; -display_rotation is what ffprobe shows
        _ffmpeg("-display_rotation:v:0", str(degrees), "-i", str(src), "-c", "copy", str(dest))
    else:
        _ffmpeg("-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={degrees % 360}", str(dest))


def _ffmpeg_major_version() -> int:
    banner = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"ffmpeg version \D*(\d+)", banner)
    return int(match.group(1)) if match else 0


def _ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (apt-get install ffmpeg)")
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-y", "-hide_banner", "-v", "error", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.strip()[-600:]}")
