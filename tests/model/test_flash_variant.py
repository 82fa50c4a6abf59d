"""The bf16 kernel's variant choice (model/flash_variant.py): what TMA can read, and the per-shape timing."""

import pytest
import torch

from newbie.model import flash_variant as fv

H, HK, D = 24, 8, 96


def _fused(B, N, width_extra=0, dtype=torch.bfloat16):
    """q, k, v: views into one (B, N, (H + 2 Hk) * D + width_extra) projection output, as the DiT has them."""
    x = torch.zeros(B, N, (H + 2 * HK) * D + width_extra, dtype=dtype)
    q, k, v, _ = x.split([H * D, HK * D, HK * D, width_extra], -1)
    return q.unflatten(-1, (H, D)), k.unflatten(-1, (HK, D)), v.unflatten(-1, (HK, D))


def test_tma_reads_packed_aligned_tensors_and_views_of_a_fused_projection():
    assert fv.tma_aligned(torch.zeros(2, 77, H, D, dtype=torch.bfloat16))
    assert fv.tma_aligned(*_fused(2, 131))
    assert fv.tma_aligned(*_fused(1, 5, dtype=torch.float32))


def test_tma_refuses_what_its_descriptors_cannot_express():
    heads_outer = torch.zeros(2, H, 77, D, dtype=torch.bfloat16).transpose(1, 2)  # heads not packed in a row
    assert not fv.tma_aligned(heads_outer)
    # a row of 3844 bf16 (7688 bytes): not a multiple of 16
    assert not fv.tma_aligned(*_fused(2, 64, width_extra=4))
    shifted = torch.zeros(2 * 10 * H * D + 4, dtype=torch.bfloat16)[4:].view(2, 10, H, D)  # base + 8 bytes
    assert not fv.tma_aligned(shifted)
    assert not fv.tma_aligned(
        torch.zeros(1, 10, H, 2 * D, dtype=torch.bfloat16)[..., ::2]
    )  # strided channels
    assert not fv.tma_aligned(torch.zeros(1, 10, 3, 36, dtype=torch.bfloat16))  # a head of 72 bytes
    assert not fv.tma_aligned(
        torch.zeros(1, 10, H, D, dtype=torch.bfloat16).expand(2, -1, -1, -1)
    )  # stride 0
    assert not fv.tma_aligned(torch.zeros(2, 10, H, D, dtype=torch.bfloat16), heads_outer)  # all must pass


def test_size_one_dims_get_packed_strides():
    """A size-1 dimension is never stepped over: whatever stride a view gives it, TMA gets a usable one."""
    one = torch.zeros(1, 1, H, D, dtype=torch.bfloat16).as_strided((1, 1, H, D), (3, 5, D, 1))
    assert fv.tma_strides(one) == (H * D, H * D) and fv.tma_aligned(one)
    q = _fused(2, 9)[0]
    assert fv.tma_strides(q) == (9 * (H + 2 * HK) * D, (H + 2 * HK) * D)


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(fv, "_CHOSEN", {})
    monkeypatch.setattr(fv, "_RAN", {})
    monkeypatch.setattr(fv, "_FAILED", {})


def _runs(calls):
    return {name: (lambda name=name: calls.append(name)) for name in ("pointer", "tma")}


def test_auto_times_both_once_per_shape_and_keeps_the_faster(fresh):
    q, k = torch.zeros(1, 300, H, D), torch.zeros(1, 500, HK, D)
    key = fv.shape_key(q, k)
    timed = []

    def timer_of(ms):
        def timer(fn):
            fn()
            return ms[timed[-1]]

        return timer

    timer = timer_of({"pointer": 2.0, "tma": 1.5})

    assert fv.ran(q, k) is None
    assert fv.select("auto", key, True, _runs(timed), timer) == "tma" and timed == ["pointer", "tma"]
    assert fv.select("auto", key, True, _runs(timed), timer) == "tma" and len(timed) == 2  # remembered
    assert fv.ran(q, k) == "tma"
    other = fv.shape_key(torch.zeros(1, 300, H, D), torch.zeros(1, 300, HK, D))
    assert fv.select("auto", other, True, _runs(timed), timer_of({"pointer": 1.0, "tma": 3.0})) == "pointer"
    assert fv._CHOSEN == {key: "tma", other: "pointer"}


def test_pointer_wherever_tma_cannot_run_and_names_are_checked(fresh):
    key = fv.shape_key(torch.zeros(1, 8, H, D), torch.zeros(1, 8, HK, D))

    def never(fn):
        raise AssertionError("nothing is timed")

    runs = _runs([])
    assert fv.select("auto", key, False, runs, never) == "pointer"
    assert fv.select("tma", key, False, runs, never) == "pointer"
    assert fv.select("tma", key, True, runs, never) == "tma"
    assert fv.select("pointer", key, True, runs, never) == "pointer"
    assert key not in fv._CHOSEN and fv._RAN[key] == "pointer"
    with pytest.raises(ValueError, match="pointer, tma, auto; got 'fast'"):
        fv.select("fast", key, True, runs, never)


def test_a_variant_that_fails_to_build_is_not_chosen(fresh):
    q, k = torch.zeros(1, 8, H, D), torch.zeros(1, 8, HK, D)
    key = fv.shape_key(q, k)

    def broken():
        raise RuntimeError("PassManager::run failed")

    runs = {"pointer": lambda: None, "tma": broken}

    def timer(fn):
        fn()
        return 5.0

    assert fv.select("auto", key, True, runs, timer) == "pointer"
    assert fv.failed(q, k) == {"tma": "RuntimeError: PassManager::run failed"}
    with pytest.raises(RuntimeError, match="PassManager"):
        fv.choose(("other",), {"tma": broken}, timer)


def test_flash_attention_bf16_runs_the_kernel_it_names(fresh, monkeypatch):
    """flash.attention_bf16's wiring, with stand-ins for the two Triton kernels (a CPU has no Triton): TMA
    only where the inputs are aligned, "auto" timed once per shape."""
    import sys
    import types

    import newbie.model
    from newbie.model import flash

    called = []
    for module, fn in (("flash_triton", "attention_bf16_pointer"), ("flash_tma", "attention_bf16_tma")):
        fake = types.ModuleType(f"newbie.model.{module}")
        setattr(fake, fn, lambda q, k, v, fn=fn: called.append(fn.rsplit("_", 1)[1]) or q.flatten(2))
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
        monkeypatch.setattr(newbie.model, module, fake, raising=False)
    monkeypatch.setattr(flash, "_tma_possible", lambda device: True)

    def pointer_faster(fn):
        fn()
        return {"pointer": 1.0, "tma": 2.0}[called[-1]]

    monkeypatch.setattr(fv, "cuda_ms", pointer_faster)
    q, k, v = _fused(2, 40)
    assert flash.attention_bf16(q, k, v, "tma").shape == (2, 40, H * D) and called == ["tma"]
    assert flash.attention_bf16(q, k, v) is not None and called[1:] == ["pointer", "tma", "pointer"]
    assert fv.ran(q, k) == "pointer"
    called.clear()
    heads_outer = torch.zeros(2, H, 40, D, dtype=torch.bfloat16).transpose(1, 2)
    flash.attention_bf16(heads_outer, k, v, "tma")
    assert called == ["pointer"] and fv.ran(heads_outer, k) == "pointer"
