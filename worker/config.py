"""Configuration: every setting comes from an environment variable, read and checked once.

``Settings.from_env()`` raises ``WorkerError(CONFIG_INVALID)`` listing every problem at
once, so a misconfigured endpoint fails at start with one clear message instead of on
the first job. The README's configuration table documents each variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from worker.contract import normalize_prefix
from worker.errors import ErrorCode, WorkerError
from worker.models import is_repo_id

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "wan22_animate_replace.json"

T = TypeVar("T")
ATTENTION_BACKENDS = ("auto", "flash", "cudnn", "sage", "fa4", "fa3")
# The longest driving video the default JOB_TIMEOUT_S fits on an H100 by the time model
# (worker/estimate.py; a test keeps the two consistent): ~30 s of 24 fps video.
DEFAULT_MAX_VIDEO_DURATION_S = 30.0
# models/manifest.json's default_variant and alternatives (a test keeps them equal).
MODEL_VARIANTS = ("fp8", "bf16")
DEFAULT_COMFY_PORT = 8188
# WAN_* variables that are not workflow settings: the GPU benchmark's and the ComfyUI tests' own.
NOT_WORKFLOW_SETTINGS = ("WAN_BENCH_", "WAN_CHUNKS_TEST_", "WAN_SAM2_PACK", "WAN_WAP_PACK")


DEFAULT_MODELS_DIR = Path("/comfyui/models")
DEFAULT_HF_CACHE_ROOT = Path("/runpod-volume/huggingface-cache")


@dataclass(frozen=True)
class ModelSettings:
    """The model settings, read by the same rules for ``download_models.py`` (all of them) and the
    worker (the variant and the bundle, checked at start with everything else)."""

    variant: str  # the manifest variant: the files installed, and the diffusion model the graph loads
    bundle_repo: str | None  # Phase A: the model bundle to link files from when RunPod caches it
    models_dir: Path  # ComfyUI's models folder
    hf_cache_root: Path  # RunPod's cached Hugging Face models
    allow_unpinned: bool  # install manifest entries without a pinned revision
    hf_token_set: bool  # HF_TOKEN is huggingface_hub's own variable: only whether it is set is kept

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ModelSettings:
        reader = _Reader(os.environ if env is None else env)
        models = cls.read(reader)
        reader.raise_if_problems()
        return models

    @classmethod
    def read(cls, reader: _Reader) -> ModelSettings:
        return cls(
            variant=reader.optional("MODEL_VARIANT", _one_of(MODEL_VARIANTS), MODEL_VARIANTS[0]),
            bundle_repo=reader.optional("MODEL_BUNDLE_REPO", _repo_id, None),
            models_dir=reader.optional("COMFY_MODELS_DIR", Path, DEFAULT_MODELS_DIR),
            hf_cache_root=reader.optional("RUNPOD_HF_CACHE_ROOT", Path, DEFAULT_HF_CACHE_ROOT),
            allow_unpinned=reader.optional("ALLOW_UNPINNED_MODELS", _bool, False),
            hf_token_set=bool(reader.env.get("HF_TOKEN", "").strip()),
        )


@dataclass(frozen=True)
class Settings:
    # Object storage (MinIO or any S3-compatible server)
    minio_endpoint: str
    minio_access_key: str
    minio_secret_key: str
    minio_bucket: str
    minio_use_ssl: bool
    minio_region: str | None
    minio_public_endpoint: str | None
    minio_public_use_ssl: bool | None
    ssl_cert_file: Path | None  # CA bundle for MinIO over TLS (a private CA); None = certifi's
    default_driving_video_path: str | None
    output_prefix: str
    scratch_prefix: str  # finished chunks of running jobs (worker/chunk_store.py)
    presigned_url_expiry_s: int
    # ComfyUI beside the worker
    comfy_url: str
    comfy_input_dir: Path | None
    comfy_output_dir: Path | None
    workflow: Path
    workflow_overrides: dict[str, str]  # WAN_* by name, raw: the workflow parses them and refuses others
    # Limits
    job_timeout_s: float
    max_image_bytes: int
    max_image_pixels: int
    max_video_bytes: int
    max_video_duration_s: float
    allow_private_urls: bool
    # The time model (worker/estimate.py): None = the GPU's measured figures
    estimate_sampler_step_s: float | None
    estimate_preprocess_frame_s: float | None
    # Chunks (worker/graph/chunks.py): windows per ComfyUI prompt; None = the workflow's own figure
    chunk_windows: int | None
    # Behaviour
    attention_backend: str  # applied inside ComfyUI by comfyui_nodes/wan_worker_attention; checked here
    model_variant: str  # the manifest variant download_models.py installs; model names are checked against it
    model_bundle_repo: str | None  # read by download_models.py at start; checked here with everything else
    progress_interval_s: float
    work_dir: Path
    gpu_prices_per_s: tuple[tuple[str, float], ...]  # (GPU name, USD/s) before worker/cost.py's table

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        models = ModelSettings.read(reader)
        settings = cls(
            minio_endpoint=reader.required("MINIO_ENDPOINT", _endpoint),
            minio_access_key=reader.required("MINIO_ACCESS_KEY", str),
            minio_secret_key=reader.required("MINIO_SECRET_KEY", str),
            minio_bucket=reader.required("MINIO_BUCKET", str),
            minio_use_ssl=reader.optional("MINIO_USE_SSL", _bool, False),
            minio_region=reader.optional("MINIO_REGION", str, None),
            minio_public_endpoint=reader.optional("MINIO_PUBLIC_ENDPOINT", _endpoint, None),
            minio_public_use_ssl=reader.optional("MINIO_PUBLIC_ENDPOINT", _url_is_https, None),
            ssl_cert_file=reader.optional("SSL_CERT_FILE", _existing_file, None),
            default_driving_video_path=reader.optional("DEFAULT_DRIVING_VIDEO_PATH", str, None),
            output_prefix=reader.optional("OUTPUT_PREFIX", normalize_prefix, "outputs"),
            scratch_prefix=reader.optional("SCRATCH_PREFIX", normalize_prefix, "wan-worker-scratch"),
            presigned_url_expiry_s=reader.optional(
                "PRESIGNED_URL_EXPIRY_S", _int_between(60, 7 * 24 * 3600), 3600
            ),
            comfy_url=_comfy_url(reader),
            comfy_input_dir=reader.optional("COMFY_INPUT_DIR", _existing_dir, None),
            comfy_output_dir=reader.optional("COMFY_OUTPUT_DIR", _existing_dir, None),
            workflow=reader.optional("WORKFLOW", _workflow_path, DEFAULT_WORKFLOW),
            workflow_overrides=workflow_overrides(env),
            job_timeout_s=reader.optional("JOB_TIMEOUT_S", _float_between(1, 24 * 3600), 1140.0),
            max_image_bytes=reader.optional("MAX_IMAGE_BYTES", _int_between(1024, 1 << 34), 25 * 1024**2),
            max_image_pixels=reader.optional("MAX_IMAGE_PIXELS", _int_between(4096, 1 << 31), 40_000_000),
            max_video_bytes=reader.optional("MAX_VIDEO_BYTES", _int_between(1024, 1 << 40), 1024**3),
            max_video_duration_s=reader.optional(
                "MAX_VIDEO_DURATION_S", _float_between(0.1, 24 * 3600), DEFAULT_MAX_VIDEO_DURATION_S
            ),
            allow_private_urls=reader.optional("ALLOW_PRIVATE_URLS", _bool, False),
            estimate_sampler_step_s=reader.optional(
                "ESTIMATE_SAMPLER_STEP_S", _float_between(0.01, 3600), None
            ),
            estimate_preprocess_frame_s=reader.optional(
                "ESTIMATE_PREPROCESS_FRAME_S", _float_between(0, 600), None
            ),
            chunk_windows=reader.optional("CHUNK_WINDOWS", _int_between(0, 1000), None),
            attention_backend=reader.optional("ATTENTION_BACKEND", _one_of(ATTENTION_BACKENDS), "auto"),
            model_variant=models.variant,
            model_bundle_repo=models.bundle_repo,
            progress_interval_s=reader.optional("PROGRESS_INTERVAL_S", _float_between(0, 600), 2.0),
            work_dir=reader.optional("WORK_DIR", Path, Path("/tmp/wan-worker")),
            gpu_prices_per_s=reader.optional("GPU_PRICES_PER_S", _gpu_prices, ()),
        )
        for name, instead in RETIRED_SETTINGS.items():
            if env.get(name, "").strip():
                reader.problems.append(f"{name} is no longer read: {instead}")
        scratch, output = settings.scratch_prefix, settings.output_prefix
        if (
            scratch
            and output
            and (f"{scratch}/".startswith(f"{output}/") or f"{output}/".startswith(f"{scratch}/"))
        ):
            reader.problems.append(
                f"SCRATCH_PREFIX={scratch!r} overlaps OUTPUT_PREFIX={output!r}: the worker deletes what it "
                "leaves under SCRATCH_PREFIX, so the two must be separate folders"
            )
        reader.raise_if_problems()
        return settings


# Settings a deployment may still carry, and what replaced them.
RETIRED_SETTINGS = {
    "WAN_DIFFUSION_MODEL": "MODEL_VARIANT alone chooses the diffusion model (fp8 or bf16); the file "
    "it loads is the one models/manifest.json installs for that variant",
}


def workflow_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """The workflow setting overrides: every set ``WAN_*`` variable but the tools' own. Only the
    workflow knows its settings' names, so ``Workflow.load`` checks them (and their values)."""
    return {
        name: value.strip()
        for name, value in env.items()
        if name.startswith("WAN_")
        and not name.startswith(NOT_WORKFLOW_SETTINGS)
        and name not in RETIRED_SETTINGS
        and value.strip()
    }


