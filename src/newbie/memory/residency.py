"""Applying a memory plan to a loaded pipeline: where each component lives, per stage."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from newbie.memory.offload import BlockStreamer, Mover, Offloaded, Resident, unguard
from newbie.memory.planner import Plan


class Residency:
    """Stage manager: `with residency.stage("denoise"):` (stages "text", "denoise", "vae") brings that stage's weights in and, in a staged
    plan, sends them out afterwards. Streamed blocks come and go inside forward.

    A staged plan stages on every device, the CPU included: there the moves are free (the "device" copy is the
    CPU tensor itself) but the holders still swap weights and guard their stage, so CPU tests run the same
    code paths as a GPU and a module used outside its stage fails there too (offload.OffloadedUse)."""

    def __init__(self, pipe, plan: Plan):
        self.plan, self.device = plan, pipe.device
        self.streamers: list[BlockStreamer] = []
        dev = pipe.device
        gemma, jina, dit, vae = pipe.text.gemma, pipe.text.jina, pipe.dit, pipe.codec.vae
        for m in (gemma, jina, dit, vae):  # an earlier plan's guards
            unguard(m)
        if plan.quantize:
            from newbie.memory.quant import quantize_dit, quantize_gemma

            quantize_dit(dit, plan.quantize)
            quantize_gemma(gemma, plan.quantize)
        if plan.vae_tiling:
            # diffusers tiles only above its sample_size (1024 for FLUX): use 512 px tiles (64 latent) instead
            vae.enable_tiling()
            factor = 2 ** (len(vae.config.block_out_channels) - 1)
            vae.tile_sample_min_size, vae.tile_latent_min_size = 512, 512 // factor
        if plan.residency == "resident":
            holders = {
                "text": [Resident(gemma, dev), Resident(jina, dev)],
                "denoise": [Resident(dit, dev)],
                "vae": [Resident(vae, dev)],
            }
        else:
            keep_on_cpu = (gemma.embed_tokens,) if plan.gemma_embed_on_cpu else ()
            if plan.gemma_embed_on_cpu:
                gemma.embed_tokens.to("cpu")
            g_streamed, d_streamed = (
                self._stream(gemma.layers, plan.gemma_streamed, dev),
                self._stream(dit.layers, plan.dit_streamed, dev),
            )
            if plan.quantize:  # quantized blocks move with Module.to (tensor subclasses)
                text = [
                    Mover(gemma.layers, dev, "text"),
                    Offloaded(gemma, dev, exclude=(gemma.layers, *keep_on_cpu), stage="text"),
                ]
            else:
                text = [Offloaded(gemma, dev, exclude=(*g_streamed, *keep_on_cpu), stage="text")]
            denoise = (
                [Mover(dit, dev, "denoise")]
                if plan.quantize
                else [Offloaded(dit, dev, exclude=tuple(d_streamed), stage="denoise")]
            )
            holders = {
                "text": text + [Offloaded(jina, dev, stage="text")],
                "denoise": denoise,
                "vae": [Offloaded(vae, dev, stage="vae")],
            }
        self.holders = holders
        self.staged = plan.residency == "staged"

    def _stream(self, blocks, n: int, device) -> list:
        count = len(blocks)
        n = min(n, count)  # a plan made for a deeper model streams all of a shallower one
        if n <= 0:
            return []
        # spread the streamed blocks evenly so each copy overlaps with the compute of resident ones
        streamed = sorted({round(i * count / n) for i in range(n)})[:n]
        self.streamers.append(BlockStreamer(blocks, device, resident=set(range(count)) - set(streamed)))
        return [blocks[i] for i in streamed]

    @contextmanager
    def stage(self, name: str):
        for h in self.holders[name]:
            h.load()
        try:
            yield
        finally:
            if self.staged:
                for h in self.holders[name]:
                    h.unload()
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
