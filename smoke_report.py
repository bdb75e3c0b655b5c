"""What a finished job looks like around its window joins: pictures and numbers for a person.

Used by ``smoke_test.py --report-dir DIR`` (and ``make demo``); standalone it needs Pillow and
ffmpeg only (the window plan comes from ``worker.graph.windows`` when the repository is importable).

Wan2.2 Animate makes a long video out of 77-frame windows; each later window continues from the
previous one's last 5 frames and adds 72 new ones, so window k+1's new frames start at output
frame ``77 + 72 * (k - 1)`` (a *join*). The known failure is a visible step there: a jump in
brightness or colour, or colours that drift a little more after each window. This module decodes
the driving video (conformed as the worker does: 24 fps; fitted with black bars, or scaled to
cover and centre-cropped for ``framing: crop``) and
the output through an ffmpeg pipe, one small frame at a time (never the whole video in memory),
and measures per output frame:

* ``change``: the mean absolute difference to the previous frame over all pixels and channels
  (0..255) -- the frame-to-frame motion;
* ``mean``: the mean R, G, B (0..255).

Seam score of a join at frame j = change(j) / the clip's median change (its typical motion), for
the output and for the driving video at the same frame. A join *stands out* when the output's
ratio is over ``SEAM_RATIO`` (3x) AND over ``DRIVING_MARGIN`` (2x) the driving video's ratio
there (a cut or flash in the driving video is not the model's fault). When the median change is
below ``MOTION_FLOOR`` (1 grey level: encoder noise on a still picture) the clip has "no motion":
no ratio is reported, and the change is compared to the floor instead (a still output that jumps
at a join is a seam all the same). Colour: the mean colour of the 3 frames after the join minus
the 3 before, per channel, output and driving; a join also stands out when an output channel
steps by more than ``COLOUR_STEP`` (4 levels) beyond what the driving video does there and by
more than 3x the clip's typical colour step (how much its mean colour moves on its own).

Writes ``contact_sheet.png`` (more sheets, ``contact_sheet_2.png``..., past ``JOINS_PER_SHEET``
joins): per join the 3 frames before and the 3 after, driving above output, each labelled with
its frame number, a red bar at the join; ``timeline.png``: mean R, G, B and frame-to-frame
change over time, output and driving, joins as vertical lines (red when a join stands out).
"""

from __future__ import annotations

import math
import statistics
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageStat

FPS = 24
WINDOW_FRAMES, MOTION_FRAMES = 77, 5  # the pinned workflow's windows (worker/graph/windows.py)
TILE_W, TILE_H = 320, 180  # frames are analysed and shown at this size (16:9, like 1280x720)
AROUND = 3  # frames shown and compared on each side of a join
MOTION_FLOOR = 1.0  # grey levels: a median change below this is encoder noise on a still picture
SEAM_RATIO = 3.0  # the output's change across a join vs the clip's median change
DRIVING_MARGIN = 2.0  # ... and vs the driving video's own ratio at the same frame
COLOUR_STEP = 4.0  # grey levels of mean colour step across a join, beyond the driving video's
JOINS_PER_SHEET = 6
TIMELINE_SIZE = (1600, 900)


# -- the window plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowPlan:
    frames: int
    window_frames: int
    motion_frames: int
    windows: int
    joins: list[int]  # output frames where window 2, 3, ... start adding frames
    source: str


def window_plan(frames: int, windows_section: dict[str, Any] | None = None) -> WindowPlan:
    """The joins of an output of ``frames`` frames: from ``worker.graph.windows.plan_windows`` (with the
    bindings' ``windows`` section) when the repository is importable, else the same formula."""
    section = windows_section or {}
    window_frames = int(section.get("window_frames", WINDOW_FRAMES))
    motion_frames = int(section.get("motion_frames", MOTION_FRAMES))
    last_window = str(section.get("last_window", "full"))
    try:
        from worker.graph.windows import plan_windows
    except ImportError:
        step = window_frames - motion_frames
        count = 1 + math.ceil(max(0, frames - window_frames) / step)
        joins = [window_frames + step * (k - 1) for k in range(1, count)]
        source = "formula 77 + 72*(k-1) (worker.graph.windows not importable)"
    else:
        plan = plan_windows(
            frames, window_frames=window_frames, motion_frames=motion_frames, last_window=last_window
        )
        joins, produced = [], 0
        for window in plan:
            if window.index > 1:
                joins.append(produced)
            produced += window.new_frames
        count = len(plan)
        source = "worker.graph.windows.plan_windows"
    return WindowPlan(frames, window_frames, motion_frames, count, joins, source)


