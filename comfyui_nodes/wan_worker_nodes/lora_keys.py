"""Which keys of a LoRA file patch the model: pure logic, no torch and no ComfyUI, so CI tests it.

ComfyUI 0.33.0's ``load_lora`` looks the file up through the model's key map
(``comfy.lora.model_lora_keys_unet``): a file key it does not use is only logged
("lora key not loaded: ...") and the LoRA is applied without it, or not at all. lora.py counts
the file keys ComfyUI actually read while building the patches and hands them to
``lora_key_report``; ``require_all_keys`` turns any key left over into ``LoraKeysNotMatchedError``.

The rule is *every* key: a LoRA applied in part changes the video as silently as one not applied
at all, and the layouts that do not fit (the bare ``blocks.N...`` and PEFT ``base_model.model.``
names of the original Wan2.2 Animate relight LoRA, the ``blocks.N.diff_m`` modulation deltas of
early lightx2v extractions) are refused by it as much as by "none matched".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ERROR_NAME = "LoraKeysNotMatchedError"
EXAMPLES = 5


class LoraKeysNotMatchedError(RuntimeError):
    """A LoRA file whose keys do not all patch the model (a deployment problem, never retried)."""


@dataclass(frozen=True)
class LoraKeyReport:
    lora_name: str
    total: int
    unmatched: tuple[str, ...]  # sorted

    @property
    def matched(self) -> int:
        return self.total - len(self.unmatched)

    @property
    def ok(self) -> bool:
        return self.total > 0 and not self.unmatched

    def message(self) -> str:
        """First line: "LoRA '<file>': N of M keys matched the model" (worker/comfy_client.py reads it)."""
        head = f"LoRA '{self.lora_name}': {self.matched} of {self.total} keys matched the model"
        if self.total == 0:
            return f"{head}; the file holds no tensors."
        shown = ", ".join(self.unmatched[:EXAMPLES])
        more = f" (+{len(self.unmatched) - EXAMPLES} more)" if len(self.unmatched) > EXAMPLES else ""
        return (
            f"{head}; ComfyUI would silently ignore the rest.\n"
            f"Unmatched keys: {shown}{more}.\n"
            "ComfyUI's key names for this model are 'diffusion_model.<module>.lora_up.weight' / "
            "'.lora_down.weight' / '.alpha' (or 'lora_unet_<module>'): install the LoRA file the model "
            "manifest pins (models/manifest.json) or one converted for ComfyUI."
        )


def lora_key_report(lora_name: str, file_keys: Iterable[str], loaded_keys: Iterable[str]) -> LoraKeyReport:
    """``file_keys``: every tensor name of the LoRA (as ComfyUI's converter left them);
    ``loaded_keys``: those ComfyUI's ``load_lora`` read into a patch for this model."""
    keys = set(file_keys)
    unmatched = tuple(sorted(keys - set(loaded_keys)))
    return LoraKeyReport(lora_name=lora_name, total=len(keys), unmatched=unmatched)


def require_all_keys(report: LoraKeyReport) -> None:
    if not report.ok:
        raise LoraKeysNotMatchedError(report.message())


class KeyReadRecorder(dict[str, Any]):
    """The LoRA's tensors, remembering which keys were read (``[key]``, or ``get`` of a present key).

    ComfyUI's ``load_lora`` and its weight adapters read exactly the keys they turn into patches
    (and add to their ``loaded_keys``), so what was read is what ComfyUI loaded."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        super().__init__(tensors)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        self.read.add(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            self.read.add(key)
        return super().get(key, default)
