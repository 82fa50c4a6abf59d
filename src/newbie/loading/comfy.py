"""ComfyUI single files (the Comfy-Org repack of NewBie Exp0.1): telling the formats apart, finding the files
in a ComfyUI models/ folder, and what these files leave out (configs) or name differently (the BFL VAE keys).

Facts and the choices made where the files are silent: docs/decisions.md, "ComfyUI files".
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

from newbie.errors import CheckpointError, NewbieError
from newbie.loading.safetensors_io import read_header

# A single file carries no config. `<name>.config.json` beside `<name>.safetensors` (the folder layout's
# config.json of that component) describes a model of another size; without it the file is read as the
# architecture the repack ships: NewBie Exp0.1's DiT, Gemma3-4B-it, Jina CLIP v2, the FLUX.1 VAE.
SIDECAR_SUFFIX = ".config.json"
FLUX_VAE_CONFIG = Path(__file__).resolve().parent / "data" / "flux1_vae_config.json"

FORMATS = {
    "folder": "folder (official/diffusers layout)",
    "nextdit": "single file, NextDiT keys (official / ComfyUI)",
    "nextdit-prefixed": "single file, NextDiT keys under model.diffusion_model. (ComfyUI)",
    "lumina2": "single file, diffusers Lumina2 keys",
    "comfy-gemma3": "ComfyUI Gemma3 file (model.* keys, embedded SentencePiece tokenizer)",
    "comfy-jina": "ComfyUI Jina CLIP v2 file (model.* keys, embedded SentencePiece tokenizer)",
    "bfl-vae": "single file, BFL/LDM autoencoder keys (ae.safetensors)",
    "diffusers-vae": "single file, diffusers AutoencoderKL keys",
    "unknown": "single file of unknown layout",
}

# ComfyUI models/ subfolders and the file names the official template uses, then looser patterns.
COMFY_SEARCH: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "transformer": (
        ("diffusion_models", "unet"),
        ("NewBie-Image-Exp0.1-bf16.safetensors", "*newbie*.safetensors"),
    ),
    "text_encoder": (
        ("text_encoders", "clip"),
        ("gemma_3_4b_it_bf16.safetensors", "gemma*3*4b*.safetensors"),
    ),
    "clip_model": (("text_encoders", "clip"), ("jina_clip_v2_bf16.safetensors", "jina*clip*.safetensors")),
    "vae": (("vae",), ("ae.safetensors", "flux*vae*.safetensors", "flux*ae*.safetensors")),
}


def sidecar_config(path: Path) -> Path | None:
    side = path.with_name(path.name.removesuffix(".safetensors") + SIDECAR_SUFFIX)
    return side if side.is_file() else None


def file_format(keys) -> str:
    keys = set(keys)
    if "cap_embedder.1.weight" in keys:
        return "nextdit"
    if "model.diffusion_model.cap_embedder.1.weight" in keys:
        return "nextdit-prefixed"
    if any(k.startswith("time_caption_embed.") for k in keys):
        return "lumina2"
    if "model.layers.0.self_attn.q_norm.weight" in keys and "model.embed_tokens.weight" in keys:
        return "comfy-gemma3"
    if "model.encoder.layers.0.mixer.Wqkv.weight" in keys:
        return "comfy-jina"
    if is_bfl_vae(keys):
        return "bfl-vae"
    if any(k.startswith("encoder.down_blocks.") for k in keys):
        return "diffusers-vae"
    return "unknown"


# which component each recognised file format is, and the flag that takes it
ROLES = {
    "nextdit": "transformer",
    "nextdit-prefixed": "transformer",
    "lumina2": "transformer",
    "comfy-gemma3": "text_encoder",
    "comfy-jina": "clip_model",
    "bfl-vae": "vae",
    "diffusers-vae": "vae",
}
FLAGS = {
    "transformer": "--model",
    "text_encoder": "--text-encoder",
    "clip_model": "--clip-model",
    "vae": "--vae",
}


def check_role(path: Path, component: str) -> None:
    """A single file recognisably of another component (the Jina file given as --text-encoder, ...) is named
    as such, instead of failing later on keys that can never match."""
    if not path.is_file():
        return
    try:
        fmt = file_format(read_header(path))
    except CheckpointError:
        return  # a damaged file: its loader names the damage
    role = ROLES.get(fmt)
    if role is not None and role != component:
        raise NewbieError(
            f"{path}: this is a {FORMATS[fmt]}; give it as {FLAGS[role]}, not {FLAGS[component]}"
        )


def describe(path: Path, headers: dict) -> str:
    """A component's format in words, for `newbie inspect`, from its already read header."""
    return FORMATS["folder"] if path.is_dir() else FORMATS[file_format(headers)]


# -- finding the files in a ComfyUI models/ folder --


def is_comfy_dir(path: Path) -> bool:
    return (
        path.is_dir()
        and not (path / "transformer").is_dir()
        and any((path / d).is_dir() for d in ("diffusion_models", "unet", "text_encoders", "clip"))
    )


