"""Object storage (MinIO or any S3-compatible server) through the MinIO SDK.

Inputs are only ever read; outputs are written by one streamed upload whose completion
is atomic (a single PUT, or a multipart upload that becomes visible only when completed),
so a reader never sees a half-written object.

Retries: the SDK's own urllib3 retry is switched off and replaced by one worker-level
policy (``is_transient`` + exponential backoff with jitter) because urllib3 cannot see
S3 error codes (``RequestTimeout`` is an HTTP 400), does not retry POSTs (multipart
create/complete) nor a body that breaks mid-stream, and does not log through
``log_event``. Two stacked layers would also multiply the attempts. Downloads that break
mid-stream resume from the bytes already on disk, pinned to the object's ETag.

A download given the job's ``deadline`` ends there, whatever the server does: its connections
are cut at that moment (``worker.netdeadline``) and no retry starts after it (``TIMEOUT``).

Failures name whose problem they are: ``STORAGE_MISCONFIGURED`` (the bucket does not exist, the
credentials are refused, TLS fails: the deployment's settings), ``STORAGE_UNAVAILABLE`` (no answer,
5xx, throttling after every retry: may come back), ``STORAGE_ERROR`` (anything else), and
``WORKER_DISK_FULL`` when the local disk cannot take the download.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from worker.errors import ErrorCode, WorkerError, disk_full_error, is_disk_full
from worker.logs import log_event
from worker.netdeadline import DeadlinePassed, cancelled_here, cut_at, watch_pools

T = TypeVar("T")

MAX_KEY_BYTES = 1024
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
UPLOAD_PART_BYTES = 16 * 1024 * 1024
UPLOAD_PARALLEL_PARTS = 2
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 120.0
MAX_BACKOFF_S = 30.0
MAX_PRESIGN_S = 7 * 24 * 3600

NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
NO_BUCKET_CODE = "NoSuchBucket"
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
        "AccountProblem",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "XMinioServerNotInitialized",
    }
)
_META_PREFIX = "x-amz-meta-"
ProgressCallback = Callable[[int, int], None]


def validate_key(key: str, *, field: str) -> str:
    """The key, stripped of surrounding whitespace, or ``INVALID_INPUT`` naming ``field``.

    Keys are relative to the configured bucket: no leading '/', no empty, '.' or '..'
    segments, no backslashes or control characters, at most 1024 bytes of UTF-8.
    """
    if not isinstance(key, str):
        raise _invalid_key(field, key, "must be a string")
    normalised = key.strip()
    if not normalised:
        raise _invalid_key(field, key, "is empty")
    if normalised.startswith("/"):
        raise _invalid_key(field, key, "must be relative to the bucket (no leading '/')")
    if normalised.endswith("/"):
        raise _invalid_key(field, key, "must name an object, not a folder (trailing '/')")
    if "\\" in normalised:
        raise _invalid_key(field, key, "must not contain backslashes (use '/')")
    if any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in normalised):
        raise _invalid_key(field, key, "must not contain control characters")
    if "//" in normalised:
        raise _invalid_key(field, key, "must not contain empty segments ('//')")
    if any(segment in (".", "..") for segment in normalised.split("/")):
        raise _invalid_key(field, key, "must not contain '.' or '..' segments")
    try:
        size = len(normalised.encode("utf-8"))
    except UnicodeEncodeError:
        raise _invalid_key(field, key, "is not valid Unicode text") from None
    if size > MAX_KEY_BYTES:
        raise _invalid_key(field, key, f"is {size} bytes long, over the limit of {MAX_KEY_BYTES}")
    return normalised


def _invalid_key(field: str, key: object, problem: str) -> WorkerError:
    shown = repr(key) if len(repr(key)) <= 120 else repr(key)[:117] + "..."
    return WorkerError(
        ErrorCode.INVALID_INPUT,
        f"{field} {problem}: {shown}",
        details={"field": field},
    )


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str | None
    etag: str | None
    # User metadata (``x-amz-meta-*``), names lower-cased without the prefix.
    metadata: dict[str, str] = field(default_factory=dict)


def is_transient(exc: BaseException) -> bool:
    """Whether trying the same request again may succeed (the worker's retry policy)."""
    if isinstance(exc, S3Error):
        if exc.code in NOT_FOUND_CODES or exc.code in ACCESS_CODES or exc.code == NO_BUCKET_CODE:
            return False
        return exc.code in TRANSIENT_CODES or _status(exc) >= 500
    if isinstance(exc, ServerError | InvalidResponseError):
        status = _status(exc)
        return status >= 500 or status == 429
    if isinstance(exc, urllib3.exceptions.SSLError):
        return False  # a certificate or protocol mismatch does not heal by itself
    if isinstance(exc, urllib3.exceptions.HTTPError | http.client.HTTPException):
        return True  # connection refused/reset, timeouts, a body cut short
    # Network-level OS errors only: a missing local file must not be retried.
    return isinstance(exc, ConnectionError | TimeoutError)


def _status(exc: MinioException) -> int:
    if isinstance(exc, S3Error):
        return int(getattr(exc.response, "status", 0) or 0)
    if isinstance(exc, ServerError):
        return exc.status_code
    return int(getattr(exc, "_code", 0) or 0)  # InvalidResponseError keeps the status here


def describe_error(exc: BaseException) -> str:
    """A short description for logs and messages (no credentials, no signed URLs)."""
    if isinstance(exc, S3Error):
        return f"{exc.code} (HTTP {_status(exc)})"
    if isinstance(exc, ServerError | InvalidResponseError):
        return f"HTTP {_status(exc)} from the server"
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


class Storage:
    """One bucket on an S3-compatible server. Every failure is a ``WorkerError``."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        secure: bool,
        region: str | None = None,
        retries: int = 4,
        backoff_s: float = 0.5,
        chunk_bytes: int = DOWNLOAD_CHUNK_BYTES,
        part_bytes: int = UPLOAD_PART_BYTES,
        public_endpoint: str | None = None,
        public_secure: bool | None = None,
        ca_certs: Path | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.retries = max(0, retries)
        self.backoff_s = max(0.0, backoff_s)
        self.chunk_bytes = chunk_bytes
        self.part_bytes = part_bytes
        http = watch_pools(
            urllib3.PoolManager(
                timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
                retries=False,  # see the module docstring: one retry layer, ours
                maxsize=10,
                cert_reqs="CERT_REQUIRED",
                ca_certs=str(ca_certs) if ca_certs else certifi.where(),
            )
        )
        self.client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http,
        )
        # Presigned URLs carry the host they were signed for: when MinIO is reached on an
        # internal name, sign for the name clients use. Signing is offline given a region.
        self.presign_client = self.client
        if public_endpoint:
            self.presign_client = Minio(
                public_endpoint,
                access_key=access_key,
                secret_key=secret_key,
                secure=secure if public_secure is None else public_secure,
                region=region or "us-east-1",
                http_client=http,
            )

    # -- public operations -------------------------------------------------------------

    def check_bucket(self) -> None:
        """At start: the bucket exists and these credentials reach it."""
        try:
            exists = self._retrying("check_bucket", None, lambda: self.client.bucket_exists(self.bucket))
        except Exception as exc:
            raise self._storage_error(
                exc,
                f"cannot use bucket {self.bucket!r} at {self.endpoint}",
                hint="check MINIO_ENDPOINT, MINIO_USE_SSL and the credentials",
            ) from exc
        if not exists:
            raise self._no_bucket()

    def stat(self, key: str, *, deadline: float | None = None) -> ObjectInfo | None:
        """The object's size, type, ETag and user metadata; ``None`` when there is none."""
        try:
            obj = self._retrying("stat", key, lambda: self.client.stat_object(self.bucket, key), deadline)
        except DeadlinePassed:
            raise
        except S3Error as exc:
            if exc.code in NOT_FOUND_CODES:
                return None
            raise self._storage_error(exc, f"cannot read object {key!r}") from exc
        except Exception as exc:
            raise self._storage_error(exc, f"cannot read object {key!r}") from exc
        metadata = {
            name.lower()[len(_META_PREFIX) :]: value
            for name, value in (obj.metadata or {}).items()
            if name.lower().startswith(_META_PREFIX)
        }
        return ObjectInfo(
            key=key,
            size=int(obj.size or 0),
            content_type=obj.content_type,
            etag=obj.etag,
            metadata=metadata,
        )

    def download(
        self,
        key: str,
        dest: Path,
        *,
        max_bytes: int,
        field: str,
        progress: ProgressCallback | None = None,
        deadline: float | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """Streams the object to ``dest`` in ``chunk_bytes`` pieces; returns its size.

        A transfer that breaks resumes where it stopped (HTTP Range + If-Match on the
        ETag, so a changed object is never stitched together). ``dest`` is removed on
        any failure. ``progress(done, total)`` is called after every chunk. At ``deadline``
        (``time.monotonic()``, the job's) the download ends as ``TIMEOUT``; when ``cancel`` is set,
        at once as ``CANCELLED``.
        """
        started = time.monotonic()
        with cut_at(deadline, cancel) as watch:
            try:
                written = self._download(key, dest, max_bytes, field, progress, deadline)
                if watch.expired:  # a header cut short can read as a complete answer: not trusted
                    raise DeadlinePassed(key)
                return written
            except BaseException as exc:
                received = dest.stat().st_size if dest.exists() else 0
                dest.unlink(missing_ok=True)
                if not isinstance(exc, Exception) or not (watch.expired or isinstance(exc, DeadlinePassed)):
                    raise
                if watch.cancelled:
                    raise WorkerError(ErrorCode.CANCELLED, "the job was cancelled") from exc
                raise WorkerError(
                    ErrorCode.TIMEOUT,
                    f"{field}: the job's time (JOB_TIMEOUT_S) ran out while {key!r} was still coming from "
                    f"the storage ({received} bytes in {time.monotonic() - started:.0f} s): "
                    "the storage answers too slowly",
                    details={"field": field, "key": key, "bucket": self.bucket, "bytes_received": received},
                    retryable=True,
                ) from exc

    def _download(
        self,
        key: str,
        dest: Path,
        max_bytes: int,
        field: str,
        progress: ProgressCallback | None,
        deadline: float | None,
    ) -> int:
        info = self.stat(key, deadline=deadline)
        if info is None:
            if not self._bucket_exists():
                raise self._no_bucket()
            raise WorkerError(
                ErrorCode.INPUT_NOT_FOUND,
                f"{field}: no object {key!r} in bucket {self.bucket!r}",
                details={"field": field, "key": key, "bucket": self.bucket},
            )
        if info.size > max_bytes:
            raise _too_large(field, key, info.size, max_bytes)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with dest.open("wb") as out:
                self._retrying(
                    "download",
                    key,
                    lambda: self._stream_to(info, out, max_bytes, field, progress),
                    deadline,
                )
                written = out.tell()
        except Exception as exc:  # ``download`` removes what was written
            if isinstance(exc, WorkerError | DeadlinePassed):
                raise
            if is_disk_full(exc):
                raise disk_full_error(f"downloading {field}") from exc
            if isinstance(exc, S3Error) and exc.code in NOT_FOUND_CODES:
                raise WorkerError(
                    ErrorCode.INPUT_NOT_FOUND,
                    f"{field}: object {key!r} disappeared from bucket {self.bucket!r} during the download",
                    details={"field": field, "key": key, "bucket": self.bucket},
                ) from exc
            if isinstance(exc, S3Error) and exc.code == "PreconditionFailed":
                raise WorkerError(
                    ErrorCode.STORAGE_ERROR,
                    f"{field}: object {key!r} changed while it was downloaded; submit the job again",
                    details={"field": field, "key": key},
                    retryable=True,
                ) from exc
            raise self._storage_error(exc, f"cannot download {field} {key!r}") from exc
        return written

    def upload(
        self,
        src: Path,
        key: str,
        *,
        content_type: str = "video/mp4",
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Streams ``src`` to ``key`` in ``part_bytes`` parts; the object appears whole or not at all.

        A failed multipart upload is aborted by the SDK; should the abort fail too, the
        parts stay invisible until the bucket's lifecycle rule for incomplete uploads
        removes them. After an error the key is looked at: a request that reached the bucket
        and only lost its answer leaves exactly ``src`` there (size, ETag, metadata): that is
        success; anything else there is removed (``_settle_failed_upload``).
        """
        key = validate_key(key, field="output key")
        size = src.stat().st_size
        try:
            self._retrying(
                "upload",
                key,
                lambda: self.client.fput_object(
                    self.bucket,
                    key,
                    str(src),
                    content_type=content_type,
                    metadata=dict(metadata) if metadata else None,
                    part_size=self.part_bytes,
                    num_parallel_uploads=UPLOAD_PARALLEL_PARTS,
                ),
            )
        except Exception as exc:
            if not self._settle_failed_upload(src, key, metadata or {}, exc):
                raise self._storage_error(exc, f"cannot upload the output to {key!r}") from exc
        log_event("storage_uploaded", minio_key=key, bytes=size, content_type=content_type)

    def list_keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (recursively), sorted."""
        try:
            objects = self._retrying(
                "list",
                prefix,
                lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True)),
            )
        except Exception as exc:
            raise self._storage_error(exc, f"cannot list the objects under {prefix!r}") from exc
        return sorted(str(obj.object_name) for obj in objects if obj.object_name)

    def delete(self, keys: list[str]) -> None:
        """Removes ``keys`` (missing ones are no error)."""
        for key in keys:
            try:
                self._retrying("delete", key, lambda key=key: self.client.remove_object(self.bucket, key))
            except Exception as exc:
                raise self._storage_error(exc, f"cannot delete object {key!r}") from exc
        if keys:
            log_event("storage_deleted", objects=len(keys), first=keys[0])

    def presigned_get(self, key: str, expires_s: int) -> str:
        """A URL anyone can GET for ``expires_s`` seconds (never log it)."""
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise WorkerError(
                ErrorCode.CONFIG_INVALID,
                f"presigned URL expiry must be between 1 and {MAX_PRESIGN_S} seconds, got {expires_s}",
            )
        return self._presign(self.presign_client, key, expires_s)

    def internal_get_url(self, key: str, expires_s: int = 300) -> str:
        """A short-lived GET URL on ``MINIO_ENDPOINT`` (the name this worker reaches), for reading
        a header without downloading the object (never log it)."""
        return self._presign(self.client, key, expires_s)

    # -- internals -----------------------------------------------------------------------

    def _settle_failed_upload(self, src: Path, key: str, metadata: dict[str, str], exc: Exception) -> bool:
        """True when the failed upload is in the bucket after all, exactly as sent; otherwise
        whatever sits at ``key`` is removed (best effort: the storage may be down)."""
        try:
            found = self.stat(key)
        except WorkerError as stat_error:
            log_event("storage_upload_unsettled", level="warning", minio_key=key, error=stat_error.message)
            return False
        if found is None:
            return False
        sent = {name.lower(): value for name, value in metadata.items()}
        exact = (
            found.size == src.stat().st_size
            and found.etag == upload_etag(src, self.part_bytes)
            and all(found.metadata.get(name) == value for name, value in sent.items())
        )
        if exact:
            log_event("storage_upload_confirmed", minio_key=key, error=describe_error(exc))
            return True
        try:
            self.delete([key])
        except WorkerError as delete_error:
            log_event(
                "storage_upload_not_removed", level="warning", minio_key=key, error=delete_error.message
            )
        return False

    def _presign(self, client: Minio, key: str, expires_s: int) -> str:
        try:
            return self._retrying(
                "presign",
                key,
                lambda: client.presigned_get_object(self.bucket, key, expires=timedelta(seconds=expires_s)),
            )
        except Exception as exc:
            raise self._storage_error(exc, f"cannot presign {key!r}") from exc

    def _stream_to(
        self,
        info: ObjectInfo,
        out: BinaryIO,
        max_bytes: int,
        field: str,
        progress: ProgressCallback | None,
    ) -> None:
        offset = out.tell()
        if offset and offset >= info.size:
            return  # everything arrived before the connection broke
        headers = {"If-Match": f'"{info.etag}"'} if info.etag else None
        response = self.client.get_object(self.bucket, info.key, offset=offset, request_headers=headers)
        try:
            # Raw bytes as stored: a Content-Encoding on the object must not be undone here.
            for chunk in response.stream(self.chunk_bytes, decode_content=False):
                if out.tell() + len(chunk) > max_bytes:
                    raise _too_large(field, info.key, out.tell() + len(chunk), max_bytes, streamed=True)
                out.write(chunk)
                if progress is not None:
                    progress(out.tell(), info.size)
        finally:
            response.close()
            response.release_conn()
        if out.tell() != info.size:
            raise http.client.IncompleteRead(b"", info.size - out.tell())

    def _retrying(self, op: str, key: str | None, call: Callable[[], T], deadline: float | None = None) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except Exception as exc:
                if attempt > self.retries or not is_transient(exc) or cancelled_here():
                    raise
                delay = min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2  # jitter: workers must not retry in lockstep
                if deadline is not None and time.monotonic() + delay >= deadline:
                    raise DeadlinePassed(op) from exc
                log_event(
                    "storage_retry",
                    level="warning",
                    op=op,
                    minio_key=key,
                    attempt=attempt,
                    max_retries=self.retries,
                    delay_s=round(delay, 3),
                    error=describe_error(exc),
                )
                time.sleep(delay)

    def _bucket_exists(self) -> bool:
        """Whether the bucket is there (asked after a key was not found: S3 answers a HEAD on a key
        of a missing bucket with a bare 404, as for a missing key). True when the storage does not
        say, so the caller's own answer stands."""
        try:
            return bool(self.client.bucket_exists(self.bucket))
        except Exception as exc:
            log_event("storage_bucket_check_failed", level="warning", error=describe_error(exc))
            return True

    def _no_bucket(self) -> WorkerError:
        return WorkerError(
            ErrorCode.STORAGE_MISCONFIGURED,
            f"bucket {self.bucket!r} does not exist at {self.endpoint}: the deployment's storage is not set "
            "up; create the bucket or fix MINIO_BUCKET",
            details={"bucket": self.bucket, "endpoint": self.endpoint},
        )

    def _storage_error(self, exc: BaseException, what: str, *, hint: str | None = None) -> WorkerError:
        details: dict[str, Any] = {"bucket": self.bucket, "endpoint": self.endpoint}
        if isinstance(exc, S3Error):
            details["s3_code"] = exc.code
        code = ErrorCode.STORAGE_ERROR
        if isinstance(exc, S3Error) and exc.code == NO_BUCKET_CODE:
            return self._no_bucket()
        if is_disk_full(exc):
            return disk_full_error(what)
        if isinstance(exc, S3Error) and exc.code in ACCESS_CODES:
            code = ErrorCode.STORAGE_MISCONFIGURED
            reason = (
                f"the storage refused access ({exc.code}): check MINIO_ACCESS_KEY/MINIO_SECRET_KEY and "
                f"the bucket policy (the worker needs s3:GetObject, s3:PutObject and s3:ListBucket "
                f"on {self.bucket!r})"
            )
        elif isinstance(exc, urllib3.exceptions.SSLError):
            code = ErrorCode.STORAGE_MISCONFIGURED
            reason = f"TLS to the storage failed ({describe_error(exc)})"
            hint = "check MINIO_USE_SSL and the server's certificate"
        elif is_transient(exc):
            code = ErrorCode.STORAGE_UNAVAILABLE
            reason = f"the storage did not answer after {self.retries + 1} attempts ({describe_error(exc)})"
            hint = hint or "the storage may be overloaded or down; submit the job again later"
        else:
            reason = describe_error(exc)
        message = f"{what}: {reason}"
        if hint:
            message += f"; {hint}"
        return WorkerError(code, message, details=details)


def upload_etag(path: Path, part_bytes: int) -> str:
    """The ETag S3 gives ``path`` uploaded as ``upload`` does: the MD5 of a single PUT (size up to
    ``part_bytes``), else the MD5 of the parts' MD5s and the part count (``…-3``). Servers that
    encrypt objects give other ETags: an upload that lost its answer there is then removed."""
    digests = []
    with path.open("rb") as handle:
        while part := handle.read(part_bytes):
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    if len(digests) <= 1:
        return (digests[0] if digests else hashlib.md5(b"", usedforsecurity=False).digest()).hex()
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def _too_large(field: str, key: str, size: int, max_bytes: int, *, streamed: bool = False) -> WorkerError:
    size_text = f"more than {max_bytes} bytes" if streamed else f"{size} bytes"
    return WorkerError(
        ErrorCode.INPUT_TOO_LARGE,
        f"{field} {key!r} is {size_text}, over the limit of {max_bytes} bytes",
        details={"field": field, "key": key, "max_bytes": max_bytes, **({} if streamed else {"size": size})},
    )
