"""Applying adapters to the transformer: unfused wrapping modules, fused weights, strengths, removal."""

import copy

import torch
from torch.func import functional_call

from newbie.adapters import AdapterStack, load_adapter
from newbie.adapters.adapter import AdaptedLinear
from tests.adapters.makers import forward, write_lokr, write_peft


def _reference(dit, adapters):
    """The DiT with W + sum(strength * ΔW) put in by hand: what both application modes must compute."""
    params = dict(dit.named_parameters())
    for adapter, strength in adapters:
        for name, d in adapter.deltas.items():
            key = f"{name}.weight"
            params[key] = params[key] + strength * d.weight().to(params[key].dtype)
    return params


def test_zero_adapter_leaves_the_output_bit_identical(tmp_path, shapes, dit):
    base = forward(dit)
    stack = AdapterStack()
    zero = stack.resolve(dit, [write_peft(tmp_path / "zero", shapes, zero=True)])
    for fused in (False, True):
        stack.activate(dit, zero, fused=fused)
        assert torch.equal(forward(dit), base)
        stack.clear()


def test_unfused_and_fused_equal_the_merged_weights_in_fp32(tmp_path, shapes, dit):
    lora = load_adapter(write_peft(tmp_path / "l", shapes), shapes)
    lokr = load_adapter(write_lokr(tmp_path / "k.safetensors", shapes, rank=2, alpha=3.0), shapes)
    base = forward(dit)
    stack = AdapterStack()
    active = stack.resolve(dit, [(tmp_path / "l", 0.7), (tmp_path / "k.safetensors", -0.4)])
    stack.activate(dit, active)
    got = forward(dit)
    stack.activate(dit, active, fused=True)
    got_fused = forward(dit)
    stack.clear()
    g = torch.Generator().manual_seed(0)  # the same inputs forward() draws
    x = torch.randn(1, 16, 8, 8, generator=g)
    cap, pooled = (
        torch.randn(1, 6, dit.cfg.cap_feat_dim, generator=g),
        torch.randn(1, dit.cfg.clip_text_dim, generator=g),
    )
    with torch.no_grad():
        want = functional_call(
            dit, _reference(dit, [(lora, 0.7), (lokr, -0.4)]), (x, torch.tensor([0.3]), cap, None, pooled)
        )
    assert not torch.allclose(got, base, atol=1e-3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_fused, want, rtol=1e-5, atol=1e-5)


def test_strength_zero_equals_no_adapter(tmp_path, shapes, dit):
    base = forward(dit)
    stack = AdapterStack()
    stack.activate(dit, stack.resolve(dit, [f"{write_peft(tmp_path / 'l', shapes)}:0"]))
    assert torch.equal(forward(dit), base)


def test_fused_equals_unfused_within_bf16_tolerance(tmp_path, shapes, dit):
    dit16 = copy.deepcopy(dit).to(torch.bfloat16)
    stack = AdapterStack()
    active = stack.resolve(
        dit16,
        [(write_peft(tmp_path / "l", shapes), 0.8), (write_lokr(tmp_path / "k.safetensors", shapes), 0.5)],
    )
    stack.activate(dit16, active, fused=False)
    unfused = forward(dit16).float()
    stack.activate(dit16, active, fused=True)
    fused = forward(dit16).float()
    stack.clear()
    base = forward(dit16).float()
    change = (unfused - base).abs().max()
    assert change > 0.05  # the adapters do something
    torch.testing.assert_close(fused, unfused, rtol=0.05, atol=0.05 * float(unfused.abs().max()))


def test_removal_restores_the_base_weights_bit_for_bit(tmp_path, shapes, dit):
    before = {k: v.clone() for k, v in dit.state_dict().items()}
    base = forward(dit)
    stack = AdapterStack()
    active = stack.resolve(
        dit, [write_peft(tmp_path / "l", shapes), write_lokr(tmp_path / "k.safetensors", shapes)]
    )
    stack.activate(dit, active, fused=True)
    assert not torch.equal(
        dit.state_dict()["layers.0.attention.qkv.weight"], before["layers.0.attention.qkv.weight"]
    )
    stack.activate(dit, active, fused=False)  # switching modes: weights back, layers wrapped
    assert all(torch.equal(v, before[k]) for k, v in dit.state_dict().items())
    assert not torch.equal(forward(dit), base)
    stack.activate(dit, [])  # the next request has no adapters
    assert all(torch.equal(v, before[k]) for k, v in dit.state_dict().items())
    assert not any(isinstance(m, AdaptedLinear) for m in dit.modules())
    assert list(dit.state_dict()) == list(before)  # the official keys again
    assert torch.equal(forward(dit), base)


def test_same_request_twice_does_not_refuse(tmp_path, shapes, dit):
    stack = AdapterStack()
    active = stack.resolve(dit, [write_peft(tmp_path / "l", shapes)])
    stack.activate(dit, active, fused=True)
    once = forward(dit)
    stack.activate(dit, stack.resolve(dit, [tmp_path / "l"]), fused=True)  # cached file, same state: a no-op
    assert torch.equal(forward(dit), once)
    assert stack.resolve(dit, [tmp_path / "l"])[0].adapter is active[0].adapter


def test_wrapped_layers_follow_the_model_to_another_dtype_and_quantized_layers_fall_back(
    tmp_path, shapes, dit
):
    stack = AdapterStack()
    active = stack.resolve(dit, [write_peft(tmp_path / "l", shapes)])
    stack.activate(dit, active)
    want = forward(dit)
    dit.to(torch.bfloat16)  # as an offloading plan or a cast would move it after activation
    torch.testing.assert_close(forward(dit).float(), want, rtol=0.05, atol=0.05 * float(want.abs().max()))
    stack.clear()
    layer = dit.get_submodule("layers.0.attention.qkv")
    layer.weight = torch.nn.Parameter(layer.weight.to(torch.int8), requires_grad=False)  # stands in for int8
    notes = stack.activate(dit, active, fused=True)
    assert "applied unfused" in notes[0] and stack._wrapped and not stack._originals
