"""wan_worker_nodes: this repository's own ComfyUI graph nodes, each built on the pinned node
it corrects or guards (never a copy of it). ComfyUI imports this folder from custom_nodes/.

| class | module | what |
|---|---|---|
| ``WanAnimateToVideoOfficialMask`` | animate.py | core WanAnimateToVideo, official mask layout |
| ``StrictLoraLoaderModelOnly`` | lora.py | core LoraLoaderModelOnly; every LoRA key must patch the model |

Their ``/object_info`` entries, for the worker's graph checks, are declared in catalogue.json
beside this file and merged into workflows/object_info_pinned.json by
``python -m worker.graph_check --extract-catalogue``.
"""

from __future__ import annotations

from typing import Any

from .animate import NODE_ID as ANIMATE_NODE_ID
from .animate import WanAnimateToVideoOfficialMask
from .lora import DISPLAY_NAME as LORA_DISPLAY_NAME
from .lora import NODE_ID as LORA_NODE_ID
from .lora import StrictLoraLoaderModelOnly

NODE_CLASS_MAPPINGS: dict[str, Any] = {
    ANIMATE_NODE_ID: WanAnimateToVideoOfficialMask,
    LORA_NODE_ID: StrictLoraLoaderModelOnly,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    ANIMATE_NODE_ID: "WanAnimateToVideo (official mask layout)",
    LORA_NODE_ID: LORA_DISPLAY_NAME,
}
