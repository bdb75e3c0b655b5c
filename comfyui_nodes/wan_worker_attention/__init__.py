"""wan_worker_attention: this repository's ComfyUI custom node for the attention backend.

ComfyUI imports custom nodes once at start, after its own modules. At that import this package
reads ``ATTENTION_BACKEND`` (auto | flash | cudnn | sage | fa4 | fa3; see selection.py), ranks what
was measured on this GPU model (step_times.json, step_table.py), probes each candidate on the
workflow's attention shape against math attention (accuracy.py) until one passes, puts the SDPA order
into ``comfy.ops.SDPA_BACKEND_PRIORITY`` (ComfyUI's wrapper applies that list around every attention
call, so an outer ``sdpa_kernel`` context is overridden), puts a kernel backend in front of SDPA
(kernels.py) and serves what is in use at ``GET /wan_worker/attention``:

    {"requested": "auto", "backend": "cudnn", "reason": "...", "fallback": false,
     "sdpa_order": ["cudnn", "flash", "efficient", "math"], "comfy_attention": "attention_pytorch",
     "device": "NVIDIA H100 80GB HBM3 (sm_90)", "probes": [{"backend": "cudnn", "ok": true, ...}]}

Every probe that fails is logged as a warning and listed in ``probes`` and ``reason``.

Nothing here may stop ComfyUI: any failure is logged and reported with backend "comfy-default".
It adds no graph node (NODE_CLASS_MAPPINGS is empty).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .selection import COMFY_DEFAULT, choose
from .step_table import TableError, find, load

ENV_VAR = "ATTENTION_BACKEND"
ROUTE = "/wan_worker/attention"
LOG_PREFIX = "wan_worker_attention:"

NODE_CLASS_MAPPINGS: dict[str, Any] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

STATE: dict[str, Any] = {}


def setup(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, Any]:
    """Chooses and applies the backend; returns (and keeps in STATE) what is in use."""
    from . import probe

    requested = environ.get(ENV_VAR)
    try:
        facts = probe.read_facts()
        ranking, measured = measured_ranking(facts.device_name)
        choice = choose(requested, facts, ranking, probe.make_prober() if facts.cuda else None)
        probe.apply(choice)
        state = choice.as_dict()
        state["sdpa_order"] = probe.current_order()
        state["comfy_attention"] = "attention_pytorch" if choice.unbind_sage else facts.comfy_attention
        state["device"] = _device_text(facts.cuda, facts.capability)
        state["measured"] = measured
    except Exception as exc:
        state = {
            "requested": requested or "auto",
            "backend": COMFY_DEFAULT,
            "reason": f"could not be set ({type(exc).__name__}: {exc}); ComfyUI's default is in use",
            "fallback": True,
            "sdpa_order": None,
        }
    level = logging.WARNING if state["fallback"] else logging.INFO
    logging.log(
        level,
        "%s %s=%s -> %s (%s)",
        LOG_PREFIX,
        ENV_VAR,
        state["requested"],
        state["backend"],
        state["reason"],
    )
    STATE.clear()
    STATE.update(state)
    return state


def measured_ranking(device_name: str | None) -> tuple[list[tuple[str, float]], str]:
    """This GPU model's measured backends, fastest first, and a line saying where that came from."""
    try:
        row = find(load(), device_name)
    except TableError as exc:
        return [], f"no table: {exc}"
    if row is None or not row.ranking():
        return [], f"{device_name or 'this device'}: not measured"
    times = ", ".join(f"{backend} {seconds:.2f}" for backend, seconds in row.ranking())
    return row.ranking(), f"{row.device}, {row.measured}: s/step {times}"


def _device_text(cuda: bool, capability: tuple[int, int] | None) -> str:
    if not cuda:
        return "cpu"
    try:
        import torch

        name = torch.cuda.get_device_name()
    except Exception:
        name = "cuda"
    return f"{name} (sm_{capability[0]}{capability[1]})" if capability else name


def register_route() -> bool:
    """Adds GET /wan_worker/attention to ComfyUI's server; False when there is no server (a bench)."""
    try:
        from aiohttp import web
        from server import PromptServer
    except Exception:
        return False
    instance = getattr(PromptServer, "instance", None)
    if instance is None:
        return False

    @instance.routes.get(ROUTE)
    async def attention_in_use(request: Any) -> Any:
        return web.json_response(dict(STATE))

    return True


setup()
register_route()
