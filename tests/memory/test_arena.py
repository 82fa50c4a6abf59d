"""Packing a holder's tensors into one buffer (newbie.memory.arena): same values, one storage, one lock."""

import gc
import os

import pytest
import torch

from newbie.memory import arena
from newbie.memory.arena import ALIGN, PAGE, layout, pack


def _tensors():
    g = torch.Generator().manual_seed(0)
    return [
        torch.randn(7, 5, generator=g).to(torch.bfloat16),
        torch.randn(3, generator=g),
        torch.randn(4, 6, generator=g, dtype=torch.float64).t(),  # strided: a transposed view
        torch.empty(0, 3),
        torch.randint(0, 255, (9,), generator=g, dtype=torch.uint8),
        torch.randn(2, 2, generator=g, dtype=torch.complex64),
        torch.tensor([True, False, True]),
    ]


def test_layout_aligns_every_slot():
    offsets, total = layout(_tensors())
    assert offsets[0] == 0 and all(o % ALIGN == 0 for o in offsets) and total % ALIGN == 0
    assert offsets[1] == ALIGN  # 70 bytes of bf16 round up to one slot
    assert total == 6 * ALIGN  # the empty tensor takes no slot


def test_packed_copies_equal_the_originals_and_share_one_storage():
    src = _tensors()
    out = pack(src, torch.device("cpu"))
    ptr = out[0].untyped_storage().data_ptr()
    for t, p in zip(src, out):
        assert p.dtype == t.dtype and p.shape == t.shape and p.stride() == t.stride()
        assert torch.equal(p, t) and p.device.type == "cpu"
        assert p.untyped_storage().data_ptr() == ptr
    assert out[0].data_ptr() != src[0].data_ptr()  # copies, not the originals
    src[1].add_(1)
    assert not torch.equal(out[1], src[1])


def test_a_tied_tensor_gets_one_slot():
    w = torch.randn(4, 4)
    out = pack([w, torch.randn(2), w], torch.device("cpu"))
    assert out[0] is out[2] and torch.equal(out[0], w)


def test_a_packed_module_runs_unchanged():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    x = torch.randn(3, 8)
    with torch.no_grad():
        ref = net(x)
        params = list(net.parameters())
        for p, c in zip(params, pack(params, torch.device("cpu"))):
            p.data = c
        assert torch.equal(net(x), ref)
    assert len({p.untyped_storage().data_ptr() for p in net.parameters()}) == 1


def test_a_cuda_target_locks_the_buffer_once_and_unlocks_it_when_the_last_view_dies(monkeypatch):
    """The CUDA calls are replaced (no GPU here); what is checked is when they happen and on which bytes."""
    calls = []
    monkeypatch.setattr(arena, "_register_raw", lambda ptr, size: calls.append(("register", ptr, size)) or 0)
    monkeypatch.setattr(arena, "_unregister", lambda ptr, device: calls.append(("unregister", ptr, device)))
    src = _tensors()
    out = pack(src, torch.device("cuda:0"))
    _, total = layout(src)
    ptr = out[0].data_ptr()  # the first slot starts the locked range, on a page of its own
    assert calls == [("register", ptr, -(-total // PAGE) * PAGE)] and ptr % PAGE == 0
    assert all(torch.equal(p, t) for p, t in zip(out, src))
    keep = out[2]
    del out
    gc.collect()
    assert len(calls) == 1  # one view still alive
    del keep
    gc.collect()
    assert calls[1] == ("unregister", ptr, torch.device("cuda:0"))


def test_a_refused_registration_falls_back_to_one_pinned_buffer(monkeypatch):
    buffers = []

    def pinned_buffer(n):  # stands in for torch.empty(n, pin_memory=True), which needs a GPU
        buffers.append(torch.empty(n, dtype=torch.uint8))
        return buffers[-1]

    monkeypatch.setattr(arena, "_register_raw", lambda ptr, size: 801)  # cudaErrorNotSupported
    monkeypatch.setattr(arena, "_pinned_buffer", pinned_buffer)
    src = _tensors()
    out = pack(src, torch.device("cuda"))
    assert len(buffers) == 1 and buffers[0].numel() == layout(src)[1]
    assert all(p.untyped_storage().data_ptr() == buffers[0].data_ptr() for p in out)
    assert all(torch.equal(p, t) and p.stride() == t.stride() for p, t in zip(out, src))


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="reads Linux's mapping table")
def test_the_unlock_comes_before_the_memory_is_unmapped(monkeypatch):
    def mapped(ptr):
        with open("/proc/self/maps") as f:
            spans = [line.split()[0].split("-") for line in f]
        return any(int(a, 16) <= ptr < int(b, 16) for a, b in spans)

    seen = []
    monkeypatch.setattr(arena, "_register_raw", lambda ptr, size: 0)
    monkeypatch.setattr(arena, "_unregister", lambda ptr, device: seen.append(mapped(ptr)))
    out = pack([torch.randn(1 << 20)], torch.device("cuda"))
    ptr = out[0].data_ptr()
    del out
    gc.collect()
    assert seen == [True] and not mapped(ptr)
