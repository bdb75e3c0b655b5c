"""Which attention backend to use: a function of what was asked for, what the machine offers, what was
measured, and what the probe found. No ComfyUI or torch import here, so the rules are tested without
either: ``probe.py`` reads the facts and runs the probes; ``__init__.py`` applies the choice.

Backends (the values of ``ATTENTION_BACKEND``):

* ``flash``: PyTorch SDPA with its flash kernel first. This is ComfyUI 0.33.0's own order
  (``comfy.ops.SDPA_BACKEND_PRIORITY`` = flash, cuDNN, efficient, math).
* ``cudnn``: PyTorch SDPA with cuDNN's fused attention first (cuDNN, flash, efficient, math).
* ``fa4``, ``fa3``: a kernel package (flash-attn-4's CuTe DSL FlashAttention, fa3-fwd's prebuilt
  FlashAttention-3 forward) called in place of SDPA for every call it can take (kernels.py); the
  other calls keep SDPA, in the order auto would set.
* ``sage``: SageAttention, through ComfyUI's own ``--use-sage-attention`` path. ComfyUI binds its
  attention function when its model modules are imported, before any custom node, so only the
  start-up flag can switch it on; the entrypoint passes the flag when ``ATTENTION_BACKEND=sage`` and
  the package imports. Attention calls that ComfyUI keeps off sage (Wan's image cross-attention)
  still go through SDPA, so the SDPA order of ``auto`` is set as well.
* ``auto`` (default): the measured backends of this GPU model, fastest first (``step_times.json``);
  for a model nobody measured, the order measured fastest on its generation (``MEASURED_FASTEST``);
  ComfyUI's order everywhere else.

Every backend is probed before it is used (``Probe``: it loads, takes the workflow's attention shape
and agrees with math attention). One that fails is skipped, with its reason, for the next: the one
asked for, then auto's, then ComfyUI's own order. A choice that cannot be honoured never stops the
worker: it falls back and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

REQUESTS = ("auto", "flash", "cudnn", "sage", "fa4", "fa3")
DEFAULT_REQUEST = "auto"
KERNEL_BACKENDS = ("fa4", "fa3")

SDPA_ORDER = {
    "flash": ("flash", "cudnn", "efficient", "math"),
    "cudnn": ("cudnn", "flash", "efficient", "math"),
}

# The SDPA order measured fastest per CUDA compute capability major version, for GPU models that
# step_times.json has no measurement of (the "current order" before that table existed). From the
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
    device_name: str | None = None  # torch.cuda.get_device_name(), the key of the measured table

    @property
    def sage_importable(self) -> bool:
        return self.sage_error is None

    @property
    def sm(self) -> str:
        return f"sm_{self.capability[0]}{self.capability[1]}" if self.capability else "this GPU"


@dataclass(frozen=True)
class Probe:
    """One run of a backend on the workflow's attention shape, compared with math attention."""

    backend: str
    ok: bool
    stage: str  # passed | load (cannot load) | shape (cannot take the shape) | numerics (disagrees)
    detail: str
    max_abs_err: float | None = None
    min_cosine: float | None = None
    first_call_s: float | None = None  # the first call: JIT compilation and lazy set-up included
    call_s: float | None = None  # the second call

    def summary(self) -> str:
        numbers = ""
        if self.max_abs_err is not None and self.min_cosine is not None:
            numbers = f"max abs err {self.max_abs_err:.4f}, min cosine {self.min_cosine:.6f}"
        what = {
            "passed": "probe passed",
            "load": "cannot load",
            "shape": "cannot take the shape",
            "numerics": "disagrees with math attention",
        }.get(self.stage, self.stage)
        parts = [p for p in (self.detail, numbers) if p]
        return f"{what} ({'; '.join(parts)})" if parts else what

    def as_dict(self) -> dict[str, object]:
        return {
            "backend": self.backend,
            "ok": self.ok,
            "stage": self.stage,
            "detail": self.detail,
            "max_abs_err": self.max_abs_err,
            "min_cosine": self.min_cosine,
            "first_call_s": self.first_call_s,
            "call_s": self.call_s,
        }


