"""Tiny components in the real architectures: word-level tokenizers, Gemma3, Jina v3, FLUX-style VAE, NextDiT.

Tests build checkpoints from these; the demo model is trained from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from newbie.config import DiTConfig
from newbie.demo.vocab import toy_words
from newbie.model.dit import NextDiT
from newbie.model.jina import JinaConfig, JinaTextModel


def word_tokenizer(words: list[str], style: str):
    """A word-level tokenizer built in-process. style 'gemma': <pad>=0 <eos>=1 <bos>=2, '<bos> text';
    style 'jina' (XLM-R): <s>=0 <pad>=1 </s>=2, '<s> text </s>'. Tags like red_hair are single tokens."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    from newbie.loading.tokenizer import Tokenizer as Ours

    if style == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
        bos, eos, pad = "<bos>", "<eos>", "<pad>"
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>"]
        bos, eos, pad = "<s>", "</s>", "<pad>"
    vocab = {t: i for i, t in enumerate(specials)}
    for w in words + ["<", ">", "/", ",", ".", "(", ")", ":"]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[<>/,.():]"), behavior="isolated"), pre_tokenizers.WhitespaceSplit()]
    )
    if style == "gemma":
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, vocab[bos])]
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", special_tokens=[(bos, vocab[bos]), (eos, vocab[eos])]
        )
    tok.add_special_tokens(specials)  # as transformers marks a tokenizer's named special tokens
    named = {"bos_token": bos, "eos_token": eos, "unk_token": "<unk>", "pad_token": pad}
    return Ours(tok, named, {"padding_side": "right"})


@dataclass(frozen=True)
class TinySizes:
    gemma_hidden: int = 64
    gemma_layers: int = 3
    jina_hidden: int = 32
    jina_layers: int = 2
    vae_channels: tuple[int, ...] = (16, 32, 32, 32)


def tiny_dit_config(sizes: TinySizes = TinySizes(), **changes) -> DiTConfig:
    base = dict(
        dim=48,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=4,
        n_kv_heads=2,
        cap_feat_dim=sizes.gemma_hidden,
        clip_text_dim=sizes.jina_hidden,
        axes_dims=(4, 4, 4),
        axes_lens=(256, 64, 64),
        multiple_of=16,
    )
    base.update(changes)
    return DiTConfig(**base)


def tiny_gemma(vocab_size: int, sizes: TinySizes, seed: int):
    from newbie.model.gemma import Gemma, GemmaConfig, init_weights

    torch.manual_seed(seed)
    cfg = GemmaConfig.from_dict(
        dict(
            vocab_size=vocab_size,
            hidden_size=sizes.gemma_hidden,
            intermediate_size=2 * sizes.gemma_hidden,
            num_hidden_layers=sizes.gemma_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=64,
            max_position_embeddings=1024,
            query_pre_attn_scalar=16,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=1,
        )
    )
    return init_weights(Gemma(cfg)).eval()


def tiny_jina(vocab_size: int, sizes: TinySizes, seed: int) -> JinaTextModel:
    from newbie.quiet_imports import import_model_libraries

    import_model_libraries()  # transformers without torchao's import noise
    from transformers import JinaEmbeddingsV3Config, JinaEmbeddingsV3Model

    widths = dict(
        vocab_size=vocab_size,
        hidden_size=sizes.jina_hidden,
        num_hidden_layers=sizes.jina_layers,
        num_attention_heads=4,
        intermediate_size=2 * sizes.jina_hidden,
    )
    # Our model with the weights transformers' seeded init draws: the tiny checkpoints the tests write, and
    # the demo model trained from them, stay what they were.
    torch.manual_seed(seed)
    drawn = JinaEmbeddingsV3Model(JinaEmbeddingsV3Config(**widths), add_pooling_layer=False)
    jina = JinaTextModel(JinaConfig(**widths))
    jina.load_state_dict(drawn.state_dict())
    return jina.eval()


def tiny_vae(sizes: TinySizes, seed: int):
    from newbie.model.autoencoder import AutoencoderConfig, AutoencoderKL

    torch.manual_seed(seed)
    n = len(sizes.vae_channels)
    cfg = AutoencoderConfig(
        in_channels=3,
        out_channels=3,
        latent_channels=16,
        block_out_channels=sizes.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=1,
        norm_num_groups=8,
        act_fn="silu",
        mid_block_add_attention=True,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        sample_size=128,
        force_upcast=True,
    )
    return AutoencoderKL(cfg).eval()


def tiny_components(seed: int = 0, sizes: TinySizes = TinySizes(), dit_cfg: DiTConfig | None = None):
    words = toy_words()
    gemma_tok, jina_tok = word_tokenizer(words, "gemma"), word_tokenizer(words, "jina")
    gemma = tiny_gemma(len(gemma_tok), sizes, seed)
    jina = tiny_jina(len(jina_tok), sizes, seed + 1)
    vae = tiny_vae(sizes, seed + 2)
    torch.manual_seed(seed + 3)
    dit = NextDiT(dit_cfg or tiny_dit_config(sizes)).eval()
    _randomize_zero_inits(dit)
    return dit, gemma, gemma_tok, jina, jina_tok, vae


def _randomize_zero_inits(dit: NextDiT) -> None:
    # nn.Linear/RMSNorm defaults already give a non-trivial network; perturb norms so tests see their weights.
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.add_(0.1 * torch.randn_like(p))


def write_tiny_checkpoint(
    root: Path, seed: int = 0, sizes: TinySizes = TinySizes(), dit_cfg: DiTConfig | None = None
) -> Path:
    from newbie.loading.writer import save_model

    save_model(Path(root), *tiny_components(seed, sizes, dit_cfg))
    return Path(root)