class _Reader:
    """Collects every problem instead of stopping at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def required(self, name: str, parse: Callable[[str], T]) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            self.problems.append(f"{name} is required but not set")
            return None  # type: ignore[return-value]
        return self._parse(name, raw, parse)

    def optional(self, name: str, parse: Callable[[str], T], default: T) -> T:
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        return self._parse(name, raw, parse)

    def _parse(self, name: str, raw: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(raw)
        except (ValueError, TypeError) as exc:
            shown = "<hidden>" if any(word in name for word in ("SECRET", "TOKEN", "PASSWORD")) else repr(raw)
            self.problems.append(f"{name}={shown}: {exc}")
            return None  # type: ignore[return-value]

    def raise_if_problems(self) -> None:
        if self.problems:
            raise WorkerError(
                ErrorCode.CONFIG_INVALID,
                "invalid configuration: " + "; ".join(self.problems),
                details={"problems": self.problems},
            )


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _float_between(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}")
        return value

    return parse


def _gpu_prices(raw: str) -> tuple[tuple[str, float], ...]:
    """``H100=0.00093,RTX 4090=0.00031``: GPU names (as in the device name) and USD per second."""
    prices = []
    for entry in raw.split(","):
        name, sep, price = entry.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected NAME=USD_PER_S entries separated by commas, got {entry.strip()!r}")
        value = float(price)
        if not 0 <= value < 1:
            raise ValueError(f"{name.strip()}: {value} USD per second is not between 0 and 1")
        prices.append((name.strip(), value))
    return tuple(prices)


def _endpoint(raw: str) -> str:
    """MinIO wants ``host[:port]``; accept a URL too and keep its host part."""
    if "://" in raw:
        parts = urlsplit(raw)
        if parts.path not in ("", "/"):
            raise ValueError("the endpoint must not have a path")
        raw = parts.netloc
    if not raw or "/" in raw:
        raise ValueError("expected host[:port], e.g. minio.example.com:9000")
    return raw


def _url_is_https(raw: str) -> bool | None:
    """The scheme of MINIO_PUBLIC_ENDPOINT when it is a URL; None means 'as MINIO_USE_SSL'."""
    if "://" not in raw:
        return None
    return urlsplit(raw).scheme == "https"


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http(s) URL such as http://127.0.0.1:8188")
    _ = parts.port  # a port that is not a number raises ValueError here
    return raw.rstrip("/")


def _existing_file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError("not an existing file")
    return path


def _comfy_url(reader: _Reader) -> str:
    """COMFY_PORT is where entrypoint.sh starts ComfyUI and COMFY_URL follows it; a URL naming another
    port would make the start wait COMFY_READY_TIMEOUT_S for a ComfyUI that is not there."""
    port = reader.optional("COMFY_PORT", _int_between(1, 65535), None)
    url = reader.optional("COMFY_URL", _http_url, None)
    if url is None:
        return f"http://127.0.0.1:{port or DEFAULT_COMFY_PORT}"
    parts = urlsplit(url)
    url_port = parts.port or (443 if parts.scheme == "https" else 80)
    if port is not None and url_port != port:
        reader.problems.append(
            f"COMFY_URL={url!r} (port {url_port}) and COMFY_PORT={port} disagree: ComfyUI listens on "
            "COMFY_PORT. Set only COMFY_PORT (COMFY_URL follows it), or make both name the same port"
        )
    return url


def _repo_id(raw: str) -> str:
    if not is_repo_id(raw):
        raise ValueError("expected a Hugging Face repository id, ORG/NAME")
    return raw


def _existing_dir(raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        raise ValueError("not an existing directory")
    return path


def _workflow_path(raw: str) -> Path:
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        raise ValueError(f"workflow file {path} does not exist")
    bindings = path.with_suffix(".bindings.json")
    if not bindings.is_file():
        raise ValueError(f"bindings file {bindings} does not exist")
    return path
