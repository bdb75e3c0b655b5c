"""A fake Hub repository with three small model files, a manifest pinning them, and download_models.py
run as a command against them: the setting of tests/test_download_models.py and tests/test_model_bundle.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "download_models.py"
REPO = "TestOrg/tiny-models"
OTHER_REPO = "TestOrg/other-models"
BUNDLE_REPO = "TestOrg/wan-bundle"

UNET = os.urandom(6 * 1024)
VAE = os.urandom(5 * 1024)
LORA = os.urandom(3 * 1024)
UNET_BF16 = os.urandom(8 * 1024)
FILES = {
    "diffusion_models/unet.safetensors": UNET,
    "vae/vae.safetensors": VAE,
    "loras/lora.safetensors": LORA,
}

_CLEARED_ENV = (
    "HF_TOKEN",
    "HF_HUB_OFFLINE",
    "HF_HUB_CACHE",
    "MODEL_VARIANT",
    "MODEL_BUNDLE_REPO",
    "RUNPOD_HF_CACHE_ROOT",
    "COMFY_MODELS_DIR",
    "ALLOW_UNPINNED_MODELS",
)


def entry(
    role: str, folder: str, filename: str, path: str, content: bytes, revision: str | None, **over: Any
) -> dict[str, Any]:
    return {
        "role": role,
        "filename": filename,
        "folder": folder,
        "repo": REPO,
        "revision": revision,
        "path": path,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        **over,
    }


class Setup:
    def __init__(self, hub: FakeHub, tmp: Path) -> None:
        self.hub, self.tmp = hub, tmp
        self.models = tmp / "models"
        self.cache = tmp / "runpod-cache"
        self.commit = hub.commit(
            REPO,
            {"weights/unet.safetensors": UNET, "vae/vae.safetensors": VAE, "loras/lora.safetensors": LORA},
        )
        bf16_commit = hub.commit(OTHER_REPO, {"split/unet_bf16.safetensors": UNET_BF16})
        bf16 = entry(
            "diffusion_model",
            "diffusion_models",
            "unet_bf16.safetensors",
            "split/unet_bf16.safetensors",
            UNET_BF16,
            bf16_commit,
        )
        self.manifest: dict[str, Any] = {
            "default_variant": "fp8",
            "files": [
                entry(
                    "diffusion_model",
                    "diffusion_models",
                    "unet.safetensors",
                    "weights/unet.safetensors",
                    UNET,
                    self.commit,
                ),
                entry("vae", "vae", "vae.safetensors", "vae/vae.safetensors", VAE, self.commit),
                entry("lora", "loras", "lora.safetensors", "loras/lora.safetensors", LORA, self.commit),
            ],
            "alternatives": {"bf16": {"files": [{**bf16, "repo": OTHER_REPO}]}},
        }

    def write_manifest(self) -> Path:
        path = self.tmp / "manifest.json"
        path.write_text(json.dumps(self.manifest))
        return path

    def env(self, extra: dict[str, str] | None = None, endpoint: str | None = None) -> dict[str, str]:
        full = {k: v for k, v in os.environ.items() if k not in _CLEARED_ENV}
        full.update(
            HF_ENDPOINT=endpoint or self.hub.endpoint,
            HF_HUB_DISABLE_XET="1",
            HF_HUB_DISABLE_TELEMETRY="1",
            HF_HOME=str(self.tmp / "hf-home"),
            PYTHONUNBUFFERED="1",
        )
        full.update(extra or {})
        return full

    def _run(self, cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)

    def _command(self, *words: str) -> list[str]:
        return [
            sys.executable,
            str(SCRIPT),
            *words,
            "--manifest",
            str(self.write_manifest()),
            "--models-dir",
            str(self.models),
            "--hf-cache-root",
            str(self.cache),
            "--progress-interval",
            "0.2",
        ]

    def run(
        self, *args: str, env: dict[str, str] | None = None, endpoint: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """download_models.py (install and its other modes) with quick retries."""
        return self._run([*self._command(), "--retry-wait", "0.05", *args], self.env(env, endpoint))

    def bundle(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """download_models.py bundle --repo BUNDLE_REPO, from this setup's models dir and cache."""
        return self._run([*self._command("bundle", "--repo", BUNDLE_REPO), *args], self.env(env))

    def installed(self, folder: str, filename: str) -> Path:
        return self.models / folder / filename


def table_lines(stdout: str, relpath: str) -> list[str]:
    """The lines of the plan and result tables that describe relpath, in order."""
    lines = [line for line in stdout.splitlines() if line.startswith(relpath + " ")]
    assert lines, f"no row for {relpath} in:\n{stdout}"
    return lines


def table_row(stdout: str, relpath: str) -> list[str]:
    """Cells of the last table row for relpath (the result table after an install)."""
    return table_lines(stdout, relpath)[-1].split()


def make_cache_file(cache: Path, repo: str, revision: str, path: str, content: bytes) -> Path:
    """Lay a file out like a Hugging Face cache: snapshot symlink -> blob named by sha256."""
    repo_dir = cache / "hub" / ("models--" + repo.replace("/", "--"))
    blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(content)
    snapshot = repo_dir / "snapshots" / revision / path
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    return snapshot


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


@pytest.fixture
def model_setup(hub: FakeHub, tmp_path: Path) -> Setup:
    """A fake repo with three files at one commit, a manifest pinning that commit, an empty models dir."""
    return Setup(hub, tmp_path)