def find_comfy_files(root: str | Path) -> tuple[dict[str, Path | None], dict[str, str]]:
    """component -> file (None where nothing matched), and component -> a note saying which file it took."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise NewbieError(f"--comfy-dir {root}: no such folder")
    if not any((root / d).is_dir() for d in ("diffusion_models", "unet", "text_encoders", "clip", "vae")):
        raise NewbieError(
            f"--comfy-dir {root}: not a ComfyUI models folder (no diffusion_models/, text_encoders/, "
            "clip/ or vae/ inside)"
        )
    found: dict[str, Path | None] = {}
    notes: dict[str, str] = {}
    for component, (subdirs, patterns) in COMFY_SEARCH.items():
        files = sorted(f for d in subdirs if (root / d).is_dir() for f in (root / d).glob("*.safetensors"))
        found[component] = None
        for pattern in patterns:
            hits = [f for f in files if fnmatch.fnmatch(f.name.lower(), pattern.lower())]
            if hits:
                found[component] = hits[0]
                more = f" (also matched: {', '.join(h.name for h in hits[1:])})" if len(hits) > 1 else ""
                notes[component] = f"{component}: took {hits[0].relative_to(root)} from {root}{more}"
                break
    return found, notes


# -- the FLUX / LDM autoencoder's original key names -> diffusers AutoencoderKL --

_BFL_PLAIN = [
    (r"^(encoder|decoder)\.down\.(\d+)\.block\.(\d+)\.", r"\1.down_blocks.\2.resnets.\3."),
    (r"^encoder\.down\.(\d+)\.downsample\.conv\.", r"encoder.down_blocks.\1.downsamplers.0.conv."),
    (r"^(encoder|decoder)\.mid\.attn_1\.norm\.", r"\1.mid_block.attentions.0.group_norm."),
    (r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v)\.", r"\1.mid_block.attentions.0.to_\2."),
    (r"^(encoder|decoder)\.mid\.attn_1\.proj_out\.", r"\1.mid_block.attentions.0.to_out.0."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out."),
    (r"\.nin_shortcut\.", ".conv_shortcut."),
]
_BFL_MID = re.compile(r"^(encoder|decoder)\.mid\.block_(\d)\.")
_BFL_UP = re.compile(r"^decoder\.up\.(\d+)\.(?:block\.(\d+)|upsample\.conv)\.")
_BFL_ATTN = re.compile(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$")


def is_bfl_vae(keys) -> bool:
    return any(k.startswith(("encoder.down.", "decoder.up.")) or ".mid.attn_1." in k for k in keys)


def bfl_vae_key(key: str, n_up: int) -> str:
    """One BFL/LDM key -> its diffusers name. The decoder's `up.{i}` count from the full-resolution end,
    diffusers' `up_blocks.{j}` from the latent end: j = n_up - 1 - i."""
    m = _BFL_UP.match(key)
    if m:
        j = n_up - 1 - int(m.group(1))
        inner = f"resnets.{m.group(2)}" if m.group(2) is not None else "upsamplers.0.conv"
        key = f"decoder.up_blocks.{j}.{inner}." + key[m.end() :]
    m = _BFL_MID.match(key)
    if m:
        key = f"{m.group(1)}.mid_block.resnets.{int(m.group(2)) - 1}." + key[m.end() :]
    for pattern, repl in _BFL_PLAIN:
        key = re.sub(pattern, repl, key, count=1)
    return key


def bfl_vae_names(keys) -> dict[str, str]:
    """file key -> diffusers key for a whole BFL/LDM state dict."""
    ups = {int(m.group(1)) for k in keys if (m := _BFL_UP.match(k))}
    n_up = max(ups) + 1 if ups else 0
    return {k: bfl_vae_key(k, n_up) for k in keys}


