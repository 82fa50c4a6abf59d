"""The guided model: the DiT wrapped as model(x, sigma) (the model edge: official time -> sigma), one per CFG
branch, combined by classifier-free guidance with truncation and renorm. Samplers see only the result."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from newbie.model.text import TextEmbeds


def velocity_fn(dit, embeds: TextEmbeds, rope, cache=None) -> Callable[[Tensor, float], Tensor]:
    """Wrap the DiT as model(x, sigma) -> dx/dsigma. The only place that knows the official convention
    (t = 1 - sigma, output = data - noise = -dx/dsigma). `cache`: an optional StepCache for this branch."""
    dtype = next(dit.parameters()).dtype
    cap_mask = None if bool(embeds.cap_mask.all()) else embeds.cap_mask  # no mask on the hot path

    def model(x: Tensor, sigma: float) -> Tensor:
        b = embeds.cap_feats.shape[0]
        t = torch.full((b,), 1.0 - sigma, device=x.device, dtype=torch.float32)
        rep = b // x.shape[0]
        v = dit(x.repeat(rep, 1, 1, 1).to(dtype), t, embeds.cap_feats, cap_mask, embeds.pooled, rope, cache)
        return -v.float()

    return model


def branch_model(
    dit, embeds: TextEmbeds, grid: tuple[int, int], device: torch.device, dtype: torch.dtype, cache=None
) -> Callable[[Tensor, float], Tensor]:
    """One CFG branch: its embeddings trimmed to the longest real caption, moved to the compute device and
    dtype, and its RoPE tables built once (not per step). grid: the latent patch grid (rows, cols)."""
    e = embeds.trimmed().to(device, dtype)
    rope = dit.rope(e.cap_mask.sum(1), e.cap_feats.shape[1], *grid)
    return velocity_fn(dit, e, rope, cache)


def cfg_model(
    dit,
    cond: TextEmbeds,
    uncond: TextEmbeds | None,
    grid: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype,
    scale: float,
    cfg_trunc: float = 1.0,
    renorm: float = 0.0,
    batching: str = "split",
    new_cache: Callable[[], object] = lambda: None,
) -> tuple[Callable[[Tensor, float], Tensor], list]:
    """The guided model of one device holding both branches -> (model, the branches' step caches).

    batching "split": cond and uncond as two unmasked forwards when their captions differ in length;
    "batched" (or equal lengths): one batch, padded and masked when needed. (A third way, both branches'
    tokens packed side by side in one forward, measured no gain and was dropped: docs/benchmarks.md.)"""
    caches = [new_cache()]
    model_cond = branch_model(dit, cond, grid, device, dtype, caches[0])
    if uncond is None:
        return model_cond, caches
    caches.append(new_cache())
    pair = TextEmbeds.cat([cond, uncond])
    if batching == "split" and not bool(pair.trimmed().cap_mask.all()):
        model_pair = split_pair(model_cond, branch_model(dit, uncond, grid, device, dtype, caches[1]))
    else:
        model_pair = branch_model(dit, pair, grid, device, dtype, caches[1])
    return guided(model_pair, model_cond, scale, cfg_trunc, renorm), caches


def split_pair(model_cond, model_uncond) -> Callable[[Tensor, float], Tensor]:
    """[cond; uncond] from two forwards. Used when the captions differ in length: each branch then runs
    with no attention mask, which is faster than one padded, masked batch (spec anchor: masked SDPA +65%)."""

    def model(x: Tensor, sigma: float) -> Tensor:
        return torch.cat([model_cond(x, sigma), model_uncond(x, sigma)])

    return model


def guided(
    model_pair: Callable[[Tensor, float], Tensor],
    model_cond: Callable[[Tensor, float], Tensor],
    scale: float,
    cfg_trunc: float = 1.0,
    renorm: float = 0.0,
) -> Callable[[Tensor, float], Tensor]:
    """CFG: uncond + scale * (cond - uncond) while t = 1 - sigma < cfg_trunc, the conditional branch alone after.

    model_pair(x, sigma) returns [cond; uncond] stacked on the batch (one forward for both branches).
    renorm > 0 caps each sample's guided norm at renorm * ||cond|| (norm over C, H, W).
    """

    def model(x: Tensor, sigma: float) -> Tensor:
        if scale == 1.0 or (1.0 - sigma) >= cfg_trunc:
            return model_cond(x, sigma)
        cond, uncond = model_pair(x, sigma).chunk(2)
        out = uncond + scale * (cond - uncond)
        if renorm > 0:
            dims = tuple(range(1, out.ndim))
            cond_norm = torch.linalg.vector_norm(cond, dim=dims, keepdim=True)
            out_norm = torch.linalg.vector_norm(out, dim=dims, keepdim=True)
            factor = torch.where(out_norm >= renorm * cond_norm, renorm * cond_norm / out_norm, 1.0)
            out = out * factor
        return out

    return model
