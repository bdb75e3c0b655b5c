"""The attention probe, its thresholds, the kernel dispatch and the measured table, on the CPU.

The probe (``accuracy.run_probe``) runs with real PyTorch on a small shape against stand-in backends:
correct ones (math attention, fp16 and bf16 rounding as 16-bit kernels have it) must pass, broken
ones (a wrong softmax scale, lost keys, swapped heads, NaN, an exception, a wrong shape) must not.
The package is imported as ComfyUI imports it, without running its ``__init__`` (which needs ComfyUI).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.gpu.attention_probe import node_module as _submodule  # the package without its __init__

torch = pytest.importorskip("torch")
F = torch.nn.functional

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = REPO / "comfyui_nodes" / "wan_worker_attention"


accuracy = _submodule("accuracy")
kernels = _submodule("kernels")
step_table = _submodule("step_table")

SMALL = accuracy.Shape(batch=1, tokens=333, heads=4, head_dim=64)  # 333 = 2 x 128 + a partial block


def sdpa(q: Any, k: Any, v: Any, scale: float | None = None) -> Any:
    """Math attention in float32 on (batch, tokens, heads, dim), as a kernel would compute it."""
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(), scale=scale
    )
    return out.transpose(1, 2)


def bf16_kernel(q: Any, k: Any, v: Any, scale: float | None) -> Any:  # fa3-fwd's cast path
    rounded = (t.to(torch.bfloat16).float() for t in (q, k, v))
    return sdpa(*rounded, scale).to(torch.bfloat16).to(q.dtype)


BACKENDS_THAT_AGREE = {
    "math in the input dtype": lambda q, k, v, s: sdpa(q, k, v, s).to(q.dtype),
    "fp16 probabilities": lambda q, k, v, s: (
        (
            torch.softmax(
                q.transpose(1, 2).float()
                @ k.transpose(1, 2).float().transpose(-1, -2)
                / math.sqrt(q.shape[-1]),
                -1,
            )
            .half()
            .float()
            @ v.transpose(1, 2).float()
        )
        .transpose(1, 2)
        .half()
    ),
    "bf16 inputs and output": bf16_kernel,
}

BROKEN_BACKENDS = {
    "softmax scale 5 % off": (
        lambda q, k, v, s: sdpa(q, k, v, 1.05 / math.sqrt(q.shape[-1])).half(),
        "numerics",
    ),
    "tail block of keys lost": (lambda q, k, v, s: sdpa(q, k[:, :256], v[:, :256]).half(), "numerics"),
    "first block of keys lost": (lambda q, k, v, s: sdpa(q, k[:, 128:], v[:, 128:]).half(), "numerics"),
    "heads swapped": (lambda q, k, v, s: sdpa(q, k, v).half()[:, :, [1, 0, 2, 3]], "numerics"),
    "NaN": (lambda q, k, v, s: torch.full_like(q, float("nan")), "numerics"),
    "raises": (lambda q, k, v, s: (_ for _ in ()).throw(RuntimeError("invalid argument\nmore")), "shape"),
    "wrong shape": (lambda q, k, v, s: q[:, :100], "shape"),
}


@pytest.mark.parametrize("name", list(BACKENDS_THAT_AGREE))
def test_correct_16_bit_kernels_pass_the_probe(name: str) -> None:
    result = accuracy.run_probe(torch, name, BACKENDS_THAT_AGREE[name], shape=SMALL, device="cpu")
    assert (result.ok, result.stage) == (True, "passed"), result
    assert result.max_abs_err <= accuracy.MAX_ABS_ERR and result.min_cosine >= accuracy.MIN_COSINE
    assert result.first_call_s is not None and result.call_s is not None
    assert "1 x 333 tokens x 4 heads x 64 float16" in result.detail


@pytest.mark.parametrize("name", list(BROKEN_BACKENDS))
def test_broken_kernels_fail_the_probe_with_the_stage_that_caught_them(name: str) -> None:
    attend, stage = BROKEN_BACKENDS[name]
    result = accuracy.run_probe(torch, name, attend, shape=SMALL, device="cpu")
    assert (result.ok, result.stage) == (False, stage), result
    if name == "raises":
        assert result.detail.endswith("RuntimeError: invalid argument")  # one line of the error
        assert result.summary().startswith("cannot take the shape (1 x 333 tokens")
    if name == "NaN":
        assert "non-finite" in result.detail


def test_the_planted_partner_keys_are_where_the_sampled_rows_look() -> None:
    q, k, _v, rows = accuracy.make_inputs(torch, SMALL, "cpu", torch.float16)
    weights = torch.softmax(
        q[:, rows].transpose(1, 2).float() @ k.transpose(1, 2).float().transpose(-1, -2) / math.sqrt(64), -1
    )
    top = weights.argmax(-1)  # (batch, heads, rows)
    assert (top == rows.flip(0)).float().mean() > 0.9
    assert rows.tolist()[:3] == [0, 1, 2] and rows.tolist()[-1] == SMALL.tokens - 1


def test_reference_is_math_attention_of_the_sampled_rows() -> None:
    q, k, v, rows = accuracy.make_inputs(torch, SMALL, "cpu", torch.float16)
    full = F.scaled_dot_product_attention(*(t.transpose(1, 2).double() for t in (q, k, v))).transpose(1, 2)
    assert torch.allclose(accuracy.reference(torch, q, k, v, rows, head_chunk=3), full[:, rows], atol=1e-12)


@pytest.mark.parametrize(
    ("max_abs_err", "min_cosine", "agrees"),
    [
        (0.0, 1.0, True),
        (0.05, 0.999, True),
        (0.0501, 1.0, False),
        (0.0, 0.9989, False),
        (math.nan, 1.0, False),
    ],
)
def test_thresholds(max_abs_err: float, min_cosine: float, agrees: bool) -> None:
    assert (accuracy.judge(max_abs_err, min_cosine) is None) is agrees


def test_probe_shape_is_the_pinned_workflow_window() -> None:
    graph = json.loads((REPO / "workflows" / "wan22_animate_replace.json").read_text())
    window = graph["30"]["inputs"]  # window 1's WanAnimateToVideoOfficialMask
    tokens = accuracy.window_tokens(window["width"], window["height"], window["length"])
    assert tokens == accuracy.WAN_WINDOW.tokens == 75_600
    assert accuracy.WAN_WINDOW.heads * accuracy.WAN_WINDOW.head_dim == 5120  # Wan 14B's dim, 128 a head


# ---------------------------------------------------------------- the kernel in front of SDPA


def comfy_sdpa(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> Any:
    return ("sdpa", kwargs)


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.seen: list[tuple[tuple[int, ...], bool, Any]] = []
        self.fail = fail

    def __call__(self, q: Any, k: Any, v: Any, scale: Any) -> Any:
        self.seen.append((tuple(q.shape), q.is_contiguous(), scale))
        if self.fail:
            raise RuntimeError("no kernel for this")
        return sdpa(q, k, v, scale).to(q.dtype)


def dispatch(attend: Any) -> Any:
    ops = SimpleNamespace(scaled_dot_product_attention=comfy_sdpa)
    kernels.install(
        ops, "fa4", attend, head_dims=frozenset({64}), dtypes=frozenset({torch.float16}), device_type="cpu"
    )
    return ops


def comfy_views(tokens: int = 40, heads: int = 2, dim: int = 64, dtype: Any = torch.float16) -> list[Any]:
    """q, k, v as ComfyUI's attention_pytorch passes them: (batch, heads, tokens, dim) views of
    (batch, tokens, heads, dim) tensors."""
    return [torch.randn(1, tokens, heads, dim).to(dtype).transpose(1, 2) for _ in range(3)]


def test_the_kernel_takes_plain_calls_in_its_own_layout_without_a_copy() -> None:
    kernel = Recorder()
    ops = dispatch(kernel)
    q, k, v = comfy_views()
    out = ops.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=0.1)
    assert kernel.seen == [((1, 40, 2, 64), True, 0.1)]
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=0.1)
    assert out.shape == q.shape and torch.allclose(out.float(), expected, atol=2e-3)
    assert ops.scaled_dot_product_attention.calls == {"kernel": 1, "sdpa": 0}


@pytest.mark.parametrize(
    "call",
    [
        {"attn_mask": torch.ones(40, 40, dtype=torch.bool)},
        {"is_causal": True},
        {"dropout_p": 0.1},
        {"enable_gqa": True},
        {"unknown_option": 1},
    ],
)
def test_calls_the_kernel_cannot_take_go_to_comfy_sdpa(call: dict[str, Any]) -> None:
    kernel = Recorder()
    ops = dispatch(kernel)
    assert ops.scaled_dot_product_attention(*comfy_views(), **call)[0] == "sdpa"
    assert kernel.seen == []


@pytest.mark.parametrize(
    "views",
    [
        comfy_views(dim=32),  # a head size the probe did not run
        comfy_views(dtype=torch.float32),  # a dtype the kernel has not
        [torch.randn(40, 128).half()] * 3,  # not 4-D
        [*comfy_views()[:2], comfy_views(heads=1)[2]],  # v with other heads
    ],
)
def test_shapes_and_dtypes_the_probe_did_not_cover_go_to_comfy_sdpa(views: list[Any]) -> None:
    kernel = Recorder()
    assert dispatch(kernel).scaled_dot_product_attention(*views)[0] == "sdpa"
    assert kernel.seen == []


def test_cross_attention_with_fewer_keys_goes_to_the_kernel() -> None:
    kernel = Recorder()
    q = comfy_views(tokens=40)[0]
    k, v = comfy_views(tokens=7)[:2]
    assert dispatch(kernel).scaled_dot_product_attention(q, k, v).shape == q.shape
    assert len(kernel.seen) == 1


def test_a_kernel_that_raises_is_logged_once_and_such_calls_go_to_sdpa(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel = Recorder(fail=True)
    ops = dispatch(kernel)
    with caplog.at_level(logging.WARNING):
        assert ops.scaled_dot_product_attention(*comfy_views())[0] == "sdpa"
        assert ops.scaled_dot_product_attention(*comfy_views())[0] == "sdpa"
    assert len(kernel.seen) == 1
    warnings = [r.getMessage() for r in caplog.records if "fa4 raised" in r.getMessage()]
    assert len(warnings) == 1 and "RuntimeError: no kernel for this" in warnings[0]


def test_install_replaces_and_restores_comfy_function() -> None:
    ops = dispatch(Recorder())
    assert kernels.installed(ops) == "fa4"
    kernels.install(ops, "fa3", Recorder(), head_dims=frozenset({64}), dtypes=frozenset({torch.float16}))
    assert ops.scaled_dot_product_attention.wan_worker_original is comfy_sdpa  # not stacked
    kernels.install(ops, None, None)
    assert ops.scaled_dot_product_attention is comfy_sdpa and kernels.installed(ops) is None


@pytest.mark.parametrize(("name", "module"), [("fa4", "flash_attn"), ("fa3", "fa3_fwd")])
def test_a_kernel_package_that_is_not_installed_cannot_load(name: str, module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    with pytest.raises(ImportError):
        kernels.load(name)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.load("fa5")


# ---------------------------------------------------------------- the measured table


def test_shipped_table_ranks_h100_and_has_h200_unmeasured() -> None:
    table = step_table.load()
    h100 = step_table.find(table, "nvidia  h100 80gb hbm3")
    assert h100 is not None and h100.measured == "2026-11-23"
    assert h100.ranking() == [("cudnn", 12.03), ("sage", 14.18), ("flash", 17.08)]
    assert h100.step_s["fa4"] is None and h100.step_s["fa3"] is None
    h200 = step_table.find(table, "NVIDIA H200")
    assert h200 is not None and h200.ranking() == []
    assert step_table.find(table, "NVIDIA A100-SXM4-80GB") is None
    assert step_table.find(table, None) is None


def test_table_columns_are_the_backends_auto_can_rank() -> None:
    selection = _submodule("selection")
    assert set(step_table.BACKENDS) == set(selection.REQUESTS) - {"auto"}


def _row(**step_s: Any) -> dict[str, Any]:
    steps = dict.fromkeys(step_table.BACKENDS)
    steps.update(step_s)
    return {"device": "GPU X", "measured": "2026-12-01", "step_s": steps}


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "cannot be read"),
        ('{"rows": []}', "no 'gpus' list"),
        (json.dumps({"gpus": [{"step_s": {}}]}), "without a device name"),
        (json.dumps({"gpus": [{"device": "GPU X", "step_s": {"cudnn": 1.0}}]}), "must name exactly"),
        (json.dumps({"gpus": [_row(cudnn=-1.0)]}), "not a positive number"),
        (json.dumps({"gpus": [_row(cudnn=True)]}), "not a positive number"),
        (json.dumps({"gpus": [{**_row(cudnn=12.0), "measured": None}]}), "date"),
        (json.dumps({"gpus": [_row(), {**_row(), "device": "gpu  x"}]}), "twice"),
    ],
)
def test_a_broken_table_is_refused_with_a_reason(tmp_path: Path, content: str, complaint: str) -> None:
    path = tmp_path / "step_times.json"
    path.write_text(content)
    with pytest.raises(step_table.TableError, match=complaint):
        step_table.load(path)


def test_missing_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(step_table.TableError, match="cannot be read"):
        step_table.load(tmp_path / "absent.json")


# ---------------------------------------------------------------- the device script's table


def test_device_script_table_names_the_machine_and_every_backend(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.gpu import attention_probe

    env = {
        "gpu": "NVIDIA H200",
        "capability": "sm_90",
        "nvidia_smi": "NVIDIA H200, 580.95.05, 143771 MiB",
        "torch": "2.11.0+cu130",
        "cuda": "13.0",
        "cudnn": 91900,
        "python": "3.12.3",
        "packages": {"flash-attn-4": "4.0.0b36", "fa3-fwd": None},
    }
    passed = {"backend": "fa4", "ok": True, "stage": "passed", "detail": "", "max_abs_err": 0.0011,
              "min_cosine": 0.999999, "first_call_s": 41.2, "call_s": 0.21}  # fmt: skip
    failed = {"backend": "fa3", "ok": False, "stage": "load", "detail": "OSError: libcudart.so.13",
              "max_abs_err": None, "min_cosine": None, "first_call_s": None, "call_s": None}  # fmt: skip
    rows = [
        {"backend": "fa4", "probe": passed, "summary": "probe passed", "call_s_median": 0.2, "tflops": 585.0,
         "peak_allocated_gib": 4.1},
        {"backend": "fa3", "probe": failed, "summary": "cannot load (OSError: libcudart.so.13)"},
    ]  # fmt: skip
    table = attention_probe.render(env, rows, "cold caches").splitlines()
    assert table[0].startswith(
        "NVIDIA H200 (sm_90; NVIDIA H200, 580.95.05, 143771 MiB), PyTorch 2.11.0+cu130, "
    )
    assert "CUDA 13.0" in table[0] and "cold caches" in table[0]
    assert table[1] == "packages: flash-attn-4 4.0.0b36"
    assert table[5] == "| fa4 | passed | 0.0011 | 0.999999 | 41.20 | 0.2000 | 585 | 4.1 |"
    assert table[6] == "| fa3 | cannot load (OSError: libcudart.so.13) | – | – | – | – | – | – |"
    if not torch.cuda.is_available():
        assert attention_probe.main(["--out", "/nonexistent"]) == 2
        assert "no CUDA device" in capsys.readouterr().out


# ---------------------------------------------------------------- the image build's FA4 pre-compile


@pytest.mark.parametrize(
    ("cache_enabled", "said"),
    [
        ("0", "FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED is not 1"),
        ("1", "not pre-compiled (ModuleNotFoundError"),
    ],
)
def test_prewarm_never_fails_the_build_and_says_why_it_did_nothing(cache_enabled: str, said: str) -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn-4 is installed here")
    run = subprocess.run(
        [sys.executable, str(REPO / "docker" / "prewarm_fa4.py"), "--node-dir", str(NODE_DIR)],
        env={"FLASH_ATTENTION_CUTE_DSL_CACHE_ENABLED": cache_enabled, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0
    assert f"prewarm_fa4: WARNING: {said}" in run.stdout
