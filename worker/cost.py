"""What a job costs on RunPod: the seconds billed for it and their price on this worker's GPU.

*Billed seconds* (``gpu_s``) are the job's wall time on the worker, from the moment the handler
takes it to its result (``timings_s.total``): RunPod bills a serverless worker per second while
it runs, GPU idle or not (download, conform, encode and upload included), so this is the honest
per-job figure; ``/status``'s ``executionTime`` measures the same span from the platform's side.
Not in any one job: the worker's cold start (container, ComfyUI boot, model install) and the
idle timeout after its last job, which RunPod bills too.

Prices: RunPod serverless *flex* workers, US dollars per second, as RunPod's serverless pricing
page listed them in 2026-12 (quoted in issue 13; ``PRICES_AS_OF``); *active* workers cost less.
A GPU is recognised by the name ComfyUI reports (``GET /system_stats`` ``devices[0].name``, e.g.
``cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync``). ``GPU_PRICES_PER_S`` (README
"Configuration") adds or replaces entries: ``NAME=USD_PER_S`` pairs, looked up before the table.
A GPU in neither has no cost (``usd: null`` with the reason): never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PRICES_AS_OF = "2026-12"


@dataclass(frozen=True)
class GpuPrice:
    pool: str  # RunPod's name for the GPU pool the price is for
    usd_per_s: float
    names: tuple[str, ...]  # model names as they appear in the device name (whole words)


PRICE_TABLE: tuple[GpuPrice, ...] = (
    GpuPrice("H200 PRO", 0.00155, ("H200",)),
    GpuPrice("H100 PRO", 0.00116, ("H100",)),
    GpuPrice("A100", 0.00076, ("A100",)),
    GpuPrice("L40, L40S, 6000 Ada", 0.00053, ("L40", "L40S", "6000 Ada")),
    GpuPrice("A6000, A40", 0.00034, ("A6000", "A40")),
)


def _names_in(device: str, name: str) -> bool:
    """``name`` as whole words of ``device``: "A40" is in "NVIDIA A40", not in "RTX A4000"."""
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Pricing:
    """This worker's GPU and its price per second (None when unknown, with the reason)."""

    device: str | None
    pool: str | None
    usd_per_s: float | None
    source: str | None
    reason: str | None

    def job_cost(self, billed_s: float) -> dict[str, Any]:
        usd = None if self.usd_per_s is None else round(billed_s * self.usd_per_s, 6)
        return {
            "gpu_s": round(billed_s, 3),
            "usd": usd,
            "usd_per_s": self.usd_per_s,
            "gpu": self.pool,
            "device": self.device,
            "price_source": self.source,
            "reason": self.reason,
        }


def pricing_for(device: str | None, overrides: tuple[tuple[str, float], ...] = ()) -> Pricing:
    """The price of ``device`` (ComfyUI's device name): ``overrides`` first, then the table."""
    if not device:
        return Pricing(None, None, None, None, "ComfyUI did not report its GPU (GET /system_stats)")
    for name, usd_per_s in overrides:
        if _names_in(device, name):
            return Pricing(device, name, usd_per_s, "GPU_PRICES_PER_S", None)
    for price in PRICE_TABLE:
        if any(_names_in(device, name) for name in price.names):
            return Pricing(
                device, price.pool, price.usd_per_s, f"RunPod serverless flex, {PRICES_AS_OF}", None
            )
    return Pricing(
        device,
        None,
        None,
        None,
        f"no price for the GPU {device!r} in worker/cost.py's table or GPU_PRICES_PER_S",
    )
