"""The price table of worker/cost.py: GPUs as ComfyUI names them, overrides, unknown GPUs, and the
README's copy of the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.config import Settings
from worker.cost import PRICE_TABLE, pricing_for
from worker.errors import WorkerError

README = Path(__file__).resolve().parent.parent / "README.md"
REQUIRED = {"MINIO_ENDPOINT": "127.0.0.1:9000", "MINIO_ACCESS_KEY": "ak", "MINIO_SECRET_KEY": "sk"}
REQUIRED |= {"MINIO_BUCKET": "media", "WORKFLOW": "workflows/model_free_still.json"}


@pytest.mark.parametrize(
    ("device", "pool", "usd_per_s"),
    [
        # ComfyUI's form: "{torch device} {torch.cuda.get_device_name()} : {allocator}"
        ("cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", "H100 PRO", 0.00116),
        ("cuda:0 NVIDIA H100 NVL : cudaMallocAsync", "H100 PRO", 0.00116),
        ("cuda:0 NVIDIA H200 : cudaMallocAsync", "H200 PRO", 0.00155),
        ("cuda:0 NVIDIA A100-SXM4-80GB : native", "A100", 0.00076),
        ("cuda:0 NVIDIA L40S : cudaMallocAsync", "L40, L40S, 6000 Ada", 0.00053),
        ("cuda:0 NVIDIA L40 : cudaMallocAsync", "L40, L40S, 6000 Ada", 0.00053),
        ("cuda:0 NVIDIA RTX 6000 Ada Generation : cudaMallocAsync", "L40, L40S, 6000 Ada", 0.00053),
        ("cuda:0 NVIDIA RTX A6000 : cudaMallocAsync", "A6000, A40", 0.00034),
        ("cuda:0 NVIDIA A40 : cudaMallocAsync", "A6000, A40", 0.00034),
    ],
)
def test_gpus_of_the_price_table_by_comfyui_device_name(device: str, pool: str, usd_per_s: float) -> None:
    pricing = pricing_for(device)
    assert (pricing.pool, pricing.usd_per_s, pricing.reason) == (pool, usd_per_s, None)
    cost = pricing.job_cost(100.0)
    assert cost["gpu_s"] == 100.0 and cost["usd"] == round(100 * usd_per_s, 6) and cost["device"] == device


@pytest.mark.parametrize(
    "device",
    [
        "cuda:0 NVIDIA RTX A4000 : cudaMallocAsync",  # not an A40
        "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync",
        "cuda:0 NVIDIA RTX PRO 6000 Blackwell Server Edition : cudaMallocAsync",  # not a 6000 Ada
        "cpu",
    ],
)
def test_a_gpu_without_a_price_has_no_cost_and_says_why(device: str) -> None:
    cost = pricing_for(device).job_cost(12.5)
    assert cost["gpu_s"] == 12.5
    assert cost["usd"] is None and cost["usd_per_s"] is None and cost["gpu"] is None
    assert repr(device) in cost["reason"] and "GPU_PRICES_PER_S" in cost["reason"]


def test_no_device_name_from_comfyui() -> None:
    cost = pricing_for(None).job_cost(3.0)
    assert cost["usd"] is None and "did not report its GPU" in cost["reason"]


def test_overrides_come_before_the_table_and_add_gpus() -> None:
    overrides = (("H100", 0.00093), ("RTX 4090", 0.00031))
    h100 = pricing_for("cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync", overrides)
    assert (h100.pool, h100.usd_per_s, h100.source) == ("H100", 0.00093, "GPU_PRICES_PER_S")
    rtx = pricing_for("cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync", overrides)
    assert (rtx.pool, rtx.usd_per_s) == ("RTX 4090", 0.00031)
    a100 = pricing_for("cuda:0 NVIDIA A100 80GB PCIe : cudaMallocAsync", overrides)
    assert (a100.pool, a100.usd_per_s) == ("A100", 0.00076) and "RunPod" in str(a100.source)


def test_gpu_prices_setting() -> None:
    settings = Settings.from_env({**REQUIRED, "GPU_PRICES_PER_S": " H100=0.00093 ,RTX 4090=0.00031"})
    assert settings.gpu_prices_per_s == (("H100", 0.00093), ("RTX 4090", 0.00031))
    assert Settings.from_env(REQUIRED).gpu_prices_per_s == ()
    for bad in ("H100", "=0.001", "H100=cheap", "H100=-0.001", "H100=2", "H100=nan"):
        with pytest.raises(WorkerError) as caught:
            Settings.from_env({**REQUIRED, "GPU_PRICES_PER_S": bad})
        assert "GPU_PRICES_PER_S" in caught.value.message, bad


def test_the_readme_shows_the_price_table() -> None:
    text = README.read_text()
    rows = dict(re.findall(r"^\| (.+?) \| \$(0\.\d+) \|", text, re.MULTILINE))
    assert {price.pool: price.usd_per_s for price in PRICE_TABLE} == {
        pool: float(usd) for pool, usd in rows.items()
    }
