"""The job input contract: field names, exactly-one image source, keys, ids, types."""

from __future__ import annotations

import json

import pytest

from worker.contract import NO_AVATAR, NO_USER, output_key, sanitize_id
from worker.errors import ErrorCode, WorkerError
from worker.request import parse_request

BASE = {"input_image_minio_path": "avatars/a.png", "driving_video_path": "videos/d.mp4"}


def parse(**fields: object) -> object:
    return parse_request({**BASE, **fields}, default_driving_video=None)


def error_of(raw: object, default: str | None = None) -> WorkerError:
    with pytest.raises(WorkerError) as caught:
        parse_request(raw, default_driving_video=default)
    return caught.value


def test_minimal_request_is_parsed() -> None:
    request = parse_request(dict(BASE), default_driving_video=None)
    assert request.image_key == "avatars/a.png"
    assert request.driving_video_key == "videos/d.mp4"
    assert request.image_url is None
    assert request.seed is None
    assert request.return_presigned_url is False


def test_unknown_field_is_rejected_by_name_with_a_suggestion() -> None:
    error = error_of({**BASE, "driving_video_key": "x.mp4"})
    assert error.code is ErrorCode.INVALID_INPUT
    assert "driving_video_key" in error.message
    assert "driving_video_path" in error.message  # the suggestion
    assert error.details["unknown_fields"] == ["driving_video_key"]


def test_ten_thousand_unknown_fields_come_back_as_a_short_error() -> None:
    raw = {**BASE, **{f"field_{index:05d}_" + "x" * 200: 1 for index in range(10_000)}}
    error = error_of(raw)
    assert error.code is ErrorCode.INVALID_INPUT
    result = json.dumps(error.to_result())
    assert len(result) < 5_000  # was 200 KB
    assert len(error.details["unknown_fields"]) == 20
    assert all(len(name) <= 64 for name in error.details["unknown_fields"])
    assert error.details["unknown_fields_left_out"] == 9_980
    assert error.message.endswith("and 9980 more")


def test_exactly_one_image_source() -> None:
    both = error_of({**BASE, "input_image_url": "https://example.com/a.png"})
    assert both.code is ErrorCode.INVALID_INPUT
    neither = error_of({"driving_video_path": "v.mp4"})
    assert neither.code is ErrorCode.INVALID_INPUT
    assert "exactly one" in neither.message


def test_url_image_source_must_be_http() -> None:
    error = error_of({"input_image_url": "file:///etc/passwd", "driving_video_path": "v.mp4"})
    assert error.code is ErrorCode.URL_NOT_ALLOWED
    ok = parse_request(
        {"input_image_url": "https://example.com/a.png", "driving_video_path": "v.mp4"},
        default_driving_video=None,
    )
    assert ok.image_url == "https://example.com/a.png"


@pytest.mark.parametrize("key", ["../secret.png", "/etc/passwd", "a/../../b.png", "a\\b.png"])
def test_unsafe_keys_are_refused(key: str) -> None:
    error = error_of({**BASE, "input_image_minio_path": key})
    assert error.code is ErrorCode.INVALID_INPUT
    error = error_of({**BASE, "driving_video_path": key})
    assert error.code is ErrorCode.INVALID_INPUT


def test_default_driving_video_is_used_only_when_absent() -> None:
    request = parse_request({"input_image_minio_path": "a.png"}, default_driving_video="defaults/talk.mp4")
    assert request.driving_video_key == "defaults/talk.mp4"
    error = error_of({"input_image_minio_path": "a.png"})
    assert "DEFAULT_DRIVING_VIDEO_PATH" in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seed", -1),
        ("seed", 2**64),
        ("seed", "7"),
        ("seed", True),
        ("prompt", 5),
        ("prompt", "x" * 5000),
        ("return_presigned_url", "yes"),
        ("user_id", ["a"]),
        ("user_id", "///"),
    ],
)
def test_bad_types_are_invalid_input(field: str, value: object) -> None:
    error = error_of({**BASE, field: value})
    assert error.code is ErrorCode.INVALID_INPUT
    assert field in error.message


