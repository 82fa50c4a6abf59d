"""Offloading and block streaming (newbie.memory.offload) change where weights live, never the result."""

import torch

from newbie.memory.offload import BlockStreamer, Offloaded


def test_offload_and_streaming_are_bit_identical(tiny_pipeline):
    dit = tiny_pipeline.dit
    g = torch.Generator().manual_seed(int(torch.randint(0, 999, ())))
    x, t = torch.randn(1, 16, 8, 8, generator=g), torch.rand(1, generator=g)
    cap, pooled = (
        torch.randn(1, 6, dit.cfg.cap_feat_dim, generator=g),
        torch.randn(1, dit.cfg.clip_text_dim, generator=g),
    )
    with torch.no_grad():
        ref = dit(x, t, cap, None, pooled)
        streamer = BlockStreamer(dit.layers, torch.device("cpu"), resident={0})
        holder = Offloaded(dit, torch.device("cpu"), exclude=tuple(dit.layers[i] for i in streamer.streamed))
        holder.load()
        out = dit(x, t, cap, None, pooled)
        holder.unload()
        streamer.remove()
    assert torch.equal(out, ref)
    # each holder's CPU copies live in one arena (newbie.memory.arena): one storage per holder
    streamed = {id(p) for i in streamer.streamed for p in dit.layers[i].parameters()}
    arenas = {p.untyped_storage().data_ptr() for p in dit.parameters() if id(p) in streamed}
    rest = {p.untyped_storage().data_ptr() for p in dit.parameters() if id(p) not in streamed}
    assert len(arenas) == 1 and len(rest) == 1 and arenas != rest
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in dit.layers)


def test_streaming_prefetches_only_the_blocks_a_forward_reaches():
    """A forward that stops early (the text encoder runs the layers before its hidden state) leaves no block
    it never reaches prefetched on the device: the plan's allowance of in-use + prefetched blocks holds."""
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(6))
    streamer = BlockStreamer(blocks, torch.device("cpu"), resident=set(), prefetch=2)
    x = torch.randn(2, 4)
    with torch.no_grad():
        for _ in range(3):  # three forwards through the first 4 blocks only
            h = x
            for b in blocks[:4]:
                h = b(h)
                assert len(streamer.inflight) <= 2
    assert set(streamer.inflight) <= {0, 1}  # wrapping to the next forward's first blocks, not to 4 or 5
    ref = x
    for b in blocks[:4]:
        ref = b(ref)
    assert torch.equal(h, ref)
    streamer.remove()
