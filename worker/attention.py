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
    try:
        response = requests.get(comfy_url.rstrip("/") + ROUTE, timeout=timeout_s)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or not all(isinstance(body.get(name), str) for name in FIELDS):
        return None
    return body
