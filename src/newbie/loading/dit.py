"""Loading the NextDiT_CLIP transformer: official keys, the diffusers (Disty0) layout, or one file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from newbie.config import DiTConfig
from newbie.errors import CheckpointError
from newbie.loading.safetensors_io import load_tensors, read_headers, weight_files
from newbie.model.dit import NextDiT

# Keys in the official checkpoint that the reference forward never reads.
IGNORED_KEYS = {"norm_final.weight"}
PREFIXES = ("model.diffusion_model.", "inner_model.")

# diffusers Lumina2 (Disty0 conversion, spec §1.3) -> official names; applied in order, each at most once.
DIFFUSERS_RENAMES = [
    (r"^time_caption_embed\.caption_embedder\.", "cap_embedder."),
    (r"^time_caption_embed\.timestep_embedder\.linear_1\.", "t_embedder.mlp.0."),
    (r"^time_caption_embed\.timestep_embedder\.linear_2\.", "t_embedder.mlp.2."),
    (r"^time_caption_embed\.(clip_text_pooled_proj|time_text_embed)\.", r"\1."),
    (r"^norm_out\.linear_1\.", "final_layer.adaLN_modulation.1."),
    (r"^norm_out\.linear_2\.", "final_layer.linear."),
    (r"\.attn\.to_out\.0\.", ".attention.out."),
    (r"\.attn\.norm_q\.", ".attention.q_norm."),
    (r"\.attn\.norm_k\.", ".attention.k_norm."),
    (r"\.feed_forward\.linear_(\d)\.", r".feed_forward.w\1."),
    (r"\.norm1\.linear\.", ".adaLN_modulation.1."),
    (r"\.norm1\.norm\.", ".attention_norm1."),
    (r"\.norm1\.", ".attention_norm1."),
    (r"\.norm2\.", ".attention_norm2."),
]
_QKV = re.compile(r"^(.*)\.attn\.to_([qkv])\.weight$")

# transformer/config.json spellings -> DiTConfig fields (official converter and diffusers Lumina2 names)
CONFIG_KEYS = {
    "dim": "dim",
    "hidden_size": "dim",
    "n_layers": "n_layers",
    "num_layers": "n_layers",
    "n_refiner_layers": "n_refiner_layers",
    "num_refiner_layers": "n_refiner_layers",
    "n_heads": "n_heads",
    "num_attention_heads": "n_heads",
    "n_kv_heads": "n_kv_heads",
    "num_kv_heads": "n_kv_heads",
    "patch_size": "patch_size",
    "in_channels": "in_channels",
    "cap_feat_dim": "cap_feat_dim",
    "clip_text_dim": "clip_text_dim",
    "pooled_projection_dim": "clip_text_dim",
    "multiple_of": "multiple_of",
    "ffn_dim_multiplier": "ffn_dim_multiplier",
    "norm_eps": "norm_eps",
    "axes_dims": "axes_dims",
    "axes_dim_rope": "axes_dims",
    "axes_lens": "axes_lens",
}


def is_diffusers_layout(keys) -> bool:
    return any(k.startswith("time_caption_embed.") or ".attn.to_q." in k for k in keys)


def rename_diffusers_key(key: str) -> str:
    for pattern, repl in DIFFUSERS_RENAMES:
        key = re.sub(pattern, repl, key, count=1)
    return key


def config_from_json(path: Path, base: DiTConfig) -> DiTConfig:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable config ({e})") from None
    changes = {}
    for k, v in raw.items():
        field = CONFIG_KEYS.get(k)
        if field and (v is not None or field == "ffn_dim_multiplier"):
            changes[field] = tuple(v) if isinstance(v, list) else v
    try:
        return base.replace(**changes)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: inconsistent transformer config ({e})") from None


def dit_source(path: Path) -> tuple[list[Path], Path | None]:
    """Weight files and config.json for a model folder, a transformer folder or a single .safetensors file
    (its config: the `<name>.config.json` sidecar when there is one, else the spec's with counted layers)."""
    if path.is_file():
        from newbie.loading.comfy import sidecar_config

        return [path], sidecar_config(path)
    folder = path / "transformer" if (path / "transformer").is_dir() else path
    cfg = folder / "config.json"
    return weight_files(folder), cfg if cfg.is_file() else None


def _normalize_keys(keys) -> dict[str, str]:
    """Checkpoint key -> official key (prefix stripped, diffusers names mapped; q/k/v keep a marker)."""
    diffusers = is_diffusers_layout(keys)
    out = {}
    for k in keys:
        name = k
        for p in PREFIXES:
            if name.startswith(p):
                name = name[len(p) :]
                break
        if diffusers:
            m = _QKV.match(name)
            name = (
                f"{rename_diffusers_key(m.group(1) + '.x')[:-2]}.attention.qkv.weight#{m.group(2)}"
                if m
                else rename_diffusers_key(name)
            )
        out[k] = name
    return out


def expected_shapes(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = NextDiT(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def check_dit_keys(headers: dict[str, dict], cfg: DiTConfig, where: str) -> dict[str, str]:
    """Raise CheckpointError naming missing/unexpected/mis-shaped keys; return the checkpoint->official map."""
    names = _normalize_keys(headers.keys())
    shapes: dict[str, tuple] = {}
    for ck, name in names.items():
        base, _, part = name.partition("#")
        shape = headers[ck]["shape"]
        if part:  # diffusers q/k/v rows are concatenated into one qkv weight
            prev = shapes.get(base)
            shape = (shape[0] + (prev[0] if prev else 0), *shape[1:])
        shapes[base] = shape
    want = expected_shapes(cfg)
    got = {k: v for k, v in shapes.items() if k not in IGNORED_KEYS}
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_few(unexpected)}")
        raise CheckpointError(f"{where}: transformer weights do not match NextDiT_CLIP ({'; '.join(parts)})")
    bad = [f"{k} {got[k]} != {want[k]}" for k in sorted(want) if tuple(got[k]) != want[k]]
    if bad:
        raise CheckpointError(f"{where}: transformer tensor shape mismatch: {_few(bad)}")
    return names


def infer_layer_counts(headers: dict[str, dict], cfg: DiTConfig) -> DiTConfig:
    """Without a config.json, layer counts come from the keys (the widths are then checked, not guessed)."""
    names = _normalize_keys(headers.keys()).values()
    layers = {int(m.group(1)) for n in names if (m := re.match(r"^layers\.(\d+)\.", n))}
    refiners = {int(m.group(1)) for n in names if (m := re.match(r"^noise_refiner\.(\d+)\.", n))}
    changes = {}
    if layers:
        changes["n_layers"] = max(layers) + 1
    if refiners:
        changes["n_refiner_layers"] = max(refiners) + 1
    return cfg.replace(**changes)


def dit_config(path: Path, base: DiTConfig) -> DiTConfig:
    """The transformer's config without reading its weights: its config.json (or sidecar), else `base` with the
    layer counts of its keys."""
    files, cfg_path = dit_source(path)
    return config_from_json(cfg_path, base) if cfg_path else infer_layer_counts(read_headers(files), base)


def load_dit(
    path: Path, base: DiTConfig, dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu"
) -> NextDiT:
    """Build on meta, load strictly in `dtype`, shapes checked against the config."""
    files, cfg_path = dit_source(path)
    headers = read_headers(files)
    cfg = config_from_json(cfg_path, base) if cfg_path else infer_layer_counts(headers, base)
    try:
        names = check_dit_keys(headers, cfg, str(files[0] if len(files) == 1 else files[0].parent))
    except CheckpointError as e:
        if cfg_path is not None or not path.is_file():
            raise
        from newbie.loading.comfy import SIDECAR_SUFFIX

        side = path.name.removesuffix(".safetensors") + SIDECAR_SUFFIX
        raise CheckpointError(
            f"{e}; a transformer of another size than NewBie Exp0.1 needs its config.json beside it as "
            f"{side} (`newbie convert MODEL --to comfy OUT` writes one)"
        ) from None
    raw = load_tensors(files, dtype=dtype, device=device)
    sd: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for ck, tensor in raw.items():
        name = names[ck]
        base_name, _, part = name.partition("#")
        if base_name in IGNORED_KEYS:
            continue
        if part:
            qkv_parts.setdefault(base_name, {})[part] = tensor
        else:
            sd[base_name] = tensor
    for name, parts in qkv_parts.items():
        sd[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    with torch.device("meta"):
        model = NextDiT(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
