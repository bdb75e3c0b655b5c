"""worker.storage against a real moto S3 server, directly or through a fault-injecting proxy."""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import pytest
import requests
from minio.error import InvalidResponseError, S3Error, ServerError

from tests.support.logs import events
from tests.support.s3 import S3Bucket, S3FaultProxy
from worker.errors import ErrorCode, WorkerError
from worker.storage import is_transient, validate_key

MIB = 1024 * 1024


# -- key validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("avatars/u1/face.png", "avatars/u1/face.png"),
        ("  videos/drive.mp4 ", "videos/drive.mp4"),
        ("a..b/c.d..e", "a..b/c.d..e"),
        ("dossiers/été/vidéo 1.mp4", "dossiers/été/vidéo 1.mp4"),
        ("k" * 1024, "k" * 1024),
    ],
)
def test_validate_key_accepts_relative_keys(raw: str, expected: str) -> None:
    assert validate_key(raw, field="driving_video_path") == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("/etc/passwd", "leading '/'"),
        ("../secret", "'..'"),
        ("a/../../b", "'..'"),
        ("a/./b", "'.'"),
        ("..", "'..'"),
        ("a\\b.png", "backslash"),
        ("a\x00b", "control"),
        ("a\nb", "control"),
        ("a//b", "'//'"),
        ("folder/", "trailing '/'"),
        ("k" * 1025, "1025 bytes"),
        ("é" * 513, "1026 bytes"),
        ("bad\udcffsurrogate", "Unicode"),
    ],
)
def test_validate_key_rejects_unsafe_keys(raw: str, problem: str) -> None:
    with pytest.raises(WorkerError) as caught:
        validate_key(raw, field="input_image_minio_path")
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert caught.value.message.startswith("input_image_minio_path ")
    assert problem in caught.value.message
    assert caught.value.details == {"field": "input_image_minio_path"}


