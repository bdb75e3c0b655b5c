"""``StrictLoraLoaderModelOnly``: ComfyUI's core ``LoraLoaderModelOnly`` that refuses a LoRA whose
keys do not all patch the model.

The core node applies whatever part of a LoRA its key map understands and only logs the rest
("lora key not loaded: ..."); a LoRA in a layout it does not know is dropped without an error.
This node runs the core node unchanged (same inputs, same patched model, same cached file), then
asks ComfyUI's own mapping which of the file's keys it used: ``comfy.lora.model_lora_keys_unet``
for the model, ``comfy.lora_convert.convert_lora`` and ``comfy.lora.load_lora`` for the file, as
``comfy.sd.load_lora_for_models`` does. Any key left over raises ``LoraKeysNotMatchedError`` naming
the file and "N of M keys matched" (lora_keys.py). A strength of 0 loads nothing (as in the core
node) and checks nothing.
"""

from __future__ import annotations

from typing import Any

import comfy.lora
import comfy.lora_convert
import nodes

from .lora_keys import KeyReadRecorder, LoraKeyReport, lora_key_report, require_all_keys

NODE_ID = "StrictLoraLoaderModelOnly"
DISPLAY_NAME = "LoraLoaderModelOnly (every key must match)"


class StrictLoraLoaderModelOnly(nodes.LoraLoaderModelOnly):
    DESCRIPTION = (
        "Core LoraLoaderModelOnly that fails when any key of the LoRA file does not patch the model, "
        "instead of logging 'lora key not loaded' and going on."
    )

    def load_lora_model_only(self, model: Any, lora_name: str, strength_model: float) -> tuple[Any]:
        (patched,) = super().load_lora_model_only(model, lora_name, strength_model)
        if strength_model != 0:
            require_all_keys(self.key_report(model, lora_name))
        return (patched,)

    def key_report(self, model: Any, lora_name: str) -> LoraKeyReport:
        """Which keys of the file the core loader just read (its cache) ComfyUI maps onto ``model``."""
        if self.loaded_lora is None:
            raise RuntimeError(f"LoRA '{lora_name}' was not loaded by the core loader")
        tensors = comfy.lora_convert.convert_lora(self.loaded_lora[1])
        key_map = comfy.lora.model_lora_keys_unet(model.model, {})
        recorder = KeyReadRecorder(dict(tensors))
        comfy.lora.load_lora(recorder, key_map, log_missing=False)
        return lora_key_report(lora_name, recorder.keys(), recorder.read)
