"""The probe's measurement: one backend on the workflow's attention shape against math attention.

The shape is the pinned workflow's self-attention: a 77-frame 1280x720 window is 21 latent frames
(20 + the reference) of 45 x 80 patches = 75,600 tokens, 40 heads of 128 (Wan 14B: dim 5120,
ComfyUI's ``num_heads = dim // 128``), fp16 (ComfyUI runs Wan in fp16).

The candidate runs at that full shape. Math attention over 75,600 tokens would materialise a
75,600 x 75,600 score matrix per head (914 GB in fp32 for 40 heads), so the reference is computed
for a sample of query rows only, against all keys, in float64 (no TF32 either): each row of
attention depends on its own query alone, so this is the exact reference for those rows. The sample
is the first and last 64 rows (the last are the partial 80-row block after 590 x 128) and 128
spread between. The inputs are N(0, 1), except that each sampled query has a partner key (rows
paired first-to-last) aligned with it at logit ~12, so ~57 % of its attention weight sits on one key
somewhere along the sequence: a kernel that loses keys (a tail block, the first block), mixes heads
or mis-scales the softmax changes those rows grossly.

Thresholds, emulated on the CPU at this length (bench/README.md, 'Attention kernels'): a correct
kernel differs from math attention by at most 0.002 (fp16 in and out, fp16 probabilities), 0.023
(inputs, probabilities and output rounded to bf16, as fa3-fwd's bf16-only build does) or 0.026
(int8 Q/K, as SageAttention 1); every one keeps a per-row cosine >= 0.99999. A softmax scale 5 %
off gives 0.55, a lost block of keys >= 3.4 (outputs are at most ~3.9). So a backend agrees when
its largest absolute error is <= 0.05 and its smallest per-row cosine similarity is >= 0.999. An
8-bit P.V (fp8 V: 0.19) does not pass: no backend here quantises P.V, and one that does needs a
quality check on real weights before it is let through.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .selection import Probe

MAX_ABS_ERR = 0.05
MIN_COSINE = 0.999
PLANTED_LOGIT = 12.0
EDGE_ROWS = 64
SPREAD_ROWS = 128

# attend(q, k, v, scale) -> out, all (batch, tokens, heads, head_dim) as ComfyUI's Wan passes them
Attend = Callable[[Any, Any, Any, "float | None"], Any]


def window_tokens(width: int, height: int, frames: int) -> int:
    """Tokens of one Wan Animate window: latent frames (frames - 1) / 4 + 1, plus the reference
    latent, of (height / 16) x (width / 16) patches (VAE stride 8, patch 2)."""
    return ((frames - 1) // 4 + 1 + 1) * (height // 16) * (width // 16)


@dataclass(frozen=True)
class Shape:
    batch: int
    tokens: int
    heads: int
    head_dim: int

    def text(self) -> str:
        return f"{self.batch} x {self.tokens:,} tokens x {self.heads} heads x {self.head_dim}"


WAN_WINDOW = Shape(batch=1, tokens=window_tokens(1280, 720, 77), heads=40, head_dim=128)


def judge(max_abs_err: float, min_cosine: float) -> str | None:
    """None when the backend agrees with math attention, else why not."""
    if not (math.isfinite(max_abs_err) and math.isfinite(min_cosine)):
        return "non-finite output"
    if max_abs_err > MAX_ABS_ERR or min_cosine < MIN_COSINE:
        return f"limits: max abs err <= {MAX_ABS_ERR}, min cosine >= {MIN_COSINE}"
    return None


def sample_rows(tokens: int) -> list[int]:
    edges = set(range(min(EDGE_ROWS, tokens))) | set(range(max(0, tokens - EDGE_ROWS), tokens))
    step = tokens / (SPREAD_ROWS + 1)
    spread = {int(step * (i + 1)) for i in range(SPREAD_ROWS)}
    return sorted(edges | spread)


def make_inputs(
    torch: Any, shape: Shape, device: Any, dtype: Any, seed: int = 0
) -> tuple[Any, Any, Any, Any]:
    """q, k, v (batch, tokens, heads, head_dim) and the sampled rows (a LongTensor on the device)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    size = (shape.batch, shape.tokens, shape.heads, shape.head_dim)
    q, k, v = (torch.randn(size, generator=generator, device=device, dtype=dtype) for _ in range(3))
    rows = torch.tensor(sample_rows(shape.tokens), device=device)
    partners = rows.flip(0)
    k[:, partners] = (q[:, rows].float() * (PLANTED_LOGIT / math.sqrt(shape.head_dim))).to(dtype)
    return q, k, v, rows


def reference(torch: Any, q: Any, k: Any, v: Any, rows: Any, head_chunk: int = 8) -> Any:
    """Math attention in float64 for the sampled query rows against all keys: (batch, rows, heads, dim)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    parts = []
    for h in range(0, q.shape[2], head_chunk):
        qs = q[:, rows, h : h + head_chunk].transpose(1, 2).double()
        ks = k[:, :, h : h + head_chunk].transpose(1, 2).double()
        vs = v[:, :, h : h + head_chunk].transpose(1, 2).double()
        with sdpa_kernel([SDPBackend.MATH]):
            parts.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2))
        del qs, ks, vs
    return torch.cat(parts, dim=2)


def agreement(torch: Any, out_rows: Any, ref: Any) -> tuple[float, float]:
    """(max abs error, smallest cosine similarity of one row's head vector) of out against ref."""
    out64 = out_rows.double()
    max_abs_err = (out64 - ref).abs().max().item()
    min_cosine = torch.nn.functional.cosine_similarity(out64, ref, dim=-1).min().item()
    return max_abs_err, min_cosine


def run_probe(
    torch: Any,
    backend: str,
    attend: Attend,
    *,
    shape: Shape = WAN_WINDOW,
    device: Any = "cuda",
    dtype: Any = None,
    synchronize: Callable[[], None] = lambda: None,
) -> Probe:
    """Runs ``attend`` twice on ``shape`` and compares the sampled rows with math attention."""
    dtype = dtype if dtype is not None else torch.float16
    q, k, v, rows = make_inputs(torch, shape, device, dtype)
    what = f"{shape.text()} {str(dtype).removeprefix('torch.')}"
    try:
        start = time.perf_counter()
        out = attend(q, k, v, None)
        synchronize()
        first_call_s = time.perf_counter() - start
        start = time.perf_counter()
        out = attend(q, k, v, None)
        synchronize()
        call_s = time.perf_counter() - start
    except Exception as exc:  # anything the kernel raises is "cannot take this shape"
        return Probe(backend, False, "shape", f"{what}: {type(exc).__name__}: {_first_line(exc)}")
    if tuple(out.shape) != tuple(q.shape):
        return Probe(backend, False, "shape", f"{what}: returned shape {tuple(out.shape)}")
    timing = {"first_call_s": round(first_call_s, 3), "call_s": round(call_s, 4)}
    out_rows = out[:, rows]
    del out
    ref = reference(torch, q, k, v, rows)
    max_abs_err, min_cosine = agreement(torch, out_rows, ref)
    problem = judge(max_abs_err, min_cosine)
    numbers = {"max_abs_err": round(max_abs_err, 5), "min_cosine": round(min_cosine, 6)}
    if problem:
        return Probe(backend, False, "numerics", f"{what}: {problem}", **numbers, **timing)
    return Probe(backend, True, "passed", what, **numbers, **timing)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