# -- retry policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (S3Error(None, "SlowDown", "", "/", "", ""), True),
        (S3Error(None, "InternalError", "", "/", "", ""), True),
        (S3Error(None, "ServiceUnavailable", "", "/", "", ""), True),
        (S3Error(None, "RequestTimeout", "", "/", "", ""), True),
        (S3Error(None, "NoSuchKey", "", "/", "", ""), False),
        (S3Error(None, "NoSuchBucket", "", "/", "", ""), False),
        (S3Error(None, "AccessDenied", "", "/", "", ""), False),
        (S3Error(None, "InvalidAccessKeyId", "", "/", "", ""), False),
        (S3Error(None, "SignatureDoesNotMatch", "", "/", "", ""), False),
        (S3Error(None, "PreconditionFailed", "", "/", "", ""), False),
        (ServerError("boom", 503), True),
        (ServerError("boom", 501), True),
        (InvalidResponseError(502, "text/html", "bad gateway"), True),
        (InvalidResponseError(400, "text/html", "bad request"), False),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (FileNotFoundError("out.mp4"), False),
        (ValueError("bug"), False),
    ],
)
def test_retry_policy_classifies_errors(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


# -- stat / download --------------------------------------------------------------------


def test_stat_reports_size_type_and_metadata(s3: S3Bucket) -> None:
    s3.put("in/a.bin", b"x" * 1234, content_type="image/png", metadata={"Frames": "49"})
    info = s3.storage.stat("in/a.bin")
    assert info is not None
    assert (info.key, info.size, info.content_type) == ("in/a.bin", 1234, "image/png")
    assert info.etag
    assert info.metadata == {"frames": "49"}
    assert s3.storage.stat("in/missing.bin") is None


def test_download_streams_a_multi_megabyte_object_in_chunks(s3: S3Bucket, tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 12345)
    s3.put("videos/drive.mp4", data, content_type="video/mp4")
    before = s3.snapshot()
    storage = s3.make_storage(chunk_bytes=256 * 1024)
    seen: list[tuple[int, int]] = []

    dest = tmp_path / "nested" / "drive.src"
    size = storage.download(
        "videos/drive.mp4",
        dest,
        max_bytes=4 * MIB,
        field="driving_video_path",
        progress=lambda done, total: seen.append((done, total)),
    )

    assert size == len(data)
    assert dest.read_bytes() == data
    # One progress call per chunk, none larger than the chunk size: the body was streamed.
    steps = [done for done, _ in seen]
    increments = [b - a for a, b in zip([0, *steps], steps, strict=False)]
    assert len(seen) >= len(data) // (256 * 1024)
    assert max(increments) <= 256 * 1024
    assert steps[-1] == len(data)
    assert {total for _, total in seen} == {len(data)}
    assert s3.snapshot() == before


def test_download_refuses_an_object_over_the_limit_before_reading_it(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3.put("avatars/big.png", b"p" * 10_000)
    storage = s3.make_storage(s3_proxy.endpoint)
    dest = tmp_path / "avatar.src"
    with pytest.raises(WorkerError) as caught:
        storage.download("avatars/big.png", dest, max_bytes=5_000, field="input_image_minio_path")
    assert caught.value.code is ErrorCode.INPUT_TOO_LARGE
    assert "10000 bytes" in caught.value.message and "5000" in caught.value.message
    assert not dest.exists()
    assert s3_proxy.count("GET") == 0


def test_download_caps_the_size_while_streaming(s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path) -> None:
    s3.put("avatars/liar.png", b"p" * 20_000)
    s3_proxy.understate_next_head(1_000)  # the size check before the GET passes
    storage = s3.make_storage(s3_proxy.endpoint, chunk_bytes=1024)
    dest = tmp_path / "avatar.src"
    with pytest.raises(WorkerError) as caught:
        storage.download("avatars/liar.png", dest, max_bytes=4_096, field="input_image_minio_path")
    assert caught.value.code is ErrorCode.INPUT_TOO_LARGE
    assert "more than 4096 bytes" in caught.value.message
    assert not dest.exists()
    assert s3_proxy.count("GET") == 1


def test_missing_key_is_input_not_found_without_retrying(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    storage = s3.make_storage(s3_proxy.endpoint, retries=4)
    dest = tmp_path / "video.src"
    with pytest.raises(WorkerError) as caught:
        storage.download("videos/nope.mp4", dest, max_bytes=MIB, field="driving_video_path")
    assert caught.value.code is ErrorCode.INPUT_NOT_FOUND and not caught.value.retryable
    assert "driving_video_path" in caught.value.message and "videos/nope.mp4" in caught.value.message
    # The key's HEAD, then the bucket's (S3 answers a key of a missing bucket with a bare 404 too).
    assert [(request.method, request.path.split("?")[0].rstrip("/")) for request in s3_proxy.requests] == [
        ("HEAD", f"/{s3.bucket}/videos/nope.mp4"),
        ("HEAD", f"/{s3.bucket}"),
    ]
    assert not dest.exists()


def test_missing_bucket_is_the_deployments_storage_misconfigured(s3: S3Bucket, tmp_path: Path) -> None:
    storage = s3.make_storage(bucket="no-such-bucket-here")
    with pytest.raises(WorkerError) as caught:
        storage.download("a.png", tmp_path / "a", max_bytes=MIB, field="input_image_minio_path")
    assert caught.value.code is ErrorCode.STORAGE_MISCONFIGURED and not caught.value.retryable
    assert "no-such-bucket-here" in caught.value.message and "MINIO_BUCKET" in caught.value.message
    src = tmp_path / "out.mp4"
    src.write_bytes(b"m" * 1000)
    with pytest.raises(WorkerError) as upload:
        storage.upload(src, "outputs/x.mp4")
    assert upload.value.code is ErrorCode.STORAGE_MISCONFIGURED


@pytest.mark.parametrize("code", ["SlowDown", "InternalError", None])
def test_transient_failures_recover_by_retry(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path, log_lines: io.StringIO, code: str | None
) -> None:
    data = os.urandom(200_000)
    s3.put("videos/v.mp4", data)
    s3_proxy.fail_next(2, method="HEAD", code=code)
    s3_proxy.fail_next(1, method="GET", status=500 if code == "InternalError" else 503, code=code)
    storage = s3.make_storage(s3_proxy.endpoint, retries=3)

    size = storage.download("videos/v.mp4", tmp_path / "v", max_bytes=MIB, field="driving_video_path")

    assert size == len(data)
    assert (tmp_path / "v").read_bytes() == data
    assert (s3_proxy.count("HEAD"), s3_proxy.count("GET")) == (3, 2)
    retries = events(log_lines, "storage_retry")
    assert [record["op"] for record in retries] == ["stat", "stat", "download"]
    assert all(record["level"] == "warning" and record["minio_key"] == "videos/v.mp4" for record in retries)
    assert s3.secret_key not in log_lines.getvalue()


def test_retries_are_bounded(s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path) -> None:
    s3.put("videos/v.mp4", b"v" * 100)
    s3_proxy.fail_next(50)
    storage = s3.make_storage(s3_proxy.endpoint, retries=2)
    with pytest.raises(WorkerError) as caught:
        storage.download("videos/v.mp4", tmp_path / "v", max_bytes=MIB, field="driving_video_path")
    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE and caught.value.retryable
    assert "3 attempts" in caught.value.message
    assert s3_proxy.count() == 3


def test_broken_transfer_resumes_where_it_stopped(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    s3.put("videos/v.mp4", data)
    s3_proxy.cut_next_get(after_bytes=100_000)
    storage = s3.make_storage(s3_proxy.endpoint, chunk_bytes=10_000)

    assert storage.download("videos/v.mp4", tmp_path / "v", max_bytes=MIB, field="driving_video_path") == len(
        data
    )

    assert (tmp_path / "v").read_bytes() == data
    gets = [request for request in s3_proxy.requests if request.method == "GET"]
    assert len(gets) == 2
    assert gets[1].headers.get("Range") == "bytes=100000-"
    assert gets[1].headers.get("If-Match", "").strip('"')  # pinned to the object's ETag


def test_broken_transfer_without_retries_leaves_no_partial_file(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3.put("videos/v.mp4", os.urandom(300_000))
    s3_proxy.cut_next_get(after_bytes=100_000)
    storage = s3.make_storage(s3_proxy.endpoint, retries=0, chunk_bytes=10_000)
    dest = tmp_path / "v"
    with pytest.raises(WorkerError) as caught:
        storage.download("videos/v.mp4", dest, max_bytes=MIB, field="driving_video_path")
    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert not dest.exists()


@pytest.mark.parametrize("code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_refused_credentials_are_storage_misconfigured_without_retrying(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path, code: str
) -> None:
    s3.put("in/a.png", b"a" * 10)
    src = tmp_path / "out.mp4"
    src.write_bytes(b"m" * 1000)
    s3_proxy.deny(code)
    storage = s3.make_storage(s3_proxy.endpoint, retries=4)

    with pytest.raises(WorkerError) as download_error:
        storage.download("in/a.png", tmp_path / "a", max_bytes=MIB, field="input_image_minio_path")
    with pytest.raises(WorkerError) as upload_error:
        storage.upload(src, "outputs/job.mp4")

    for caught in (download_error, upload_error):
        assert caught.value.code is ErrorCode.STORAGE_MISCONFIGURED and not caught.value.retryable
        assert "MINIO_ACCESS_KEY" in caught.value.message and "bucket policy" in caught.value.message
    # A HEAD error has no body, so the SDK reports every 403 there as AccessDenied.
    assert upload_error.value.details["s3_code"] == code
    # No retry: the download's HEAD, the upload's PUT and its look at the key afterwards.
    assert [(r.method, r.path.split("?")[0].rsplit("/", 1)[-1]) for r in s3_proxy.requests] == [
        ("HEAD", "a.png"),
        ("PUT", "job.mp4"),
        ("HEAD", "job.mp4"),
    ]
    assert s3.keys() == ["in/a.png"]


# -- upload ----------------------------------------------------------------------------


def test_upload_is_multipart_with_the_content_type_and_metadata(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(11 * MIB)
    src = tmp_path / "final.mp4"
    src.write_bytes(data)
    storage = s3.make_storage(s3_proxy.endpoint, part_bytes=5 * MIB)

    storage.upload(src, "outputs/u1/job-1.mp4", metadata={"frames": "49", "has-audio": "1"})

    info = s3.storage.stat("outputs/u1/job-1.mp4")
    assert info is not None
    assert info.content_type == "video/mp4"
    assert info.size == len(data)
    assert info.metadata == {"frames": "49", "has-audio": "1"}
    assert str(info.etag).endswith("-3")  # an S3 multipart ETag: three parts
    assert s3_proxy.count("PUT") == 3
    assert s3.get_bytes("outputs/u1/job-1.mp4") == data
    assert src.read_bytes() == data


def test_upload_that_cannot_complete_leaves_nothing_visible(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(6 * MIB))
    s3_proxy.fail_next(1, method="POST", path_contains="uploadId=", status=500, code="InternalError")
    storage = s3.make_storage(s3_proxy.endpoint, part_bytes=5 * MIB, retries=0)

    with pytest.raises(WorkerError) as caught:
        storage.upload(src, "outputs/job-2.mp4")

    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert s3.keys() == []
    assert s3_proxy.count("DELETE") == 1  # the SDK aborted the multipart upload


def test_upload_retries_a_failed_completion(s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path) -> None:
    data = os.urandom(6 * MIB)
    src = tmp_path / "final.mp4"
    src.write_bytes(data)
    s3_proxy.fail_next(1, method="POST", path_contains="uploadId=", status=503, code="SlowDown")
    storage = s3.make_storage(s3_proxy.endpoint, part_bytes=5 * MIB, retries=2)

    storage.upload(src, "outputs/job-3.mp4")

    assert s3.keys() == ["outputs/job-3.mp4"]
    assert s3.get_bytes("outputs/job-3.mp4") == data


@pytest.mark.parametrize(
    ("size", "lost"),
    [(64 * 1024, {"method": "PUT"}), (6 * MIB, {"method": "POST", "path_contains": "uploadId="})],
    ids=["put", "multipart-completion"],
)
def test_an_upload_whose_answers_were_lost_is_found_in_the_bucket(
    s3: S3Bucket,
    s3_proxy: S3FaultProxy,
    tmp_path: Path,
    log_lines: io.StringIO,
    size: int,
    lost: dict[str, str],
) -> None:
    data = os.urandom(size)
    src = tmp_path / "final.mp4"
    src.write_bytes(data)
    s3_proxy.lose_next_answer(2, **lost)  # every attempt reaches the bucket; no answer comes back
    storage = s3.make_storage(s3_proxy.endpoint, part_bytes=5 * MIB, retries=1)

    storage.upload(src, "outputs/job-4.mp4", metadata={"frames": "49"})

    assert s3.get_bytes("outputs/job-4.mp4") == data
    assert s3.keys() == ["outputs/job-4.mp4"]
    [confirmed] = events(log_lines, "storage_upload_confirmed")
    assert confirmed["minio_key"] == "outputs/job-4.mp4"


@pytest.mark.parametrize("left", ["other bytes", "the same bytes under other metadata"])
def test_after_a_failed_upload_nothing_else_is_left_at_the_key(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path, left: str
) -> None:
    """What sits at the key (an earlier request's output) is not what this upload sent: removed."""
    src = tmp_path / "final.mp4"
    src.write_bytes(os.urandom(64 * 1024))
    other = src.read_bytes() if left.startswith("the same bytes") else b"another request's video"
    s3.put("outputs/job-5.mp4", other, metadata={"frames": "48"})
    s3_proxy.fail_next(2, method="PUT", status=503, code="SlowDown")
    storage = s3.make_storage(s3_proxy.endpoint, retries=1)

    with pytest.raises(WorkerError) as caught:
        storage.upload(src, "outputs/job-5.mp4", metadata={"frames": "49"})

    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE  # 503 through every retry
    assert s3.keys() == []


def test_upload_rejects_an_unsafe_key(s3: S3Bucket, tmp_path: Path) -> None:
    src = tmp_path / "final.mp4"
    src.write_bytes(b"m")
    with pytest.raises(WorkerError) as caught:
        s3.storage.upload(src, "../escape.mp4")
    assert caught.value.code is ErrorCode.INVALID_INPUT
    assert s3.keys() == []


# -- presigned URLs and the start-up check -----------------------------------------------


def test_presigned_url_downloads_with_plain_requests(s3: S3Bucket) -> None:
    data = os.urandom(50_000)
    s3.put("outputs/job.mp4", data, content_type="video/mp4")
    url = s3.storage.presigned_get("outputs/job.mp4", 600)
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=600" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data


def test_presigned_expiry_is_bounded(s3: S3Bucket) -> None:
    with pytest.raises(WorkerError) as caught:
        s3.storage.presigned_get("outputs/job.mp4", 30 * 24 * 3600)
    assert caught.value.code is ErrorCode.CONFIG_INVALID


def test_check_bucket(s3: S3Bucket) -> None:
    s3.storage.check_bucket()

    with pytest.raises(WorkerError) as missing:
        s3.make_storage(bucket="missing-bucket-x").check_bucket()
    assert missing.value.code is ErrorCode.STORAGE_MISCONFIGURED
    assert "MINIO_BUCKET" in missing.value.message


def test_check_bucket_reports_an_unreachable_endpoint(s3: S3Bucket) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    storage = s3.make_storage(f"127.0.0.1:{port}", retries=1)
    with pytest.raises(WorkerError) as caught:
        storage.check_bucket()
    assert caught.value.code is ErrorCode.STORAGE_UNAVAILABLE
    assert "2 attempts" in caught.value.message and "MINIO_ENDPOINT" in caught.value.message


def test_check_bucket_reports_refused_credentials(s3: S3Bucket, s3_proxy: S3FaultProxy) -> None:
    s3_proxy.deny("AccessDenied")
    with pytest.raises(WorkerError) as caught:
        s3.make_storage(s3_proxy.endpoint).check_bucket()
    assert caught.value.code is ErrorCode.STORAGE_MISCONFIGURED
    assert "MINIO_SECRET_KEY" in caught.value.message
    assert s3_proxy.count() == 1


def test_an_object_replaced_during_a_broken_transfer_is_not_stitched_together(
    s3: S3Bucket, s3_proxy: S3FaultProxy, tmp_path: Path
) -> None:
    s3.put("videos/v.mp4", os.urandom(300_000))
    s3_proxy.cut_next_get(after_bytes=100_000)
    storage = s3.make_storage(s3_proxy.endpoint, chunk_bytes=10_000)
    replaced: list[bool] = []

    def replace_once(done: int, total: int) -> None:
        if not replaced:
            replaced.append(True)
            s3.put("videos/v.mp4", os.urandom(300_000))

    dest = tmp_path / "v"
    with pytest.raises(WorkerError) as caught:
        storage.download(
            "videos/v.mp4", dest, max_bytes=MIB, field="driving_video_path", progress=replace_once
        )
    assert caught.value.code is ErrorCode.STORAGE_ERROR and caught.value.retryable
    assert "changed while it was downloaded" in caught.value.message
    assert not dest.exists()
