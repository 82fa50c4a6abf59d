"""The FLUX.1 16-channel autoencoder: diffusers' AutoencoderKL (DownEncoderBlock2D / UpDecoderBlock2D, one
single-head attention in each mid block) in plain PyTorch.

Module names are diffusers' own, so the same state dicts load with the same keys (loading/vae.py maps the
BFL/LDM names of ae.safetensors onto them), and every operation runs in diffusers' order, so outputs are
bit-identical to diffusers' (tests/model/test_autoencoder.py). Tiled encode and decode follow diffusers'
rules exactly (overlap 0.25, linear blends, the same crops). Importing this costs nothing beyond torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# config.json's "_diffusers_version": the diffusers release whose AutoencoderKL this mirrors (and whose
# save_pretrained wrote the same files)
DIFFUSERS_VERSION = "0.42.1"

_ACTIVATIONS = {"silu": nn.SiLU, "swish": nn.SiLU, "mish": nn.Mish, "gelu": nn.GELU, "relu": nn.ReLU}
_EPS = 1e-6  # every GroupNorm of the encoder and decoder


@dataclass(frozen=True)
class AutoencoderConfig:
    """vae/config.json. Defaults are diffusers' AutoencoderKL defaults, so a file that leaves a key out means
    what it meant there; FLUX.1's file sets them all (loading/data/flux1_vae_config.json)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple | list = ("DownEncoderBlock2D",)
    up_block_types: tuple | list = ("UpDecoderBlock2D",)
    block_out_channels: tuple | list = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int | list = 32
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    latents_mean: list | None = None
    latents_std: list | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    # the file's other keys ("_class_name", "_comment", ...), kept so that writers give them back
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> AutoencoderConfig:
        """From a parsed config.json (ValueError, from the checks below, names what cannot be built)."""
        if not isinstance(raw, dict):
            raise ValueError(f"VAE config must be a JSON object, got {type(raw).__name__}")
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        extra = {k: v for k, v in raw.items() if k not in names and k != "_use_default_values"}
        if "_class_name" in extra:
            extra["_class_name"] = "AutoencoderKL"
        return cls(**{k: raw[k] for k in names if k in raw}, extra=extra)

    def __post_init__(self) -> None:
        def count(name: str, value) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VAE config: {name} must be a positive integer, got {value!r}")

        channels = self.block_out_channels
        if not isinstance(channels, (list, tuple)) or not channels:
            raise ValueError(f"VAE config: block_out_channels must be a non-empty list, got {channels!r}")
        for name in ("in_channels", "out_channels", "layers_per_block", "latent_channels", "norm_num_groups"):
            count(name, getattr(self, name))
        for c in channels:
            count("block_out_channels", c)
            if c % self.norm_num_groups:
                raise ValueError(
                    f"VAE config: block_out_channels {list(channels)} must be multiples of "
                    f"norm_num_groups {self.norm_num_groups}"
                )
        for name, kind in (
            ("down_block_types", "DownEncoderBlock2D"),
            ("up_block_types", "UpDecoderBlock2D"),
        ):
            types = getattr(self, name)
            if not isinstance(types, (list, tuple)) or list(types) != [kind] * len(channels):
                raise ValueError(f"VAE config: {name} must be {len(channels)} x {kind}, got {types!r}")
        if self.act_fn not in _ACTIVATIONS:
            raise ValueError(f"VAE config: act_fn {self.act_fn!r} is not one of {', '.join(_ACTIVATIONS)}")

    def to_dict(self) -> dict:
        """The keys diffusers' `dict(vae.config)` holds: every field in order, then the file's other keys."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**out, **self.extra}

    def to_json(self) -> str:
        """config.json as diffusers' save_pretrained writes it."""
        out = {**self.to_dict(), "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION}
        return json.dumps(out, indent=2, sort_keys=True) + "\n"

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


# -- blocks, leaves first --


class ResnetBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, act: type[nn.Module]):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=_EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, cout, eps=_EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nonlinearity = act()
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Attention(nn.Module):
    """Single-head self-attention over all positions, with a residual (the LDM mid-block AttnBlock)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)  # (B, HW, C)
        # to_k/to_v are looked up at each call: the banded decode (parallel/vae.py) swaps them for versions
        # that return every band's positions, so keys may outnumber queries: (B, N, C), N >= HW
        q, k, v = (
            t.view(b, -1, 1, c).transpose(1, 2)
            for t in (self.to_q(tokens), self.to_k(tokens), self.to_v(tokens))
        )
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C)
        out = self.to_out[0](out.transpose(1, 2).reshape(b, -1, c))
        return out.transpose(-1, -2).reshape(b, c, h, w) + x


class MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, act: type[nn.Module], attention: bool):
        super().__init__()
        # built in diffusers' order (resnet, attention, resnet; registered attentions first), so that a
        # seeded random init and the state-dict order match theirs
        first = ResnetBlock2D(channels, channels, groups, act)
        attentions = [Attention(channels, groups)] if attention else []
        second = ResnetBlock2D(channels, channels, groups, act)
        self.attentions = nn.ModuleList(attentions)
        self.resnets = nn.ModuleList([first, second])

    def forward(self, x: Tensor) -> Tensor:
        x = self.resnets[0](x)
        if len(self.attentions):
            x = self.attentions[0](x)
        return self.resnets[1](x)


class Downsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric: one zero row/column after, none before


class Upsample2D(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        # diffusers makes the input contiguous where nearest interpolation needs it (a large batch; more than
        # 2^31 output elements); the same here, so that the memory layout (and so the kernels) match
        if x.shape[0] >= 64 or x.numel() * 2 > 2**31:
            x = x.contiguous()
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownEncoderBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, act, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if i == 0 else cout, cout, groups, act) for i in range(layers)]
        )
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.downsamplers is None else self.downsamplers[0](x)


class UpDecoderBlock2D(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, act, upsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if i == 0 else cout, cout, groups, act) for i in range(layers)]
        )
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if upsample else None

    def forward(self, x: Tensor) -> Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class Encoder(nn.Module):
    """Image (B, in, H, W) -> moments (B, 2 * latent, H/f, W/f): the posterior's mean, then its log-variance."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, groups, act = list(cfg.block_out_channels), cfg.norm_num_groups, _ACTIVATIONS[cfg.act_fn]
        self.conv_in = nn.Conv2d(cfg.in_channels, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [
                DownEncoderBlock2D(ch[max(i - 1, 0)], c, cfg.layers_per_block, groups, act, i < len(ch) - 1)
                for i, c in enumerate(ch)
            ]
        )
        self.mid_block = MidBlock(ch[-1], groups, act, cfg.mid_block_add_attention)
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=_EPS)
        self.conv_act = nn.SiLU()  # diffusers' choice whatever act_fn says
        self.conv_out = nn.Conv2d(ch[-1], 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder(nn.Module):
    """Latent (B, latent, h, w) -> image (B, out, h*f, w*f) in about [-1, 1]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, groups, act = (
            list(reversed(cfg.block_out_channels)),
            cfg.norm_num_groups,
            _ACTIVATIONS[cfg.act_fn],
        )
        self.conv_in = nn.Conv2d(cfg.latent_channels, ch[0], 3, padding=1)
        self.up_blocks = (
            nn.ModuleList()
        )  # registered before the mid block, as in diffusers (state-dict order)
        self.mid_block = MidBlock(ch[0], groups, act, cfg.mid_block_add_attention)
        for i, c in enumerate(ch):
            self.up_blocks.append(
                UpDecoderBlock2D(ch[max(i - 1, 0)], c, cfg.layers_per_block + 1, groups, act, i < len(ch) - 1)
            )
        self.conv_norm_out = nn.GroupNorm(groups, ch[-1], eps=_EPS)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(ch[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


# -- the autoencoder --


def _blend_v(a: Tensor, b: Tensor, extent: int) -> Tensor:
    """b's first rows faded in from a's last ones, in place. Row by row with Python-float weights, as
    diffusers does: a vectorised blend rounds differently in bf16."""
    extent = min(a.shape[2], b.shape[2], extent)
    for y in range(extent):
        b[:, :, y, :] = a[:, :, -extent + y, :] * (1 - y / extent) + b[:, :, y, :] * (y / extent)
    return b


def _blend_h(a: Tensor, b: Tensor, extent: int) -> Tensor:
    extent = min(a.shape[3], b.shape[3], extent)
    for x in range(extent):
        b[:, :, :, x] = a[:, :, :, -extent + x] * (1 - x / extent) + b[:, :, :, x] * (x / extent)
    return b


def _tiled(x: Tensor, fn, tile_in: int, tile_out: int, overlap: float) -> Tensor:
    """fn over overlapping tiles of x (tile_in wide, stepping by (1 - overlap) of that), each output tile
    (tile_out wide) blended into its upper and left neighbours and cropped; diffusers' tiled_decode and
    _tiled_encode. The blends change the tiles in place, so later rows blend with already blended ones."""
    step = int(tile_in * (1 - overlap))
    extent = int(tile_out * overlap)
    keep = tile_out - extent
    rows = [
        [fn(x[:, :, i : i + tile_in, j : j + tile_in]) for j in range(0, x.shape[3], step)]
        for i in range(0, x.shape[2], step)
    ]
    out = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = _blend_v(rows[i - 1][j], tile, extent)
            if j > 0:
                tile = _blend_h(row[j - 1], tile, extent)
            kept.append(tile[:, :, :keep, :keep])
        out.append(torch.cat(kept, dim=3))
    return torch.cat(out, dim=2)


class AutoencoderKL(nn.Module):
    """encode(image in [-1, 1]) -> the posterior's mode (its mean); decode(latent) -> image in about [-1, 1].
    Tiling (enable_tiling) runs inputs larger than tile_sample_min_size pixels (tile_latent_min_size latent
    pixels) in overlapping tiles: bounded memory, not bit-identical to a whole pass."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        moments, latent = 2 * config.latent_channels, config.latent_channels
        self.quant_conv = nn.Conv2d(moments, moments, 1) if config.use_quant_conv else None
        self.post_quant_conv = nn.Conv2d(latent, latent, 1) if config.use_post_quant_conv else None
        self.use_tiling = False
        size = config.sample_size
        self.tile_sample_min_size = size[0] if isinstance(size, (list, tuple)) else size
        self.tile_latent_min_size = int(self.tile_sample_min_size / config.downscale)
        self.tile_overlap_factor = 0.25

    def enable_tiling(self) -> None:
        self.use_tiling = True

    def disable_tiling(self) -> None:
        self.use_tiling = False

    def moments(self, x: Tensor) -> Tensor:
        """(B, in, H, W) -> (B, 2 * latent, H/f, W/f): the posterior's mean and log-variance (whole, untiled)."""
        x = self.encoder(x)
        return x if self.quant_conv is None else self.quant_conv(x)

    def _decoded(self, z: Tensor) -> Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode(self, x: Tensor) -> Tensor:
        """(B, in, H, W) -> (B, latent, H/f, W/f): the mean half of the moments."""
        size = self.tile_sample_min_size
        if self.use_tiling and (x.shape[-1] > size or x.shape[-2] > size):
            moments = _tiled(x, self.moments, size, self.tile_latent_min_size, self.tile_overlap_factor)
        else:
            moments = self.moments(x)
        return moments.chunk(2, dim=1)[0]

    def decode(self, z: Tensor) -> Tensor:
        size = self.tile_latent_min_size
        if self.use_tiling and (z.shape[-1] > size or z.shape[-2] > size):
            return _tiled(z, self._decoded, size, self.tile_sample_min_size, self.tile_overlap_factor)
        return self._decoded(z)