# A function that probes one backend by name; None: the rules alone (nothing is run).
Prober = Callable[[str], Probe]
# The measured backends of this GPU model, fastest first: [(backend, seconds per step)].
Ranking = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Choice:
    requested: str
    backend: str  # flash | cudnn | fa4 | fa3 | sage | comfy-default | the name of another ComfyUI attention
    sdpa_order: tuple[str, ...] | None  # what to put in comfy.ops.SDPA_BACKEND_PRIORITY; None: leave it
    reason: str
    fallback: bool  # the request could not be honoured as asked, or a probe failed (logged as a warning)
    kernel: str | None = None  # fa4 | fa3: put in front of SDPA (kernels.py)
    unbind_sage: bool = False  # ComfyUI runs sage but sage failed its probe: back to PyTorch attention
    probes: tuple[Probe, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "requested": self.requested,
            "backend": self.backend,
            "reason": self.reason,
            "fallback": self.fallback,
            "sdpa_order": list(self.sdpa_order) if self.sdpa_order else None,
            "probes": [probe.as_dict() for probe in self.probes],
        }


def normalise_request(raw: str | None) -> tuple[str, str | None]:
    """The request as one of REQUESTS, and a complaint when the raw value was not one."""
    value = (raw or "").strip().lower()
    if not value:
        return DEFAULT_REQUEST, None
    if value in REQUESTS:
        return value, None
    return DEFAULT_REQUEST, f"ATTENTION_BACKEND={raw!r} is not one of {', '.join(REQUESTS)}; using auto"


def choose(
    raw_request: str | None,
    facts: Facts,
    ranking: Ranking = (),
    probe: Prober | None = None,
) -> Choice:
    """``ranking``: this GPU model's measured backends, fastest first (step_table.py)."""
    requested, complaint = normalise_request(raw_request)
    choice = _choose(requested, facts, ranking, probe)
    if complaint:
        return replace(
            choice, requested=raw_request or "", reason=f"{complaint}: {choice.reason}", fallback=True
        )
    return choice


def _choose(requested: str, facts: Facts, ranking: Ranking, probe: Prober | None) -> Choice:
    sage_active = facts.comfy_attention == SAGE_ATTENTION_FUNCTION
    if not sage_active and facts.comfy_attention != SDPA_ATTENTION_FUNCTION:
        why = f"ComfyUI's attention is {facts.comfy_attention}, not PyTorch SDPA: no SDPA order applies"
        return Choice(requested, facts.comfy_attention, None, why, requested != "auto")
    notes: list[str] = []  # why each candidate before the chosen one was passed over
    asked_failed = False  # the backend asked for was not used
    if requested == "sage" and not sage_active:
        if not facts.sage_importable:
            notes.append(f"sageattention does not import ({facts.sage_error})")
        else:
            notes.append("ComfyUI was started without --use-sage-attention (the entrypoint adds it for sage)")
        notes[-1] += "; falling back to auto"
        asked_failed = True
    if not facts.cuda:
        if sage_active:  # nothing to probe or order without CUDA; ComfyUI's sage is what runs
            return Choice(requested, "sage", None, "ComfyUI runs sage (no CUDA device)", requested != "sage")
        return Choice(requested, COMFY_DEFAULT, None, _join(notes, "no CUDA device"), requested != "auto")

    probes: list[Probe] = []
    unbind_sage = False
    for backend, why in _candidates(requested, facts, ranking, sage_active):
        if backend == "sage" and unbind_sage:
            continue
        problem = _unusable(backend, facts, sage_active and not unbind_sage)
        if problem is None and probe is not None:
            result = probe(backend)
            probes.append(result)
            if not result.ok:
                problem = result.summary()
                if backend == "sage":
                    unbind_sage = True
        if problem is not None:
            notes.append(f"{backend}: {problem}")
            asked_failed = asked_failed or backend == requested
            continue
        passed = f", {probes[-1].summary()}" if probes and probes[-1].backend == backend else ""
        kernel = backend if backend in KERNEL_BACKENDS else None
        order = SDPA_ORDER.get(backend) or _secondary_sdpa_order(facts, ranking)
        fallback = (asked_failed or (requested not in ("auto", backend))) or any(not p.ok for p in probes)
        if backend == "sage" and requested != "sage":
            fallback = True
        return Choice(
            requested,
            backend,
            order,
            _join(notes, f"{why}{passed}"),
            fallback,
            kernel,
            unbind_sage,
            tuple(probes),
        )
    return _comfy_order(requested, facts, notes, probes, unbind_sage)


