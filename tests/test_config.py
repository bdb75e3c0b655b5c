"""Configuration is read once from the environment and every problem is reported together."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.config import ModelSettings, Settings
from worker.errors import ErrorCode, WorkerError

REQUIRED = {
    "MINIO_ENDPOINT": "127.0.0.1:9000",
    "MINIO_ACCESS_KEY": "ak",
    "MINIO_SECRET_KEY": "sk",
    "MINIO_BUCKET": "media",
    "WORKFLOW": "workflows/model_free_still.json",
}


def test_defaults() -> None:
    settings = Settings.from_env(REQUIRED)
    assert settings.comfy_url == "http://127.0.0.1:8188"
    assert settings.minio_use_ssl is False
    assert settings.output_prefix == "outputs"
    assert settings.workflow.name == "model_free_still.json"
    assert settings.job_timeout_s < 1200  # below the endpoint's execution timeout
    assert settings.attention_backend == "auto"
    assert Settings.from_env({**REQUIRED, "ATTENTION_BACKEND": "CUDNN"}).attention_backend == "cudnn"


def test_all_problems_are_reported_at_once() -> None:
    env = {
        "MINIO_ENDPOINT": "http://minio:9000/path",
        "MINIO_USE_SSL": "maybe",
        "JOB_TIMEOUT_S": "-5",
        "COMFY_URL": "ftp://x",
        "WORKFLOW": "workflows/nope.json",
        "ATTENTION_BACKEND": "fastest",
    }
    with pytest.raises(WorkerError) as caught:
        Settings.from_env(env)
    error = caught.value
    assert error.code is ErrorCode.CONFIG_INVALID
    problems = " ".join(error.details["problems"])
    for name in (
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_BUCKET",
        "MINIO_ENDPOINT",
        "MINIO_USE_SSL",
        "JOB_TIMEOUT_S",
        "COMFY_URL",
        "WORKFLOW",
        "ATTENTION_BACKEND",
    ):
        assert name in problems


def test_secrets_never_appear_in_config_errors() -> None:
    env = {**REQUIRED, "MINIO_SECRET_KEY": "super-secret-value", "MINIO_USE_SSL": "bad"}
    with pytest.raises(WorkerError) as caught:
        Settings.from_env(env)
    assert "super-secret-value" not in caught.value.message


def test_endpoint_url_is_reduced_to_host_port(tmp_path: Path) -> None:
    env = {**REQUIRED, "MINIO_ENDPOINT": "https://minio.example.com:9000", "COMFY_INPUT_DIR": str(tmp_path)}
    settings = Settings.from_env(env)
    assert settings.minio_endpoint == "minio.example.com:9000"
    assert settings.comfy_input_dir == tmp_path


def test_chunk_settings() -> None:
    settings = Settings.from_env(REQUIRED)
    assert (settings.chunk_windows, settings.scratch_prefix) == (None, "wan-worker-scratch")
    assert Settings.from_env({**REQUIRED, "CHUNK_WINDOWS": "0"}).chunk_windows == 0
    for prefixes in (("outputs", "outputs"), ("outputs", "outputs/scratch"), ("out/put", "out")):
        with pytest.raises(WorkerError) as caught:
            Settings.from_env({**REQUIRED, "OUTPUT_PREFIX": prefixes[0], "SCRATCH_PREFIX": prefixes[1]})
        assert "overlaps OUTPUT_PREFIX" in caught.value.message
    beside = Settings.from_env({**REQUIRED, "SCRATCH_PREFIX": "outputs-scratch"})
    assert beside.scratch_prefix == "outputs-scratch"  # a sibling folder, not inside outputs/
    with pytest.raises(WorkerError, match="CHUNK_WINDOWS='-1': must be between 0 and 1000"):
        Settings.from_env({**REQUIRED, "CHUNK_WINDOWS": "-1"})


def test_ssl_cert_file_is_read_here_and_must_exist(tmp_path: Path) -> None:
    """The CA bundle for MinIO over TLS is a setting like the others (storage.py read it itself)."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert Settings.from_env({**REQUIRED, "SSL_CERT_FILE": str(bundle)}).ssl_cert_file == bundle
    assert Settings.from_env(REQUIRED).ssl_cert_file is None
    with pytest.raises(WorkerError) as caught:
        Settings.from_env({**REQUIRED, "SSL_CERT_FILE": str(tmp_path / "missing.pem")})
    assert "SSL_CERT_FILE" in caught.value.message and "not an existing file" in caught.value.message