# -- frames ---------------------------------------------------------------------------------------


FRAMINGS = ("fit", "crop")  # the job's ``framing`` (worker/request.py)


def iter_frames(path: Path, *, max_frames: int | None = None, framing: str = "fit") -> Iterator[Image.Image]:
    """Frames of ``path`` at 24 fps in TILE_W x TILE_H as the worker frames a driving video (at a
    small size): fitted inside with black bars, or scaled to cover and centre-cropped; RGB images,
    one at a time. A 16:9 video (every output) comes out the same either way."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
    if framing == "crop":
        size = f"scale={TILE_W}:{TILE_H}:force_original_aspect_ratio=increase,crop={TILE_W}:{TILE_H}"
    else:
        size = (
            f"scale={TILE_W}:{TILE_H}:force_original_aspect_ratio=decrease,"
            f"pad={TILE_W}:{TILE_H}:(ow-iw)/2:(oh-ih)/2:black"
        )
    vf = f"setpts=PTS-STARTPTS,fps={FPS},{size},setsar=1"
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", vf]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    size = TILE_W * TILE_H * 3
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    count = 0
    try:
        while max_frames is None or count < max_frames:
            data = process.stdout.read(size)
            if len(data) < size:
                break
            count += 1
            yield Image.frombytes("RGB", (TILE_W, TILE_H), data)
    finally:
        process.stdout.close()
        if process.poll() is None:
            process.kill()
        process.wait()
        error = process.stderr.read().decode(errors="replace").strip()
        process.stderr.close()
    if count == 0:
        raise ValueError(f"ffmpeg decoded no frames from {path.name}: {error[:300]}")


@dataclass
class Series:
    """Per-frame measurements of one video; ``kept`` holds the frames asked for (small images)."""

    means: list[tuple[float, float, float]] = field(default_factory=list)
    changes: list[float] = field(default_factory=list)  # changes[i]: frame i vs i-1; changes[0] = 0
    kept: dict[int, Image.Image] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.means)

    @property
    def median_change(self) -> float:
        return statistics.median(self.changes[1:]) if len(self.changes) > 1 else 0.0

    def change_at(self, frame: int) -> float | None:
        return self.changes[frame] if 0 < frame < len(self.changes) else None

    def mean_colour(self, first: int, stop: int) -> list[float] | None:
        rows = self.means[max(0, first) : max(0, stop)]
        if not rows:
            return None
        return [sum(row[c] for row in rows) / len(rows) for c in range(3)]


def measure(path: Path, keep: set[int], *, max_frames: int | None = None, framing: str = "fit") -> Series:
    series = Series()
    previous: Image.Image | None = None
    for index, frame in enumerate(iter_frames(path, max_frames=max_frames, framing=framing)):
        r, g, b = ImageStat.Stat(frame).mean
        series.means.append((r, g, b))
        if previous is None:
            series.changes.append(0.0)
        else:
            series.changes.append(sum(ImageStat.Stat(ImageChops.difference(frame, previous)).mean) / 3)
        if index in keep:
            series.kept[index] = frame
        previous = frame
    return series


# -- scores ---------------------------------------------------------------------------------------


def _ratio(change: float | None, median: float) -> tuple[float | None, float]:
    """(ratio to the median, or None when the clip has no motion; ratio used for the decision,
    against the median or MOTION_FLOOR, whichever is larger)."""
    if change is None:
        return None, 0.0
    effective = change / max(median, MOTION_FLOOR)
    return (None if median < MOTION_FLOOR else change / median), effective


def _motion(median: float) -> str:
    return "no motion" if median < MOTION_FLOOR else "moving"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


@dataclass
class JoinScore:
    join: int  # 1-based
    frame: int  # first output frame of window join+1
    window: int
    output_change: float | None
    output_ratio: float | None
    driving_change: float | None
    driving_ratio: float | None
    output_colour_step: list[float] | None  # mean R, G, B of the 3 frames after minus the 3 before
    driving_colour_step: list[float] | None
    stands_out: bool
    reasons: list[str]


def score_joins(output: Series, driving: Series | None, joins: Sequence[int]) -> list[JoinScore]:
    scores = []
    out_median = output.median_change
    drv_median = driving.median_change if driving else 0.0
    typical_step = typical_colour_step(output)
    for number, frame in enumerate(joins, start=1):
        if frame >= output.frames:
            continue
        out_change = output.change_at(frame)
        out_ratio, out_effective = _ratio(out_change, out_median)
        drv_change = driving.change_at(frame) if driving else None
        drv_ratio, drv_effective = _ratio(drv_change, drv_median)
        out_step = _step(output, frame)
        drv_step = _step(driving, frame) if driving else None
        reasons = []
        if out_effective > SEAM_RATIO and out_effective > DRIVING_MARGIN * drv_effective:
            against = "the clip's median change" if out_ratio is not None else "the no-motion floor"
            reasons.append(
                f"output changes {out_effective:.1f}x {against} across the join "
                f"(driving {drv_effective:.1f}x there)"
            )
        if out_step is not None:
            excess = [abs(out_step[c]) - (abs(drv_step[c]) if drv_step else 0.0) for c in range(3)]
            worst = max(range(3), key=lambda c: excess[c])
            if excess[worst] > COLOUR_STEP and abs(out_step[worst]) > SEAM_RATIO * typical_step:
                reasons.append(
                    f"mean {'RGB'[worst]} steps {out_step[worst]:+.1f} levels across the join "
                    f"(driving {drv_step[worst] if drv_step else 0.0:+.1f})"
                )
        scores.append(
            JoinScore(
                join=number,
                frame=frame,
                window=number + 1,
                output_change=out_change,
                output_ratio=out_ratio,
                driving_change=drv_change,
                driving_ratio=drv_ratio,
                output_colour_step=out_step,
                driving_colour_step=drv_step,
                stands_out=bool(reasons),
                reasons=reasons,
            )
        )
    return scores


def _step(series: Series, frame: int) -> list[float] | None:
    before = series.mean_colour(frame - AROUND, frame)
    after = series.mean_colour(frame, min(frame + AROUND, series.frames))
    if before is None or after is None:
        return None
    return [after[c] - before[c] for c in range(3)]


def typical_colour_step(series: Series) -> float:
    """The clip's median colour step (largest channel, 3 frames after vs 3 before any frame), at
    least MOTION_FLOOR / 2: how much the mean colour moves on its own."""
    steps = [_step(series, f) for f in range(AROUND, series.frames - AROUND + 1)]
    sizes = [max(abs(v) for v in step) for step in steps if step is not None]
    return max(statistics.median(sizes) if sizes else 0.0, MOTION_FLOOR / 2)


def window_colours(series: Series, plan: WindowPlan) -> list[list[float]]:
    """Mean R, G, B of each window's new frames."""
    starts = [0, *plan.joins]
    ends = [*plan.joins, series.frames]
    return [series.mean_colour(a, b) or [0.0, 0.0, 0.0] for a, b in zip(starts, ends, strict=True)]