def diffusers_vae_key(key: str, n_up: int) -> str:
    """The inverse of bfl_vae_key: diffusers AutoencoderKL name -> BFL/LDM name (for messages and writers)."""

    def up(m):
        i = n_up - 1 - int(m.group(1))
        return (
            f"decoder.up.{i}.block.{m.group(3)}."
            if m.group(3) is not None
            else f"decoder.up.{i}.upsample.conv."
        )

    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0\.conv)\.", up, key)
    key = re.sub(r"^(encoder|decoder)\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"\1.down.\2.block.\3.", key)
    key = re.sub(
        r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.", r"encoder.down.\1.downsample.conv.", key
    )
    key = re.sub(
        r"^(encoder|decoder)\.mid_block\.resnets\.(\d)\.",
        lambda m: f"{m.group(1)}.mid.block_{int(m.group(2)) + 1}.",
        key,
    )
    key = re.sub(r"\.mid_block\.attentions\.0\.group_norm\.", ".mid.attn_1.norm.", key)
    key = re.sub(r"\.mid_block\.attentions\.0\.to_(q|k|v)\.", r".mid.attn_1.\1.", key)
    key = re.sub(r"\.mid_block\.attentions\.0\.to_out\.0\.", ".mid.attn_1.proj_out.", key)
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    return key.replace(".conv_shortcut.", ".nin_shortcut.")


def check_bfl_vae_keys(want: dict[str, tuple], headers: dict, where: str) -> None:
    """A BFL/LDM VAE file against the diffusers model's keys and shapes, every problem named in the file's own
    key names. want: diffusers key -> shape."""
    n_up = len({k.split(".")[2] for k in want if k.startswith("decoder.up_blocks.")})
    expected = {diffusers_vae_key(k, n_up): k for k in want}
    missing = sorted(set(expected) - set(headers))
    unexpected = sorted(set(headers) - set(expected))
    if missing or unexpected:
        parts = [
            f"{label} {len(keys)}: {', '.join(keys[:5])}"
            for label, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise CheckpointError(f"{where}: VAE weights do not match its config ({'; '.join(parts)})")
    bad = [
        f"{k} {list(headers[k]['shape'])} (expected {list(want[d])})"
        for k, d in sorted(expected.items())
        if bfl_attention_shape(k, tuple(headers[k]["shape"])) != tuple(want[d])
    ]
    if bad:
        raise CheckpointError(f"{where}: VAE tensor shape mismatch: {', '.join(bad[:5])}")


def bfl_attention_shape(key: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The mid-block attention projections: 1x1 convolutions in the BFL file, linear layers in diffusers."""
    if _BFL_ATTN.search(key) and len(shape) == 4 and shape[2:] == (1, 1):
        return tuple(shape[:2])
    return tuple(shape)


def vae_config_for_file(path: Path) -> tuple[dict, Path]:
    """(diffusers AutoencoderKL config, where it came from): the sidecar, else the shipped FLUX.1 config."""
    src = sidecar_config(path) or FLUX_VAE_CONFIG
    try:
        return json.loads(src.read_text()), src
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{src}: unreadable VAE config ({e})") from None


# -- configs the text-encoder files leave out, from their shapes --


def _shape(headers: dict, key: str, where: str, what: str) -> tuple[int, ...]:
    if key not in headers:
        raise CheckpointError(f"{where}: {what} key '{key}' is missing")
    return tuple(headers[key]["shape"])


def _layer_count(headers: dict, pattern: str) -> int:
    found = {int(m.group(1)) for k in headers if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def gemma3_fields(headers: dict, prefix: str, where: str) -> dict:
    """Gemma3TextConfig fields for a ComfyUI Gemma3 file: the widths from its shapes, the rest Gemma3-4B-it's
    (ComfyUI's Gemma3_4B_Config: 5 sliding-window (1024) layers to 1 global; RoPE 10k local, 1M x8 linear
    global)."""
    what = "Gemma3"
    vocab, hidden = _shape(headers, prefix + "embed_tokens.weight", where, what)
    (head_dim,) = _shape(headers, prefix + "layers.0.self_attn.q_norm.weight", where, what)
    q_rows = _shape(headers, prefix + "layers.0.self_attn.q_proj.weight", where, what)[0]
    kv_rows = _shape(headers, prefix + "layers.0.self_attn.k_proj.weight", where, what)[0]
    inter = _shape(headers, prefix + "layers.0.mlp.gate_proj.weight", where, what)[0]
    return gemma3_4b_fields(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=_layer_count(headers, re.escape(prefix) + r"layers\.(\d+)\."),
        num_attention_heads=q_rows // head_dim,
        num_key_value_heads=kv_rows // head_dim,
        head_dim=head_dim,
    )


def gemma3_4b_fields(**widths) -> dict:
    """Gemma3TextConfig fields: the given widths (vocab_size, hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim) with Gemma3-4B-it's structure."""
    return {
        **widths,
        "query_pre_attn_scalar": widths["head_dim"],
        "sliding_window": 1024,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "hidden_activation": "gelu_pytorch_tanh",
        "pad_token_id": 0,
        "eos_token_id": 1,
        "bos_token_id": 2,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        },
    }


def jina_fields(headers: dict, prefix: str, where: str) -> dict:
    """JinaConfig fields for a ComfyUI Jina file: widths from its shapes, heads of 64
    (Jina CLIP v2: 1024 wide, 16 heads), RoPE base 20000, pad 1 (ComfyUI's XLMRobertaConfig)."""
    what = "Jina CLIP"
    vocab, hidden = _shape(headers, prefix + "embeddings.word_embeddings.weight", where, what)
    types = _shape(headers, prefix + "embeddings.token_type_embeddings.weight", where, what)[0]
    inter = _shape(headers, prefix + "encoder.layers.0.mlp.fc1.weight", where, what)[0]
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "type_vocab_size": types,
        "num_hidden_layers": _layer_count(headers, re.escape(prefix) + r"encoder\.layers\.(\d+)\."),
        "num_attention_heads": max(hidden // 64, 1),
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "rope_theta": 20000.0,
    }