def test_workflow_overrides_are_every_wan_variable_but_the_tools_own() -> None:
    env = {
        **REQUIRED,
        "WAN_STEPS": " 4 ",
        "WAN_STEP": "5",  # a misspelling is passed on: Workflow.load refuses it by name
        "WAN_SHIFT": "  ",  # set but empty: the workflow's default
        "WAN_BENCH_COMFYUI": "/src/ComfyUI",
        "WAN_BENCH_PYTHON": "/venv/bin/python",
        "WAN_CHUNKS_TEST_WINDOW": "21",
        "WAN_SAM2_PACK": "/tmp/src/sam2",
        "STEPS": "9",
    }
    assert Settings.from_env(env).workflow_overrides == {"WAN_STEPS": "4", "WAN_STEP": "5"}
    assert Settings.from_env(REQUIRED).workflow_overrides == {}


def test_comfy_url_follows_comfy_port_and_a_disagreement_is_refused() -> None:
    assert Settings.from_env({**REQUIRED, "COMFY_PORT": "9188"}).comfy_url == "http://127.0.0.1:9188"
    same = {**REQUIRED, "COMFY_PORT": "9188", "COMFY_URL": "http://127.0.0.1:9188/"}
    assert Settings.from_env(same).comfy_url == "http://127.0.0.1:9188"
    with pytest.raises(WorkerError) as caught:
        Settings.from_env({**REQUIRED, "COMFY_PORT": "9188", "COMFY_URL": "http://127.0.0.1:8188"})
    assert caught.value.code is ErrorCode.CONFIG_INVALID
    assert (
        "COMFY_URL='http://127.0.0.1:8188' (port 8188) and COMFY_PORT=9188 disagree" in caught.value.message
    )
    with pytest.raises(WorkerError, match=r"COMFY_URL='http://h' \(port 80\) and COMFY_PORT=8188 disagree"):
        Settings.from_env({**REQUIRED, "COMFY_PORT": "8188", "COMFY_URL": "http://h"})  # no port: 80
    with pytest.raises(WorkerError, match="COMFY_PORT='0': must be between 1 and 65535"):
        Settings.from_env({**REQUIRED, "COMFY_PORT": "0"})
    with pytest.raises(WorkerError, match="COMFY_URL='http://h:port'"):
        Settings.from_env({**REQUIRED, "COMFY_URL": "http://h:port"})


def test_the_model_bundle_must_name_a_repository() -> None:
    assert Settings.from_env(REQUIRED).model_bundle_repo is None
    bundle = Settings.from_env({**REQUIRED, "MODEL_BUNDLE_REPO": "acme/wan-bundle"})
    assert bundle.model_bundle_repo == "acme/wan-bundle"
    with pytest.raises(
        WorkerError, match=re.escape("MODEL_BUNDLE_REPO='https://huggingface.co/acme/x': expected")
    ):
        Settings.from_env({**REQUIRED, "MODEL_BUNDLE_REPO": "https://huggingface.co/acme/x"})


def test_model_settings_are_one_reader_for_installer_and_worker(tmp_path: Path) -> None:
    models = ModelSettings.from_env(
        {"MODEL_VARIANT": "bf16", "COMFY_MODELS_DIR": str(tmp_path), "HF_TOKEN": "x"}
    )
    assert (models.variant, models.models_dir, models.hf_token_set) == ("bf16", tmp_path, True)
    assert (models.bundle_repo, models.allow_unpinned) == (None, False)
    settings = Settings.from_env({**REQUIRED, "MODEL_VARIANT": "bf16", "MODEL_BUNDLE_REPO": "org/bundle"})
    assert (settings.model_variant, settings.model_bundle_repo) == ("bf16", "org/bundle")
    with pytest.raises(WorkerError) as caught:
        ModelSettings.from_env({"MODEL_BUNDLE_REPO": "not a repo"})
    assert caught.value.code is ErrorCode.CONFIG_INVALID and "MODEL_BUNDLE_REPO" in caught.value.message