# -- the whole analysis ---------------------------------------------------------------------------


def analyse(
    output_path: Path,
    driving_path: Path | None,
    out_dir: Path,
    *,
    frames: int | None = None,
    windows_section: dict[str, Any] | None = None,
    framing: str = "fit",
) -> dict[str, Any]:
    """Measures ``output_path`` (and the driving video, framed as the job asked), writes the
    pictures into ``out_dir`` and returns the numbers (JSON-ready), with ``warnings`` for joins
    that stand out."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if frames is None:  # how long the output is decides the plan: one pass to count
        frames = measure(output_path, set()).frames
    plan = window_plan(frames, windows_section)
    keep = _frames_to_show(plan, frames)
    output = measure(output_path, keep, max_frames=frames)
    driving = measure(driving_path, keep, max_frames=output.frames, framing=framing) if driving_path else None
    joins = score_joins(output, driving, plan.joins)
    warnings = [
        f"join {j.join} (output frame {j.frame}, window {j.window}) stands out: {'; '.join(j.reasons)}"
        for j in joins
        if j.stands_out
    ]
    sheets = write_contact_sheets(output, driving, plan, joins, out_dir)
    timeline = write_timeline(output, driving, plan, joins, out_dir / "timeline.png")
    result: dict[str, Any] = {
        "output_frames": output.frames,
        "driving_frames": driving.frames if driving else None,
        "window_plan": asdict(plan),
        "output_median_change": round(output.median_change, 3),
        "driving_median_change": round(driving.median_change, 3) if driving else None,
        "output_motion": _motion(output.median_change),
        "output_typical_colour_step": round(typical_colour_step(output), 3),
        "driving_motion": _motion(driving.median_change) if driving else None,
        "thresholds": {
            "seam_ratio": SEAM_RATIO,
            "driving_margin": DRIVING_MARGIN,
            "motion_floor": MOTION_FLOOR,
            "colour_step": COLOUR_STEP,
        },
        "joins": [{k: _round(v) for k, v in asdict(j).items()} for j in joins],
        "window_mean_colour": {
            "output": [_round(c) for c in window_colours(output, plan)],
            "driving": [_round(c) for c in window_colours(driving, plan)] if driving else None,
        },
        "pictures": [str(path) for path in [*sheets, timeline]],
        "warnings": warnings,
    }
    return result


def _frames_to_show(plan: WindowPlan, frames: int) -> set[int]:
    if plan.joins:
        return {f for j in plan.joins for f in range(j - AROUND, j + AROUND) if 0 <= f < frames}
    return set(_samples(frames))


def _samples(frames: int) -> list[int]:
    """Six frames spread over a clip without joins."""
    return sorted({round(i * (frames - 1) / 5) for i in range(6)})


# -- pictures -------------------------------------------------------------------------------------


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # an old Pillow or one without FreeType: the fixed bitmap font
        return ImageFont.load_default()


BG, INK, GREY, RED, JOIN = (255, 255, 255), (20, 20, 20), (150, 150, 150), (210, 30, 30), (120, 60, 200)
LABEL_W = 90


def write_contact_sheets(
    output: Series, driving: Series | None, plan: WindowPlan, joins: list[JoinScore], out_dir: Path
) -> list[Path]:
    """contact_sheet.png (and _2, _3... past JOINS_PER_SHEET joins)."""
    for old in out_dir.glob("contact_sheet*.png"):
        old.unlink()
    blocks: list[Image.Image] = []
    if joins:
        blocks = [_join_block(output, driving, j) for j in joins]
    else:
        title = (
            f"no joins: {output.frames} frames fit in one window of {plan.window_frames}; "
            "frames across the clip"
        )
        blocks = [_block(output, driving, _samples(output.frames), None, title, INK)]
    paths = []
    for number, start in enumerate(range(0, len(blocks), JOINS_PER_SHEET), start=1):
        group = blocks[start : start + JOINS_PER_SHEET]
        width = max(b.width for b in group)
        sheet = Image.new("RGB", (width, sum(b.height for b in group)), BG)
        y = 0
        for block in group:
            sheet.paste(block, (0, y))
            y += block.height
        path = out_dir / ("contact_sheet.png" if number == 1 else f"contact_sheet_{number}.png")
        sheet.save(path, optimize=True)
        paths.append(path)
    return paths


def _join_block(output: Series, driving: Series | None, join: JoinScore) -> Image.Image:
    frames = [f for f in range(join.frame - AROUND, join.frame + AROUND) if f in output.kept]
    ratio = "no motion" if join.output_ratio is None else f"{join.output_ratio:.1f}x median"
    drv = (
        "-"
        if join.driving_change is None
        else ("no motion" if join.driving_ratio is None else f"{join.driving_ratio:.1f}x median")
    )
    title = (
        f"join {join.join}: window {join.window} starts at output frame {join.frame} "
        f"({join.frame / FPS:.2f} s)  |  change across it: output {join.output_change or 0:.1f} ({ratio}), "
        f"driving {join.driving_change or 0:.1f} ({drv})" + ("  |  STANDS OUT" if join.stands_out else "")
    )
    return _block(output, driving, frames, join.frame, title, RED if join.stands_out else INK)


def _block(
    output: Series,
    driving: Series | None,
    frames: list[int],
    join_frame: int | None,
    title: str,
    colour: tuple[int, int, int],
) -> Image.Image:
    head, caption, gap = 34, 22, 14
    rows = [("driving", driving), ("output", output)] if driving else [("output", output)]
    width = LABEL_W + len(frames) * (TILE_W + 4) + 10
    height = head + caption + len(rows) * (TILE_H + 4) + gap
    block = Image.new("RGB", (max(width, 900), height), BG)
    draw = ImageDraw.Draw(block)
    draw.text((8, 8), title, fill=colour, font=_font(18))
    label_font = _font(15)
    for column, frame in enumerate(frames):
        x = LABEL_W + column * (TILE_W + 4)
        draw.text((x + 4, head + 2), f"frame {frame}", fill=INK, font=label_font)
        for row, (_, series) in enumerate(rows):
            tile = series.kept.get(frame) if series else None
            y = head + caption + row * (TILE_H + 4)
            if tile is not None:
                block.paste(tile, (x, y))
            else:
                draw.rectangle((x, y, x + TILE_W - 1, y + TILE_H - 1), outline=GREY)
        if join_frame is not None and frame == join_frame:
            draw.rectangle((x - 4, head, x - 1, height - gap), fill=RED)
            draw.text((x + 110, head + 2), "first frame of the new window", fill=RED, font=label_font)
    for row, (name, _) in enumerate(rows):
        y = head + caption + row * (TILE_H + 4) + TILE_H // 2 - 8
        draw.text((8, y), name, fill=INK, font=label_font)
    return block


def write_timeline(
    output: Series, driving: Series | None, plan: WindowPlan, joins: list[JoinScore], path: Path
) -> Path:
    width, height = TIMELINE_SIZE
    image = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(image)
    font, small = _font(18), _font(14)
    left, right = 90, width - 30
    panels = [(70, 430), (510, height - 70)]  # (top, bottom) of each panel
    frames = max(output.frames, driving.frames if driving else 0)
    x_of = _scale(0, max(1, frames - 1), left, right)
    draw.text(
        (left, 12),
        "mean colour (top) and frame-to-frame change (bottom); window joins as vertical lines",
        fill=INK,
        font=font,
    )

    # panel 1: mean R, G, B
    top, bottom = panels[0]
    values = [v for s in (output, driving) if s for row in s.means for v in row]
    low, high = _nice_range(min(values), max(values))
    y_of = _scale(low, high, bottom, top)
    _axes(draw, small, left, right, top, bottom, low, high, y_of, "mean colour (0-255)")
    colours = [(220, 40, 40), (40, 160, 40), (40, 80, 220)]
    pale = [(240, 170, 170), (160, 215, 160), (170, 185, 240)]
    for c in range(3):
        if driving:
            _polyline(draw, [(x_of(i), y_of(m[c])) for i, m in enumerate(driving.means)], pale[c], 1)
        _polyline(draw, [(x_of(i), y_of(m[c])) for i, m in enumerate(output.means)], colours[c], 2)
    _legend(
        draw,
        small,
        left + 280,
        top - 20,
        [("output R, G, B", colours[0], 2), ("driving R, G, B (pale)", pale[0], 1)],
    )

    # panel 2: frame-to-frame change
    top, bottom = panels[1]
    values = [*output.changes, *(driving.changes if driving else [])]
    low, high = _nice_range(0.0, max([*values, MOTION_FLOOR * SEAM_RATIO]))
    y_of = _scale(low, high, bottom, top)
    _axes(draw, small, left, right, top, bottom, low, high, y_of, "change (mean |diff|, 0-255)")
    if driving:
        _polyline(draw, [(x_of(i), y_of(v)) for i, v in enumerate(driving.changes) if i], GREY, 1)
    _polyline(draw, [(x_of(i), y_of(v)) for i, v in enumerate(output.changes) if i], INK, 2)
    median = max(output.median_change, MOTION_FLOOR)
    threshold_label = (
        f"{SEAM_RATIO:g}x the output's median change"
        if output.median_change >= MOTION_FLOOR
        else f"{SEAM_RATIO:g}x the no-motion floor (the output has no motion)"
    )
    _dashed(draw, left, right, y_of(median * SEAM_RATIO), (230, 140, 0))
    _legend(
        draw,
        small,
        left + 280,
        top - 20,
        [
            (f"output (median {output.median_change:.2f}: {_motion(output.median_change)})", INK, 2),
            ("driving", GREY, 1),
            (threshold_label, (230, 140, 0), 1),
        ],
    )

    # x axis, joins
    step = _nice_step(frames / 10)
    for frame in range(0, frames, step):
        x = x_of(frame)
        draw.line((x, bottom, x, bottom + 5), fill=INK)
        draw.text((x - 10, bottom + 8), str(frame), fill=INK, font=small)
    draw.text(
        ((left + right) // 2 - 120, height - 34),
        f"output frame ({FPS} fps; {frames / FPS:.1f} s)",
        fill=INK,
        font=font,
    )
    flagged = {j.frame for j in joins if j.stands_out}
    for number, frame in enumerate(plan.joins, start=1):
        if frame >= frames:
            continue
        x = x_of(frame)
        colour = RED if frame in flagged else JOIN
        for top, bottom in panels:
            draw.line((x, top, x, bottom), fill=colour, width=2 if frame in flagged else 1)
        draw.text((x + 3, panels[0][1] + 4), f"w{number + 1} @{frame}", fill=colour, font=small)
    image.save(path, optimize=True)
    return path


def _scale(v0: float, v1: float, p0: float, p1: float) -> Any:
    span = (v1 - v0) or 1.0

    def to_pixel(value: float) -> float:
        return p0 + (value - v0) / span * (p1 - p0)

    return to_pixel


def _nice_step(raw: float) -> int:
    raw = max(1.0, raw)
    magnitude = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return int(factor * magnitude)
    return int(10 * magnitude)


def _nice_range(low: float, high: float) -> tuple[float, float]:
    if high - low < 4:
        middle = (high + low) / 2
        low, high = middle - 2, middle + 2
    pad = (high - low) * 0.05
    return max(0.0, low - pad), min(255.0, high + pad) if high <= 255 else high + pad


def _axes(
    draw: ImageDraw.ImageDraw,
    font: Any,
    left: int,
    right: int,
    top: int,
    bottom: int,
    low: float,
    high: float,
    y_of: Any,
    label: str,
) -> None:
    draw.rectangle((left, top, right, bottom), outline=INK)
    for i in range(6):
        value = low + (high - low) * i / 5
        y = y_of(value)
        draw.line((left - 5, y, left, y), fill=INK)
        draw.line((left + 1, y, right - 1, y), fill=(235, 235, 235))
        draw.text((8, y - 8), f"{value:.1f}", fill=INK, font=font)
    draw.text((left + 6, top + 6), label, fill=INK, font=font)


def _polyline(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], colour: Any, width: int) -> None:
    if len(points) > 1:
        draw.line(points, fill=colour, width=width)


def _dashed(draw: ImageDraw.ImageDraw, left: int, right: int, y: float, colour: Any) -> None:
    for x in range(left, right, 12):
        draw.line((x, y, min(x + 6, right), y), fill=colour, width=1)


def _legend(draw: ImageDraw.ImageDraw, font: Any, x: int, y: int, items: list[tuple[str, Any, int]]) -> None:
    """A row of (line sample, text) above a panel."""
    for text, colour, width in items:
        draw.line((x, y + 8, x + 24, y + 8), fill=colour, width=width + 1)
        draw.text((x + 30, y), text, fill=INK, font=font)
        x += 30 + int(draw.textlength(text, font=font)) + 30
