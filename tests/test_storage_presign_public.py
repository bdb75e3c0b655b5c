"""Presigned URLs can be signed for the public name of MinIO, not the worker's internal one."""

from __future__ import annotations

from urllib.parse import urlsplit

import requests

from worker.config import Settings
from worker.storage import Storage


def test_presigned_url_names_the_public_endpoint(s3) -> None:  # type: ignore[no-untyped-def]
    s3.put("outputs/x.mp4", b"video-bytes")
    storage = Storage(
        endpoint=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        bucket=s3.bucket,
        secure=False,
        region=s3.region,
        public_endpoint="media.example.com",
        public_secure=True,
    )
    url = storage.presigned_get("outputs/x.mp4", 600)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("https", "media.example.com")
    assert parts.path == f"/{s3.bucket}/outputs/x.mp4"
    assert "X-Amz-Signature=" in parts.query
    # Without a public endpoint the URL names the endpoint the worker uses, and works.
    internal = s3.storage.presigned_get("outputs/x.mp4", 600)
    assert urlsplit(internal).netloc == s3.endpoint
    assert requests.get(internal, timeout=10).content == b"video-bytes"


def test_public_endpoint_setting(s3_env) -> None:  # type: ignore[no-untyped-def]
    env = {**s3_env, "WORKFLOW": "workflows/model_free_still.json"}
    settings = Settings.from_env({**env, "MINIO_PUBLIC_ENDPOINT": "https://media.example.com"})
    assert settings.minio_public_endpoint == "media.example.com"
    assert settings.minio_public_use_ssl is True
    plain = Settings.from_env({**env, "MINIO_PUBLIC_ENDPOINT": "media.example.com:9000"})
    assert plain.minio_public_use_ssl is None
