"""Which attention backend to use: a pure function of what was asked for and what the machine offers.

No ComfyUI or torch import here, so the rules are tested without either. ``probe.py`` reads the
facts from the running ComfyUI; ``__init__.py`` applies the choice.

Backends (the values of ``ATTENTION_BACKEND``):

* ``flash``: PyTorch SDPA with its flash kernel first. This is ComfyUI 0.33.0's own order
  (``comfy.ops.SDPA_BACKEND_PRIORITY`` = flash, cuDNN, efficient, math).
* ``cudnn``: PyTorch SDPA with cuDNN's fused attention first (cuDNN, flash, efficient, math).
* ``sage``: SageAttention, through ComfyUI's own ``--use-sage-attention`` path. ComfyUI binds its
  attention function when its model modules are imported, before any custom node, so only the
  start-up flag can switch it; the entrypoint passes the flag when ``ATTENTION_BACKEND=sage`` and
  the package imports. Attention calls that ComfyUI keeps off sage (Wan's image cross-attention)
  still go through SDPA, so the SDPA order of ``auto`` is set as well.
* ``auto`` (default): what measured fastest on this GPU generation (``MEASURED_FASTEST``);
  ComfyUI's default everywhere else.

A choice that cannot be honoured never stops the worker: it falls back and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

REQUESTS = ("auto", "flash", "cudnn", "sage")
DEFAULT_REQUEST = "auto"

SDPA_ORDER = {
    "flash": ("flash", "cudnn", "efficient", "math"),
    "cudnn": ("cudnn", "flash", "efficient", "math"),
}

# Fastest SDPA order per CUDA compute capability major version, from measurements of the
# Wan2.2 Animate 14B window (1280x720x77, 75,600 tokens, 40 heads of 128) through ComfyUI:
#  9 (Hopper, H100): cuDNN first 12.0 s/step vs flash first 17.0 s/step (shared/GPU_TIMING.md;
#    bench/README.md repeats it through the pinned workflow).
# Generations not listed keep ComfyUI's order: nobody here has measured them.
MEASURED_FASTEST = {9: "cudnn"}

COMFY_DEFAULT = "comfy-default"
SAGE_ATTENTION_FUNCTION = "attention_sage"
SDPA_ATTENTION_FUNCTION = "attention_pytorch"


@dataclass(frozen=True)
class Facts:
    """What the running ComfyUI and PyTorch offer (see probe.py)."""

    cuda: bool  # a CUDA device is ComfyUI's torch device
    capability: tuple[int, int] | None  # CUDA compute capability, e.g. (9, 0) on an H100
    sdpa_priority_settable: bool  # comfy.ops.SDPA_BACKEND_PRIORITY exists (torch with set_priority)
    sdpa_backends: frozenset[str]  # SDPA kernels PyTorch has enabled: flash, cudnn, efficient, math
    comfy_attention: str  # name of ComfyUI's optimized_attention, e.g. attention_pytorch
    sage_error: str | None  # None when `import sageattention` works, else why not

    @property
    def sage_importable(self) -> bool:
        return self.sage_error is None


@dataclass(frozen=True)
class Choice:
    requested: str
    backend: str  # flash | cudnn | sage | comfy-default | the name of another ComfyUI attention
    sdpa_order: tuple[str, ...] | None  # what to put in comfy.ops.SDPA_BACKEND_PRIORITY; None: leave it
    reason: str
    fallback: bool  # the request could not be honoured as asked (logged as a warning)

    def as_dict(self) -> dict[str, object]:
        return {
            "requested": self.requested,
            "backend": self.backend,
            "reason": self.reason,
            "fallback": self.fallback,
            "sdpa_order": list(self.sdpa_order) if self.sdpa_order else None,
        }


def normalise_request(raw: str | None) -> tuple[str, str | None]:
    """The request as one of REQUESTS, and a complaint when the raw value was not one."""
    value = (raw or "").strip().lower()
    if not value:
        return DEFAULT_REQUEST, None
    if value in REQUESTS:
        return value, None
    return DEFAULT_REQUEST, f"ATTENTION_BACKEND={raw!r} is not one of {', '.join(REQUESTS)}; using auto"


def choose(raw_request: str | None, facts: Facts) -> Choice:
    requested, complaint = normalise_request(raw_request)
    choice = _choose(requested, facts)
    if complaint:
        return Choice(
            raw_request or "", choice.backend, choice.sdpa_order, f"{complaint}: {choice.reason}", True
        )
    return choice


def _choose(requested: str, facts: Facts) -> Choice:
    if facts.comfy_attention == SAGE_ATTENTION_FUNCTION:
        # ComfyUI was started with --use-sage-attention: sage is in use whatever was asked. The calls it
        # keeps off sage go through SDPA, in auto's order.
        auto = _sdpa_choice("auto", replace(facts, comfy_attention=SDPA_ATTENTION_FUNCTION))
        if requested == "sage":
            return Choice(
                requested, "sage", auto.sdpa_order, "sageattention imports and ComfyUI uses it", False
            )
        return Choice(
            requested,
            "sage",
            auto.sdpa_order,
            f"ComfyUI was started with --use-sage-attention, which overrides {requested}",
            True,
        )
    if requested != "sage":
        return _sdpa_choice(requested, facts)
    if not facts.sage_importable:
        why = f"sageattention does not import ({facts.sage_error})"
    else:
        why = "ComfyUI was started without --use-sage-attention (the entrypoint adds it for sage)"
    auto = _sdpa_choice("auto", facts)
    return Choice(
        requested, auto.backend, auto.sdpa_order, f"{why}; falling back to auto: {auto.reason}", True
    )


def _sdpa_choice(requested: str, facts: Facts) -> Choice:
    if facts.comfy_attention != SDPA_ATTENTION_FUNCTION:
        why = f"ComfyUI's attention is {facts.comfy_attention}, not PyTorch SDPA: no SDPA order applies"
        return Choice(requested, facts.comfy_attention, None, why, requested != "auto")
    if not facts.cuda:
        return Choice(requested, COMFY_DEFAULT, None, "no CUDA device", requested != "auto")
    if not facts.sdpa_priority_settable:
        why = "this PyTorch cannot set an SDPA priority (comfy.ops.SDPA_BACKEND_PRIORITY is absent)"
        return Choice(requested, COMFY_DEFAULT, None, why, requested != "auto")
    sm = f"sm_{facts.capability[0]}{facts.capability[1]}" if facts.capability else "this GPU"
    if requested == "auto":
        wanted = MEASURED_FASTEST.get(facts.capability[0]) if facts.capability else None
        if wanted is None:
            return _comfy_order(requested, facts, f"no measurement for {sm}", fallback=False)
        if wanted not in facts.sdpa_backends:
            why = f"{wanted} measured fastest on {sm} but PyTorch does not offer it here"
            return _comfy_order(requested, facts, why, fallback=False)
        return Choice(
            requested, wanted, SDPA_ORDER[wanted], f"{wanted} first measured fastest on {sm}", False
        )
    if requested not in facts.sdpa_backends:
        why = f"PyTorch does not offer the {requested} SDPA kernel on {sm}"
        return _comfy_order(requested, facts, why, fallback=True)
    return Choice(requested, requested, SDPA_ORDER[requested], f"{requested} first, as asked", False)


def _comfy_order(requested: str, facts: Facts, why: str, *, fallback: bool) -> Choice:
    """ComfyUI's own SDPA order, left as it is: flash first where PyTorch offers flash."""
    backend = "flash" if "flash" in facts.sdpa_backends else COMFY_DEFAULT
    return Choice(requested, backend, None, f"{why}: ComfyUI's order (flash first) kept", fallback)
