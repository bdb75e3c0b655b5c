"""``python -m worker.preflight``: what the entrypoint runs first, as a process, without network."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINIO = {
    "MINIO_ENDPOINT": "127.0.0.1:9",
    "MINIO_ACCESS_KEY": "k",
    "MINIO_SECRET_KEY": "s",
    "MINIO_BUCKET": "b",
}


def preflight(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "WAN_", "MODEL_", "WORKFLOW"))
    }
    return subprocess.run(
        [sys.executable, "-m", "worker.preflight"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("variant", ["fp8", "bf16"])
def test_the_pinned_workflow_passes_for_each_variant(variant: str) -> None:
    run = preflight(**MINIO, MODEL_VARIANT=variant)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("preflight: settings valid; workflow wan22_animate_replace (")
    assert f"model variant {variant}" in run.stdout


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "CONFIG_INVALID: invalid configuration: MINIO_ENDPOINT is required but not set"),
        (
            {**MINIO, "WAN_STEPS": "abc"},
            "CONFIG_INVALID: WAN_STEPS (workflow setting 'steps') must be an integer",
        ),
        ({**MINIO, "WAN_STEP": "4"}, "CONFIG_INVALID: WAN_STEP: not a setting of workflow"),
        ({**MINIO, "CHUNK_WINDOWS": "x"}, "CHUNK_WINDOWS"),
        ({**MINIO, "WAN_DIFFUSION_MODEL": "wan2.2_animate_14B_bf16.safetensors"}, "MODEL_VARIANT alone"),
    ],
)
def test_a_problem_is_one_line_on_stderr_and_exit_2(env: dict[str, str], says: str) -> None:
    run = preflight(**env)
    assert run.returncode == 2
    assert run.stdout == ""
    assert says in run.stderr.strip().splitlines()[-1]
