"""The attention backend ComfyUI runs with, as reported by this repository's custom node.

``comfyui_nodes/wan_worker_attention`` applies ``ATTENTION_BACKEND`` inside ComfyUI and serves
``GET /wan_worker/attention``. The worker reads it once ComfyUI is up and puts it in each result,
so every clip says which kernel produced it. A ComfyUI without the node (the fake one, an old
image) answers 404: that is "unknown" (None), never a job failure.
"""

from __future__ import annotations

from typing import Any

import requests

ROUTE = "/wan_worker/attention"
FIELDS = ("requested", "backend", "reason")


def backend_in_use(comfy_url: str, *, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """{"requested", "backend", "reason", ...} from ComfyUI, or None when it does not say."""
    body = node_report(comfy_url, ROUTE, timeout_s=timeout_s)
    if body is None or not all(isinstance(body.get(name), str) for name in FIELDS):
        return None
    return body


def node_report(comfy_url: str, route: str, *, timeout_s: float) -> dict[str, Any] | None:
    """The JSON object one of this repository's ComfyUI nodes serves at ``route``; None when
    ComfyUI does not answer it (no such node: a 404), or not with an object."""
    try:
        response = requests.get(comfy_url.rstrip("/") + route, timeout=timeout_s)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