def _candidates(requested: str, facts: Facts, ranking: Ranking, sage_active: bool) -> list[tuple[str, str]]:
    """The backends to try, in order, each with why it is tried."""
    chain: list[tuple[str, str]] = []
    if sage_active:
        why = (
            "sageattention imports and ComfyUI uses it"
            if requested == "sage"
            else f"ComfyUI was started with --use-sage-attention, which overrides {requested}"
        )
        chain.append(("sage", why))
    if requested not in ("auto", "sage"):
        chain.append((requested, f"{requested} first, as asked" if requested in SDPA_ORDER else "as asked"))
    device = facts.device_name or facts.sm
    for backend, seconds in ranking:
        chain.append((backend, f"{backend}: fastest measured on {device} ({seconds:.2f} s/step)"))
    generation = MEASURED_FASTEST.get(facts.capability[0]) if facts.capability else None
    if generation is not None:
        why = f"{generation} first measured fastest on {facts.sm}"
        if not ranking:
            why = f"no measurement for {device}; {why}"
        chain.append((generation, why))
    seen: set[str] = set()
    unique = []
    for backend, why in chain:
        if backend not in seen:
            seen.add(backend)
            unique.append((backend, why))
    return unique


def _unusable(backend: str, facts: Facts, sage_active: bool) -> str | None:
    """Why this backend cannot be used in this ComfyUI, before any probe; None if it can."""
    if backend == "sage":
        return None if sage_active else "ComfyUI was not started with --use-sage-attention"
    if backend in KERNEL_BACKENDS:
        return None  # it calls its own kernel; loading it is the probe's first step
    if not facts.sdpa_priority_settable:
        return "this PyTorch cannot set an SDPA priority (comfy.ops.SDPA_BACKEND_PRIORITY is absent)"
    if backend not in facts.sdpa_backends:
        return f"PyTorch does not offer the {backend} SDPA kernel on {facts.sm}"
    return None


def _secondary_sdpa_order(facts: Facts, ranking: Ranking) -> tuple[str, ...] | None:
    """The SDPA order for the calls a kernel or sage does not take: the fastest measured SDPA backend
    PyTorch offers here, else the generation's; None (ComfyUI's order) when neither applies."""
    if not facts.sdpa_priority_settable:
        return None
    generation = MEASURED_FASTEST.get(facts.capability[0]) if facts.capability else None
    for backend in [b for b, _ in ranking] + [generation]:
        if backend in SDPA_ORDER and backend in facts.sdpa_backends:
            return SDPA_ORDER[backend]
    return None


def _comfy_order(
    requested: str, facts: Facts, notes: list[str], probes: list[Probe], unbind_sage: bool
) -> Choice:
    """ComfyUI's own SDPA order, left as it is: flash first where PyTorch offers flash."""
    if not facts.sdpa_priority_settable:
        why = "this PyTorch cannot set an SDPA priority (comfy.ops.SDPA_BACKEND_PRIORITY is absent)"
        backend = COMFY_DEFAULT
    else:
        why = "ComfyUI's order (flash first) kept"
        backend = "flash" if "flash" in facts.sdpa_backends else COMFY_DEFAULT
        if not notes and requested == "auto":
            why = f"no measurement for {facts.device_name or facts.sm}: {why}"
    fallback = requested != "auto" or any(not p.ok for p in probes)
    return Choice(requested, backend, None, _join(notes, why), fallback, None, unbind_sage, tuple(probes))


def _join(notes: list[str], last: str) -> str:
    return "; ".join([*notes, last])