def test_input_that_is_not_an_object() -> None:
    assert error_of(None).code is ErrorCode.INVALID_INPUT
    assert error_of(["a"]).code is ErrorCode.INVALID_INPUT


def test_ids_are_sanitised_into_one_key_segment() -> None:
    request = parse(user_id="../../etc", avatar_id="ava tar/1")
    assert request.user_id == "etc"
    assert request.avatar_id == "ava_tar_1"
    assert sanitize_id("a/b\\c") == "a_b_c"
    assert parse(user_id=42).user_id == "42"


def test_output_key_puts_placeholders_where_ids_are_absent() -> None:
    """The layout never shifts: without user_id an avatar named alice is not written where a user
    named alice's videos are."""
    assert output_key("outputs", "job-1", "u1", "a1") == "outputs/u1/a1/job-1.mp4"
    assert output_key("outputs", "job-1", None, "alice") == f"outputs/{NO_USER}/alice/job-1.mp4"
    assert output_key("outputs", "job-1", "alice", None) == f"outputs/alice/{NO_AVATAR}/job-1.mp4"
    assert output_key("outputs", "job-1", None, None) == f"outputs/{NO_USER}/{NO_AVATAR}/job-1.mp4"
    assert output_key("out/v2", "sync-12ab/x", "u", None) == f"out/v2/u/{NO_AVATAR}/sync-12ab_x.mp4"
    # No sanitised id can be a placeholder: leading '_' is stripped.
    assert parse(user_id=NO_USER).user_id == NO_USER.lstrip("_")  # type: ignore[attr-defined]


def test_a_run_of_unsafe_characters_is_one_underscore() -> None:
    """The rule the smoke test used to restate differently (``a::b`` -> ``a__b`` there)."""
    assert sanitize_id("a::b") == "a_b"
    assert sanitize_id("a: /b") == "a_b"


def test_ids_longer_than_the_limit_are_refused_not_cut() -> None:
    """Two 300-character ids sharing their first 128 characters would name the same object."""
    assert parse(user_id="u" * 128).user_id == "u" * 128  # type: ignore[attr-defined]
    error = error_of({**BASE, "user_id": "u" * 129})
    assert error.code is ErrorCode.INVALID_INPUT and error.details["field"] == "user_id"
    assert "at most 128" in error.message


@pytest.mark.parametrize("field", ["driving_video_path", "input_image_minio_path", "input_image_url"])
@pytest.mark.parametrize("empty", ["", "   "])
def test_an_empty_key_is_refused_not_taken_for_absent(field: str, empty: str) -> None:
    error = error_of({**BASE, field: empty}, default="videos/default.mp4")
    assert error.code is ErrorCode.INVALID_INPUT
    assert error.details["field"] == field and "is empty" in error.message


def test_an_absent_or_null_driving_video_takes_the_default() -> None:
    for raw in (
        {"input_image_minio_path": "a.png"},
        {"input_image_minio_path": "a.png", "driving_video_path": None},
    ):
        request = parse_request(raw, default_driving_video="videos/default.mp4")
        assert request.driving_video_key == "videos/default.mp4"


def test_framing_defaults_to_fit_and_crop_can_be_asked_for() -> None:
    assert parse_request(dict(BASE), default_driving_video=None).framing == "fit"
    assert parse(framing="crop").framing == "crop"  # type: ignore[attr-defined]
    assert parse(framing=" Fit ").framing == "fit"  # type: ignore[attr-defined]
    assert parse(framing=None).framing == "fit"  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["cover", "", 1, True, ["crop"]])
def test_other_framings_are_refused(value: object) -> None:
    error = error_of({**BASE, "framing": value})
    assert error.code is ErrorCode.INVALID_INPUT
    assert error.details["field"] == "framing" and error.details["allowed"] == ["fit", "crop"]
