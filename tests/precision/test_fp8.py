"""fp8 linears (newbie.precision.fp8) on CPU: the quantization, the emulated product the GPU's scaled GEMM
computes, moves, the choice of layers in a tiny DiT, the fused fast path, adapters and torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from newbie.adapters import AdapterStack, linear_shapes
from newbie.demo.tiny import tiny_dit_config
from newbie.errors import NewbieError
from newbie.memory.quant import quantize_dit
from newbie.model import fused
from newbie.model.dit import NextDiT
from newbie.precision.fp8 import (
    E4M3,
    E4M3_MAX,
    Float8Linear,
    dequantize_rows,
    quantize_linears,
    quantize_rows,
    relative_errors,
    scaled_mm_rows,
)
from tests.adapters.makers import write_peft
from tests.model.fast_paths import w13_intact

BLOCKS = ("layers.", "noise_refiner.", "context_refiner.")


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _model(seed=0):
    torch.manual_seed(seed)
    m = NextDiT(tiny_dit_config()).eval()
    with torch.no_grad():  # non-trivial norms so every weight matters
        for p in m.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return m


def _inputs(m, b=2, L=10, h=8, w=12):
    g = torch.Generator().manual_seed(1)
    cfg = m.cfg
    return (
        torch.randn(b, 16, h, w, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, L, cfg.cap_feat_dim, generator=g),
        torch.randn(b, cfg.clip_text_dim, generator=g),
    )


# -- quantization --


def test_rows_round_trip_within_e4m3_precision():
    t = torch.randn(64, 96) * torch.logspace(-3, 3, 64)[:, None]  # rows of very different magnitudes
    q, scale = quantize_rows(t)
    assert q.dtype == E4M3 and scale.dtype == torch.float32 and scale.shape == (64, 1)
    back = dequantize_rows(q, scale)
    # 3 mantissa bits: half an ulp is 2^-4 relative for normals; subnormals (below 2^-6) step 2^-9 absolute
    bound = t.abs() * 2**-4 + scale * 2**-10
    assert (back - t).abs().le(bound * 1.0001).all()
    assert q.float().abs().amax(dim=1).eq(E4M3_MAX).all()  # each row's largest value uses the full range
    torch.testing.assert_close(back.abs().amax(1), t.abs().amax(1), rtol=1e-6, atol=0)
    assert _rel(back, t) > 1e-3  # it did quantize


def test_zero_rows_quantize_to_zero_without_nan():
    t = torch.randn(4, 32)
    t[1] = 0
    q, scale = quantize_rows(t)
    assert torch.isfinite(scale).all() and scale[1].item() > 0
    assert q[1].float().eq(0).all() and torch.isfinite(q.float()).all()


# -- the layer --


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [False, True])
def test_float8_linear_is_close_to_the_linear(dtype, bias):
    torch.manual_seed(0)
    lin = nn.Linear(128, 64, bias=bias).to(dtype)
    f8 = Float8Linear.from_linear(lin)
    x = torch.randn(3, 7, 128, dtype=dtype)  # leading dims
    y, want = f8(x), lin(x)
    assert y.dtype == dtype and y.shape == (3, 7, 64)
    assert 1e-3 < _rel(y, want) < 0.05
    assert torch.equal(y.reshape(21, 64), f8(x.reshape(21, 128)))  # leading dims are only a reshape


def test_emulation_is_the_exact_product_of_the_quantized_operands():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32)
    f8 = Float8Linear.from_linear(lin)
    x = torch.randn(5, 64)
    xq, sx = quantize_rows(x)
    want = (xq.float() * sx) @ (f8.weight.float() * f8.weight_scale).t() + lin.bias
    torch.testing.assert_close(f8(x), want, rtol=1e-6, atol=1e-6)


def test_zero_input_rows_and_zero_weight_rows():
    lin = nn.Linear(32, 16)
    with torch.no_grad():
        lin.weight[3] = 0
    f8 = Float8Linear.from_linear(lin)
    x = torch.randn(4, 32)
    x[2] = 0
    y = f8(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[2], lin.bias.detach())  # a zero token gives the bias
    torch.testing.assert_close(y[:, 3], lin.bias[3].expand(4).detach())  # a zero weight row gives its bias


def test_dtype_changes_keep_the_fp8_weight_and_device_moves_take_it():
    f8 = Float8Linear.from_linear(nn.Linear(32, 16))
    w, s = f8.weight.detach().clone(), f8.weight_scale.detach().clone()
    f8.to(torch.float16)  # the fp16 guard's fallback does this to the whole DiT
    assert (
        f8.weight.dtype == E4M3 and f8.weight_scale.dtype == torch.float32 and f8.bias.dtype == torch.float16
    )
    assert torch.equal(f8.weight.float(), w.float()) and torch.equal(f8.weight_scale, s)
    assert f8(torch.randn(2, 32, dtype=torch.float16)).dtype == torch.float16
    f8.half().bfloat16()
    assert f8.weight.dtype == E4M3 and f8.weight_scale.dtype == torch.float32
    f8.to("meta")
    assert {p.device.type for p in f8.parameters()} == {"meta"}
    assert f8.weight.dtype == E4M3 and f8.weight_scale.dtype == torch.float32
    assert not any(p.requires_grad for p in f8.parameters())


def test_scaled_mm_call_matches_the_emulation():
    """The exact torch._scaled_mm call of the GPU path (operand layout, scale shapes), where this torch runs
    row-wise scaled fp8 GEMMs on the CPU too."""
    torch.manual_seed(0)
    xq, sx = quantize_rows(torch.randn(24, 64))
    wq, sw = quantize_rows(torch.randn(48, 64))
    try:
        got = scaled_mm_rows(xq, sx, wq, sw)
    except (RuntimeError, NotImplementedError) as e:
        pytest.skip(f"no row-wise torch._scaled_mm on this CPU build: {e}")
    want = F.linear(dequantize_rows(xq, sx), dequantize_rows(wq, sw))
    assert got.dtype == torch.bfloat16 and got.shape == (24, 48)
    torch.testing.assert_close(got.float(), want, rtol=2**-7, atol=1e-3 * want.abs().max().item())


def test_compiles_as_one_graph():
    """fullgraph: no graph break in the quantization or the layer (aot_eager: dynamo and AOT tracing, without
    inductor's CPU code generation, which takes ~20 s here)."""
    torch.manual_seed(0)
    f8 = Float8Linear.from_linear(nn.Linear(64, 32).to(torch.bfloat16))
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)

    def f(x):
        return f8(F.silu(x) * 2)

    torch._dynamo.reset()
    got = torch.compile(f, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(got, f(x), rtol=0, atol=0)


# -- on the DiT --


def _expected_names(m):
    per_block = ["attention.qkv", "attention.out", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]
    names = set()
    for group in ("layers", "noise_refiner", "context_refiner"):
        for i, block in enumerate(getattr(m, group)):
            names |= {f"{group}.{i}.{n}" for n in per_block}
            if block.modulated:
                names.add(f"{group}.{i}.adaLN_modulation.1")
    return names


@torch.no_grad()
def test_quantize_linears_picks_the_block_linears_and_stays_close():
    m = _model()
    inputs = _inputs(m)
    ref = m(*inputs[:3], None, inputs[3])
    keys = set(m.state_dict())
    n = quantize_linears(m, BLOCKS)
    picked = {name for name, mod in m.named_modules() if isinstance(mod, Float8Linear)}
    assert picked == _expected_names(m) and n == len(picked) == 5 * 4 + 3
    assert type(m.x_embedder) is nn.Linear and type(m.final_layer.linear) is nn.Linear
    assert set(m.state_dict()) - keys == {f"{p}.weight_scale" for p in picked}
    assert quantize_linears(m, BLOCKS) == 0  # already done: nothing left to pick
    got = m(*inputs[:3], None, inputs[3])
    assert 1e-4 < _rel(got, ref) < 0.1


def test_only_widths_that_are_multiples_of_16_are_quantized():
    m = nn.ModuleDict({"layers": nn.ModuleList([nn.Linear(48, 32), nn.Linear(48, 40), nn.Linear(24, 32)])})
    assert quantize_linears(m, ("layers.",)) == 1
    assert [type(x) for x in m["layers"]] == [Float8Linear, nn.Linear, nn.Linear]


@torch.no_grad()
def test_quantize_dit_fp8_dynamic_runs_natively_without_torchao():
    m = _model()
    assert quantize_dit(m, "fp8-dynamic") == 20  # the adaLN projections (one row per sample) stay bf16
    assert all(type(b.adaLN_modulation[1]) is nn.Linear for b in m.blocks() if b.modulated)
    with pytest.raises(NewbieError, match="unknown quantization"):
        quantize_dit(m, "fp4")


@torch.no_grad()
def test_fast_path_fuses_w1_w3_into_one_fp8_gemm_with_the_same_output():
    m = _model()
    quantize_linears(m, BLOCKS)
    inputs = _inputs(m)
    ref = m(*inputs[:3], None, inputs[3])
    info = fused.enable(m, "auto")
    assert info["w13_fused_blocks"] == len(list(m.blocks()))
    ff = m.layers[0].feed_forward
    assert isinstance(ff.w13, Float8Linear) and w13_intact(ff) and ff._w13() is ff.w13
    assert ff.w13.out_features == 2 * ff.w1.out_features
    torch.testing.assert_close(m(*inputs[:3], None, inputs[3]), ref, rtol=1e-5, atol=1e-5)
    x = torch.randn(2, 6, m.cfg.dim)
    fast = ff(x)
    ff.unfuse()
    torch.testing.assert_close(fast, ff(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quantized", [False, True])
@torch.no_grad()
def test_fast_ffn_runs_the_hooks_of_w1_and_w3(quantized):
    """Hooks on the layers (a trace) run: the one-GEMM w1|w3 path must not skip them."""
    m = _model()
    if quantized:
        quantize_linears(m, BLOCKS)
    fused.enable(m, "auto")
    ff = m.layers[0].feed_forward
    x = torch.randn(2, 6, m.cfg.dim)
    plain = ff(x)
    handle = ff.w3.register_forward_hook(lambda mod, args, out: out * 2)
    assert ff._w13() is None
    hooked = ff(x)
    assert not torch.allclose(hooked, plain)
    handle.remove()
    assert ff._w13() is not None
    torch.testing.assert_close(ff(x), plain, rtol=0, atol=0)


@torch.no_grad()
def test_fp8_block_compiles_as_one_graph_on_the_fast_path():
    m = _model()
    quantize_linears(m, BLOCKS)
    fused.enable(m, "auto")
    inputs = _inputs(m)
    ref = m(*inputs[:3], None, inputs[3])
    torch._dynamo.reset()
    for block in (m.layers[0], m.context_refiner[0]):  # modulated and not
        block.compile(backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(m(*inputs[:3], None, inputs[3]), ref, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_adapters_on_fp8_layers_run_wrapped_and_leave_the_weights(tmp_path):
    m = _model()
    quantize_linears(m, BLOCKS)
    inputs = _inputs(m)
    base = m(*inputs[:3], None, inputs[3])
    weights = {k: v.clone() for k, v in m.state_dict().items()}
    stack = AdapterStack()
    active = stack.resolve(m, [write_peft(tmp_path / "l", linear_shapes(m))])
    notes = stack.activate(m, active, fused=True)
    assert "applied unfused" in notes[0] and stack._wrapped and not stack._originals
    assert _rel(m(*inputs[:3], None, inputs[3]), base) > 1e-3
    stack.clear()
    assert all(torch.equal(v.float(), weights[k].float()) for k, v in m.state_dict().items())
    torch.testing.assert_close(m(*inputs[:3], None, inputs[3]), base, rtol=0, atol=0)


def test_relative_errors_per_layer_type():
    ref = _model()
    m = _model()
    quantize_linears(m, BLOCKS)
    errs = relative_errors(ref, m, tokens=64)
    assert set(errs) == {
        f"{g}.{n}"
        for g in ("layers", "noise_refiner", "context_refiner")
        for n in ("attention.qkv", "attention.out", "feed_forward.w1", "feed_forward.w2", "feed_forward.w3")
    } | {"layers.adaLN_modulation", "noise_refiner.adaLN_modulation"}
    assert all(1e-3 < e < 0.05 for e in errs.values()), errs
