"""wan_worker_attention: this repository's ComfyUI custom node for the attention backend.

ComfyUI imports custom nodes once at start, after its own modules. At that import this package
reads ``ATTENTION_BACKEND`` (auto | flash | cudnn | sage; see selection.py), chooses what this GPU
and PyTorch allow, puts the SDPA order into ``comfy.ops.SDPA_BACKEND_PRIORITY`` (ComfyUI's wrapper
applies that list around every attention call, so an outer ``sdpa_kernel`` context is overridden)
and serves what is in use at ``GET /wan_worker/attention``:

    {"requested": "auto", "backend": "cudnn", "reason": "...", "fallback": false,
     "sdpa_order": ["cudnn", "flash", "efficient", "math"], "comfy_attention": "attention_pytorch",
     "device": "NVIDIA H100 80GB HBM3 (sm_90)"}

Nothing here may stop ComfyUI: any failure is logged and reported with backend "comfy-default".
It adds no graph node (NODE_CLASS_MAPPINGS is empty).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from .selection import COMFY_DEFAULT, choose

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
        choice = choose(requested, facts)
        probe.apply(choice)
        state = choice.as_dict()
        state["sdpa_order"] = probe.current_order()
        state["comfy_attention"] = facts.comfy_attention
        state["device"] = _device_text(facts.cuda, facts.capability)
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
