"""The VAE decode split across the processes of one sequence-parallel group, exactly.

Each rank decodes a horizontal band of latent rows (uneven bands allowed). Overlapping tiles would change the
picture: the FLUX decoder's GroupNorms normalise over the whole image and its mid-block attends over every
position. So the bands share what crosses them instead, and the result equals the one-process decode up to
float rounding:
- every 3x3 convolution reads one halo row from each neighbour (zeros at the image's top and bottom edge,
  which is the convolution's own zero padding);
- every GroupNorm takes its mean and variance over all bands (two all_reduces of per-group sums);
- the mid-block attention's keys and values are all-gathered, so each band's queries see every position.
Nearest-neighbour upsampling, 1x1 convolutions and activations are row-local and run unchanged. At the end
the bands' pixel rows are all-gathered, so every rank holds the image (the pipeline's checks run everywhere).

The decoder (model/autoencoder.py) runs its own forward; only its leaf modules are swapped for banded wrappers
during the call and restored after.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from newbie.model.autoencoder import Attention
from newbie.parallel.sequence import SequenceGroup, all_gather_uneven, shard_sizes


class Band:
    """This rank's rows of one decode: `rows[r]` latent rows for rank r (every rank at least one)."""

    def __init__(self, sp: SequenceGroup, rows: list[int]):
        self.sp, self.rows = sp, rows

    def _all_gather(self, x: Tensor) -> list[Tensor]:
        parts = [torch.empty_like(x) for _ in range(self.sp.world)]
        dist.all_gather(parts, x.contiguous(), group=self.sp.group)
        return parts

    def halo(self, x: Tensor) -> Tensor:
        """(B, C, h, W) -> (B, C, h + 2, W): the row above from the previous band, the row below from the
        next one, zeros at the image edges."""
        edges = self._all_gather(torch.cat([x[:, :, :1], x[:, :, -1:]], dim=2))
        r, last = self.sp.rank, self.sp.world - 1
        top = edges[r - 1][:, :, 1:2] if r > 0 else torch.zeros_like(x[:, :, :1])
        bottom = edges[r + 1][:, :, 0:1] if r < last else torch.zeros_like(x[:, :, :1])
        return torch.cat([top, x, bottom], dim=2)

    def all_reduce(self, x: Tensor) -> Tensor:
        dist.all_reduce(x, group=self.sp.group)
        return x

    def gather_rows(self, x: Tensor, dim: int, scale: int) -> Tensor:
        """Concatenate every band's x along `dim`, where band r has rows[r] * scale entries there (all_gather
        wants equal shapes: pad to the longest band, trim after)."""
        return all_gather_uneven(x, [n * scale for n in self.rows], dim, self.sp.group)


class HaloConv(nn.Module):
    """A stride-1 'same' convolution over a band: halo rows replace the vertical zero padding."""

    def __init__(self, conv: nn.Conv2d, band: Band):
        super().__init__()
        self.conv, self.band = conv, band

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv  # padding 1 (checked in wrappers): one halo row each side
        return F.conv2d(
            self.band.halo(x), c.weight, c.bias, c.stride, (0, c.padding[1]), c.dilation, c.groups
        )


class SharedGroupNorm(nn.Module):
    """GroupNorm whose statistics cover every band: the mean first, then the centred variance (as accurate
    as the one-process kernel), computed in fp32."""

    def __init__(self, norm: nn.GroupNorm, band: Band):
        super().__init__()
        self.norm, self.band = norm, band

    def forward(self, x: Tensor) -> Tensor:
        n = self.norm
        b, c = x.shape[:2]
        xf = x.float().reshape(b, n.num_groups, -1)
        sums = torch.cat([xf.sum(-1).flatten(), xf.new_tensor([xf.shape[-1]])])
        sums = self.band.all_reduce(sums)
        count = sums[-1]
        mean = (sums[:-1] / count).view(b, n.num_groups, 1)
        centred = xf - mean
        var = self.band.all_reduce(centred.pow(2).sum(-1)) / count
        y = (centred * torch.rsqrt(var[..., None] + n.eps)).view(x.shape)
        if n.affine:
            shape = (1, c) + (1,) * (x.ndim - 2)
            y = y * n.weight.float().view(shape) + n.bias.float().view(shape)
        return y.to(x.dtype)


class GatheredRows(nn.Module):
    """A key or value projection whose output holds every band's positions (B, N_all, C) in image order."""

    def __init__(self, linear: nn.Module, band: Band):
        super().__init__()
        self.linear, self.band = linear, band

    def forward(self, x: Tensor) -> Tensor:  # (B, rows_mine * W, C_in), at latent resolution
        width = x.shape[1] // self.band.rows[self.band.sp.rank]
        return self.band.gather_rows(self.linear(x), dim=1, scale=width)


def wrappers(decoder: nn.Module, band: Band) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, child name, replacement) for every module of the decoder that crosses band edges."""
    out = []
    for parent in list(decoder.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.padding[0] > 0:
                if (
                    child.stride != (1, 1)
                    or child.dilation != (1, 1)
                    or child.padding[0] != 1
                    or child.padding_mode != "zeros"
                ):
                    raise ValueError(f"banded decode: unsupported convolution {name} {child}")
                out.append((parent, name, HaloConv(child, band)))
            elif isinstance(child, nn.GroupNorm):
                out.append((parent, name, SharedGroupNorm(child, band)))
            elif isinstance(parent, Attention) and name in ("to_k", "to_v"):
                out.append((parent, name, GatheredRows(child, band)))
    return out


@contextmanager
def banded(decoder: nn.Module, band: Band):
    """The decoder with its band-crossing modules swapped for the wrappers, restored on exit."""
    swaps = wrappers(decoder, band)
    originals = [(parent, name, getattr(parent, name)) for parent, name, _ in swaps]
    try:
        for parent, name, new in swaps:
            setattr(parent, name, new)
        yield
    finally:
        for parent, name, old in originals:
            setattr(parent, name, old)


class BandCodec:
    """A LatentCodec whose decode is shared by the ranks of `sp` (everything else is the wrapped codec's).
    Every rank of the group must call decode with the same latents; each returns the whole image."""

    def __init__(self, codec, sp: SequenceGroup):
        self.codec, self.sp = codec, sp

    def __getattr__(self, name):
        return getattr(self.codec, name)

    @torch.no_grad()
    def decode(self, latent: Tensor) -> Tensor:
        codec = self.codec
        rows = shard_sizes(latent.shape[2], self.sp.world)
        if min(rows) < 1:  # fewer latent rows than ranks: each rank decodes the whole (tiny) image
            return codec.decode(latent)
        band = Band(self.sp, rows)
        start = sum(rows[: self.sp.rank])
        # the same arithmetic as LatentCodec.decode, on this band's rows
        z = latent.to(codec.dtype)[:, :, start : start + rows[self.sp.rank]] / codec.cfg.scaling_factor
        z = z + codec.cfg.shift_factor
        vae, images = codec.vae, []
        with banded(vae.decoder, band):
            for one in z.split(1):  # one image at a time, as LatentCodec.decode (activation memory)
                if vae.post_quant_conv is not None:  # 1x1: row-local
                    one = vae.post_quant_conv(one)
                mine = vae.decoder(one)
                scale = mine.shape[2] // rows[self.sp.rank]
                images.append(band.gather_rows(mine, dim=2, scale=scale).float())
        return ((torch.cat(images) + 1) / 2).clamp(0, 1)
