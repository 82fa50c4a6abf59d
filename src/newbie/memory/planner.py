"""The memory planner: pick precision, residency, streaming, tiling and quantization to fit a VRAM budget.

Sizes come from the component configs; activation terms are estimates per stage (text encode, denoise,
VAE decode), calibrated on a GPU by bench/memory_plans.py (docs/benchmarks.md, Memory plans). The planner prefers, in
order: everything resident; one stage at a time (staged); staged with part of the DiT / Gemma streamed from
pinned CPU memory; int8 weights; everything streamed. Offloaded and streamed plans are bit-identical to
resident ones; quantization and VAE tiling are not, and the benchmark reports their PSNR.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from newbie.errors import NewbieError

GIB = 2**30


@dataclass(frozen=True)
class ComponentSizes:
    """Bytes at bf16 (VAE at fp32) and the layer structure the streamer works on."""

    dit_blocks: int = 3_473_000_000 * 2  # the 36 layers + 4 refiners
    dit_other: int = 13_600_000 * 2  # embedders, final layer
    dit_layers: int = 36
    gemma_layers_bytes: int = 3_209_000_000 * 2
    gemma_embed: int = 262_208 * 2560 * 2
    gemma_layer_count: int = 34
    jina: int = 558_000_000 * 2
    vae: int = 84_000_000 * 4
    dim: int = 2304

    @classmethod
    def of(cls, pipe) -> ComponentSizes:
        nbytes = lambda params: sum(p.numel() * p.element_size() for p in params)  # noqa: E731
        dit, gemma = pipe.dit, pipe.text.gemma
        blocks = list(dit.blocks())
        block_bytes = nbytes(p for b in blocks for p in b.parameters())
        return cls(
            dit_blocks=block_bytes,
            dit_other=nbytes(dit.parameters()) - block_bytes,
            dit_layers=len(dit.layers),
            gemma_layers_bytes=nbytes(gemma.layers.parameters()),
            gemma_embed=nbytes(gemma.embed_tokens.parameters()),
            gemma_layer_count=len(gemma.layers),
            jina=nbytes(pipe.text.jina.parameters()),
            vae=nbytes(pipe.codec.vae.parameters()),
            dim=dit.cfg.dim,
        )


@dataclass(frozen=True)
class Plan:
    name: str
    residency: str = "resident"  # "resident": all on the GPU between calls; "staged": one stage at a time
    quantize: str | None = None  # weight-only int8/fp8 for the DiT and Gemma blocks
    dit_streamed: int = 0  # DiT joint layers streamed from pinned CPU memory (the others stay resident)
    gemma_streamed: int = 0  # Gemma layers streamed
    gemma_embed_on_cpu: bool = False  # the 1.3 GB embedding table looked up on the CPU
    vae_tiling: bool = False
    predicted_peak_gib: float = 0.0
    stages: tuple = ()  # (stage, predicted GiB) for the printout
    budget_gib: float | None = None  # the budget it was chosen for (None: not from a budget)

    @property
    def bit_identical(self) -> bool:
        return self.quantize is None and not self.vae_tiling

    def describe(self) -> str:
        parts = [f"plan '{self.name}': {self.residency}"]
        if self.quantize:
            parts.append(f"{self.quantize} weights (DiT and Gemma blocks)")
        if self.dit_streamed:
            parts.append(f"{self.dit_streamed} DiT layers streamed")
        if self.gemma_streamed:
            parts.append(f"{self.gemma_streamed} Gemma layers streamed")
        if self.gemma_embed_on_cpu:
            parts.append("Gemma embeddings on CPU")
        if self.vae_tiling:
            parts.append("VAE tiled")
        stages = ", ".join(f"{s} {g:.1f}" for s, g in self.stages)
        return f"{'; '.join(parts)}; predicted peak {self.predicted_peak_gib:.1f} GiB ({stages})"


def parse_vram(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(g|gb|gib)?\s*", str(text).lower())
    if not m:
        raise NewbieError(f"--vram must look like 8GB or 12, got '{text}'")
    value = float(m.group(1))
    if value <= 0:
        raise NewbieError(f"--vram must be positive, got '{text}'")
    return value


def _act_dit(tokens: int, dim: int) -> float:
    # one CFG branch at a time (split mode): hidden states, norms, qkv and the SwiGLU intermediate, bf16
    return (tokens * dim * 2 * 24 + 64 * 2**20) / GIB


def _act_vae(width: int, height: int, tiled: bool) -> float:
    # fp32 decoder activations: about ten 128-channel full-resolution maps alive at once (the measured peak:
    # docs/benchmarks.md, "Figures behind the code"); tiles of 512 px bound it
    w, h = (min(width, 512), min(height, 512)) if tiled else (width, height)
    return (w * h * 128 * 4 * 10) / GIB + 0.1


def _act_text() -> float:
    return 0.6  # 512 tokens through Gemma and Jina, plus the output features


def _stages(
    s: ComponentSizes, p: Plan, width: int, height: int, caption: int, batch: int = 1
) -> list[tuple[str, float]]:
    # the DiT runs the whole batch at once; the text encoders and the VAE take one image at a time
    tokens = batch * (caption + (width // 16) * (height // 16))
    q = 0.5 if p.quantize else 1.0
    layer = s.dit_blocks / (s.dit_layers + 4)
    dit_w = (
        s.dit_blocks * q - p.dit_streamed * layer * q + (3 * layer if p.dit_streamed else 0) + s.dit_other
    ) / GIB
    g_layer = s.gemma_layers_bytes / s.gemma_layer_count
    gemma_w = (
        s.gemma_layers_bytes * q
        - p.gemma_streamed * g_layer * q
        + (3 * g_layer if p.gemma_streamed else 0)
        + (0 if p.gemma_embed_on_cpu else s.gemma_embed)
    ) / GIB
    text = gemma_w + s.jina / GIB + _act_text()
    dit = dit_w + _act_dit(tokens, s.dim)
    vae = s.vae / GIB + _act_vae(width, height, p.vae_tiling)
    if p.residency == "resident":
        resident = text - _act_text() + dit_w + s.vae / GIB
        return [
            ("text", resident + _act_text()),
            ("denoise", resident + _act_dit(tokens, s.dim)),
            ("decode", resident + _act_vae(width, height, p.vae_tiling)),
        ]
    # staged: the embeddings (tiny) stay on the GPU; each stage holds only its own weights
    return [("text", text), ("denoise", dit), ("decode", vae)]


def _with_peak(s: ComponentSizes, p: Plan, width: int, height: int, caption: int, batch: int = 1) -> Plan:
    stages = _stages(s, p, width, height, caption, batch)
    return replace(p, predicted_peak_gib=max(g for _, g in stages), stages=tuple(stages))


def candidates(s: ComponentSizes) -> list[Plan]:
    """From fastest to smallest. Streaming plans stream as few layers as the budget allows."""
    out = [Plan("resident"), Plan("staged", residency="staged")]
    for n in range(4, s.dit_layers + 1, 4):  # bf16, part of the DiT (and Gemma) streamed
        g = min(s.gemma_layer_count, round(n * s.gemma_layer_count / s.dit_layers))
        out.append(
            Plan(f"stream-{n}", residency="staged", dit_streamed=n, gemma_streamed=g, gemma_embed_on_cpu=True)
        )
        if n >= s.dit_layers // 3:  # beyond a third, int8 weights cost less time than more streaming
            break
    out.append(Plan("int8", residency="staged", quantize="int8", gemma_embed_on_cpu=True, vae_tiling=True))
    out.append(
        Plan(
            "stream-all",
            residency="staged",
            dit_streamed=s.dit_layers,
            gemma_streamed=s.gemma_layer_count,
            gemma_embed_on_cpu=True,
            vae_tiling=True,
        )
    )
    return out


def plan_for(
    vram_gib: float,
    width: int = 1024,
    height: int = 1024,
    sizes: ComponentSizes | None = None,
    caption_tokens: int = 256,
    batch: int = 1,
) -> Plan:
    """The first candidate whose predicted peak fits 93% of the budget (the rest: CUDA context, fragmentation)."""
    s = sizes or ComponentSizes()
    usable = vram_gib * 0.93
    plans = [
        replace(_with_peak(s, p, width, height, caption_tokens, batch), budget_gib=vram_gib)
        for p in candidates(s)
    ]
    for p in plans:
        if p.predicted_peak_gib <= usable:
            return p
    smallest = plans[-1]
    what = f"{width}x{height}" + (f" x{batch}" if batch > 1 else "")
    raise NewbieError(
        f"no plan fits {vram_gib:g} GiB at {what}: the smallest ('{smallest.name}') "
        f"needs about {smallest.predicted_peak_gib:.1f} GiB"
    )


def rank(plan: Plan, sizes: ComponentSizes | None = None) -> int:
    """Position of a plan in the candidates, from the fastest (0) to the smallest."""
    names = [p.name for p in candidates(sizes or ComponentSizes())]
    return names.index(plan.name) if plan.name in names else 0


def step_down(plan: Plan, width: int, height: int, sizes: ComponentSizes | None = None) -> Plan | None:
    """The next smaller plan after an out-of-memory error, or None when there is none."""
    s = sizes or ComponentSizes()
    plans = candidates(s)
    names = [p.name for p in plans]
    i = names.index(plan.name) if plan.name in names else -1
    if i + 1 >= len(plans):
        return None
    return replace(_with_peak(s, plans[i + 1], width, height, 256), budget_gib=plan.budget_gib)


def free_vram_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return free / GIB
