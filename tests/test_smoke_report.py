"""smoke_report.py on videos made here with ffmpeg: seams at window joins are found where they are,
and only there; the pictures are written at the sizes a person can read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import smoke_report
from worker.graph.windows import plan_windows

FRAMES = 192  # 8 s at 24 fps: 3 windows, joins at output frames 77 and 149


def render(path: Path, *, frames: int = FRAMES, source: str = "testsrc2", vf: str = "") -> Path:
    """``frames`` frames at 24 fps, 640x360 (the analysis scales anyway), optionally filtered."""
    inputs = {
        "testsrc2": f"testsrc2=size=640x360:rate=24:duration={frames / 24}",
        "still": f"color=c=0x4070a0:size=640x360:rate=24:duration={frames / 24},"
        "drawbox=x=200:y=80:w=240:h=200:color=0xe0b090:t=fill",
    }
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i", inputs[source]]
    if vf:
        command += ["-vf", vf]
    command += ["-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, str(path)], check=True, timeout=120)
    return path


def brighter_from(frame: int, amount: float = 0.25) -> str:
    """A brightness jump starting at ``frame``: what a window that comes out lighter looks like."""
    return f"eq=brightness={amount}:enable='gte(n,{frame})'"


@pytest.fixture(scope="module")
def driving(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(tmp_path_factory.mktemp("driving") / "driving.mp4")


def test_a_brightness_jump_at_a_join_is_flagged_at_that_join_only(driving: Path, tmp_path: Path) -> None:
    output = render(tmp_path / "seam.mp4", vf=brighter_from(149))
    result = smoke_report.analyse(output, driving, tmp_path / "report", frames=FRAMES)
    assert result["window_plan"]["joins"] == [77, 149]
    first, second = result["joins"]
    assert not first["stands_out"], first
    assert second["stands_out"], second
    assert second["output_ratio"] > smoke_report.SEAM_RATIO
    assert second["driving_ratio"] < 1.5  # the driving video runs on smoothly there
    assert min(second["output_colour_step"]) > 10  # brighter in every channel
    assert len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("join 2 (output frame 149, window 3) stands out")


def test_a_smooth_clip_gives_no_warning(driving: Path, tmp_path: Path) -> None:
    result = smoke_report.analyse(driving, driving, tmp_path / "report", frames=FRAMES)
    assert result["warnings"] == []
    assert result["output_motion"] == "moving" and result["output_median_change"] > 1
    for join in result["joins"]:
        assert not join["stands_out"] and 0.3 < join["output_ratio"] < 2.0, join


def test_a_jump_between_joins_is_not_blamed_on_a_join(driving: Path, tmp_path: Path) -> None:
    output = render(tmp_path / "mid.mp4", vf=brighter_from(110))
    result = smoke_report.analyse(output, driving, tmp_path / "report", frames=FRAMES)
    assert result["warnings"] == []


def test_a_cut_in_the_driving_video_at_a_join_is_not_blamed_on_the_model(tmp_path: Path) -> None:
    cut = render(tmp_path / "cut.mp4", vf=brighter_from(77))
    result = smoke_report.analyse(cut, cut, tmp_path / "report", frames=FRAMES)
    first = result["joins"][0]
    assert (
        first["output_ratio"] > smoke_report.SEAM_RATIO and first["driving_ratio"] > smoke_report.SEAM_RATIO
    )
    assert not first["stands_out"] and result["warnings"] == []


def test_a_still_output_has_no_motion_and_no_huge_ratio(driving: Path, tmp_path: Path) -> None:
    still = render(tmp_path / "still.mp4", source="still")
    result = smoke_report.analyse(still, driving, tmp_path / "report", frames=FRAMES)
    assert result["output_motion"] == "no motion"
    assert all(join["output_ratio"] is None for join in result["joins"])
    assert result["warnings"] == []


def test_a_still_output_that_jumps_at_a_join_is_still_flagged(driving: Path, tmp_path: Path) -> None:
    still = render(tmp_path / "still-jump.mp4", source="still", vf=brighter_from(77, 0.1))
    result = smoke_report.analyse(still, driving, tmp_path / "report", frames=FRAMES)
    assert result["output_motion"] == "no motion"
    assert [join["stands_out"] for join in result["joins"]] == [True, False]
    assert "no-motion floor" in result["warnings"][0]


def test_the_pictures_have_one_block_of_six_frames_per_join(driving: Path, tmp_path: Path) -> None:
    folder = tmp_path / "report"
    result = smoke_report.analyse(driving, driving, folder, frames=FRAMES)
    assert result["pictures"] == [str(folder / "contact_sheet.png"), str(folder / "timeline.png")]
    with Image.open(folder / "timeline.png") as timeline:
        assert timeline.size == smoke_report.TIMELINE_SIZE
    with Image.open(folder / "contact_sheet.png") as sheet:
        columns = 2 * smoke_report.AROUND
        assert sheet.width == smoke_report.LABEL_W + columns * (smoke_report.TILE_W + 4) + 10
        rows = 2  # driving above output
        block = 34 + 22 + rows * (smoke_report.TILE_H + 4) + 14
        assert sheet.height == 2 * block  # two joins
        # the join marker: a red bar left of the first frame of the new window, in each block
        x = smoke_report.LABEL_W + smoke_report.AROUND * (smoke_report.TILE_W + 4) - 2
        for number in range(2):
            assert sheet.getpixel((x, number * block + 100)) == smoke_report.RED


def test_many_joins_are_spread_over_several_sheets(tmp_path: Path) -> None:
    frames = 77 + 72 * 7  # 8 windows: 7 joins, more than one sheet holds
    video = render(tmp_path / "long.mp4", frames=frames)
    result = smoke_report.analyse(video, None, tmp_path / "report", frames=frames)
    assert len(result["joins"]) == 7
    assert [Path(p).name for p in result["pictures"]] == [
        "contact_sheet.png",
        "contact_sheet_2.png",
        "timeline.png",
    ]
    with Image.open(tmp_path / "report" / "contact_sheet_2.png") as sheet:
        assert sheet.height == 34 + 22 + (smoke_report.TILE_H + 4) + 14  # one join, output only


def test_a_clip_of_one_window_shows_frames_across_it(tmp_path: Path) -> None:
    video = render(tmp_path / "short.mp4", frames=48)
    result = smoke_report.analyse(video, video, tmp_path / "report")
    assert result["output_frames"] == 48 and result["joins"] == [] and result["warnings"] == []
    with Image.open(tmp_path / "report" / "contact_sheet.png") as sheet:
        assert sheet.width == smoke_report.LABEL_W + 6 * (smoke_report.TILE_W + 4) + 10


@pytest.mark.parametrize("frames", [1, 77, 78, 149, 150, 240, 3677])
def test_joins_follow_the_workers_window_plan_and_the_formula(
    frames: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = smoke_report.window_plan(frames)
    expected = [77 + 72 * (k - 1) for k in range(1, len(plan_windows(frames)))]
    assert plan.joins == expected and plan.source == "worker.graph.windows.plan_windows"
    monkeypatch.setitem(sys.modules, "worker.graph.windows", None)  # smoke_test.py copied out of the repo
    standalone = smoke_report.window_plan(frames)
    assert standalone.joins == expected and standalone.source.startswith("formula")


def test_a_portrait_driving_video_is_framed_as_the_worker_frames_it(tmp_path: Path) -> None:
    """The worker fits a portrait video with black bars by default (framing "fit"); the report's
    driving row must show the same picture, or output and driving would not line up."""
    portrait = tmp_path / "portrait.mp4"
    command = ["ffmpeg", "-nostdin", "-y", "-v", "error", "-f", "lavfi", "-i"]
    command += ["color=c=white:size=360x640:rate=24:duration=0.5", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    subprocess.run([*command, str(portrait)], check=True, timeout=60)
    fitted = next(smoke_report.iter_frames(portrait))
    cropped = next(smoke_report.iter_frames(portrait, framing="crop"))
    w, h = fitted.size
    assert max(fitted.getpixel((2, h // 2))) < 20  # a black bar at the side
    assert min(fitted.getpixel((w // 2, h // 2))) > 230  # the white picture in the middle
    assert min(cropped.getpixel((2, h // 2))) > 230  # cropped: white to the edge
    with pytest.raises(ValueError, match="framing"):
        next(smoke_report.iter_frames(portrait, framing="stretch"))
