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
    assert not any(b._forward_pre_hooks or b._forward_hooks for b in dit.layers)
