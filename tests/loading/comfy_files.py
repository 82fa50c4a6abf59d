"""Test helpers: tiny SentencePiece tokenizers, and a folder-layout model rewritten as ComfyUI single files.

The tokenizers are trained here (no model hub): a Gemma-style BPE (<pad> 0, <eos> 1, <bos> 2, <unk> 3,
identity normalization, no dummy prefix) and an XLM-R-style unigram (<unk> 0, <s> 1, </s> 2), plus the same
XLM-R model renumbered to HF ids (<s> 0, <pad> 1, </s> 2, <unk> 3, ..., <mask>), which is what ComfyUI's Jina
file holds (docs/decisions.md, "ComfyUI files"). Each fits the demo model's 119-row embedding tables.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from newbie.demo.vocab import toy_words
from newbie.loading.comfy_writer import jina_comfy_keys, vae_bfl_keys

# What a user of the demo types: its tag words, its XML, its system prompts (as the tokenizer sees them).
CORPUS = [
    " ".join(toy_words()),
    (
        "<character_1> <n>$character_1$</n> <gender>1girl</gender> "
        "<appearance>red_hair, blue_eyes</appearance> </character_1> "
        "<general_tags> <background>white_background</background> </general_tags>"
    ),
    (
        "You are an assistant designed to generate high-quality anime images based on xml format prompts. "
        "<Prompt Start> 1girl, solo, smile"
    ),
]
DEMO_VOCAB = 119  # rows of the demo model's Gemma and Jina embedding tables


def _train(**kw) -> bytes:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=buf,
        minloglevel=2,
        character_coverage=1.0,
        hard_vocab_limit=False,
        **kw,
    )
    return buf.getvalue()


def gemma_spiece() -> bytes:
    # Gemma's own model keeps <mask> and the turn markers as user-defined pieces
    return _train(
        vocab_size=DEMO_VOCAB,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        add_dummy_prefix=False,
        split_by_whitespace=False,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        user_defined_symbols=["<mask>", "<start_of_turn>"],
    )


def xlmr_spiece() -> bytes:
    """The original XLM-R numbering (sentencepiece.bpe.model): HF adds <pad> and <mask> and shifts by one."""
    return _train(vocab_size=DEMO_VOCAB - 2, model_type="unigram", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)


def xlmr_spiece_hf_numbered(original: bytes) -> bytes:
    """The same tokenizer with every id equal to HF XLMRobertaTokenizer's."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    src = pb.ModelProto()
    src.ParseFromString(original)
    out = pb.ModelProto()
    out.CopyFrom(src)
    del out.pieces[:]
    kind = pb.ModelProto.SentencePiece
    for name, t in (
        ("<s>", kind.CONTROL),
        ("<pad>", kind.CONTROL),
        ("</s>", kind.CONTROL),
        ("<unk>", kind.UNKNOWN),
    ):
        out.pieces.add(piece=name, type=t, score=0.0)
    out.pieces.extend(src.pieces[3:])
    out.pieces.add(piece="<mask>", type=kind.CONTROL, score=0.0)
    spec = out.trainer_spec
    spec.bos_id, spec.pad_id, spec.eos_id, spec.unk_id = 0, 1, 2, 3
    return out.SerializeToString()


def hf_tokenizers(gemma: bytes, xlmr_original: bytes, where: Path):
    """HF's own tokenizers converted from the same SentencePiece models (GemmaTokenizer with add_bos_token, as
    gemma-3-4b-it's tokenizer_config.json; XLMRobertaTokenizer)."""
    from transformers import GemmaTokenizer, XLMRobertaTokenizer

    (where / "g").mkdir(parents=True, exist_ok=True)
    (where / "j").mkdir(parents=True, exist_ok=True)
    (where / "g" / "tokenizer.model").write_bytes(gemma)
    (where / "j" / "sentencepiece.bpe.model").write_bytes(xlmr_original)
    g = GemmaTokenizer.from_pretrained(str(where / "g"), add_bos_token=True, add_eos_token=False)
    j = XLMRobertaTokenizer.from_pretrained(str(where / "j"))
    return g, j


def spiece_tensor(proto: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(proto), dtype=torch.uint8)


def vae_to_bfl(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers VAE state dict in BFL/LDM key names (a test checks the map against diffusers')."""
    return vae_bfl_keys(sd)


def native_to_comfy_jina(model) -> dict[str, torch.Tensor]:
    """A Jina text tower's native state dict in ComfyUI's Jina names (without the `model.` prefix):
    the original flash names, q/k/v fused into Wqkv."""
    return {k.removeprefix("model."): v for k, v in jina_comfy_keys(model.state_dict()).items()}


def write_comfy_models(
    src: Path, models: Path, gemma: bytes, jina: bytes, sidecars: bool = True, dit_prefix: str = ""
) -> dict[str, Path]:
    """A folder-layout model (official keys, jina-clip text tower, diffusers VAE) as the four ComfyUI files in
    a ComfyUI models/ folder, named as the official template names them. sidecars: each component's
    config.json beside its file as <name>.config.json (a model of another size than NewBie's needs them)."""
    files = {
        "transformer": models / "diffusion_models" / "NewBie-Image-Exp0.1-bf16.safetensors",
        "text_encoder": models / "text_encoders" / "gemma_3_4b_it_bf16.safetensors",
        "clip_model": models / "text_encoders" / "jina_clip_v2_bf16.safetensors",
        "vae": models / "vae" / "ae.safetensors",
    }
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    dit = load_file(str(src / "transformer" / "diffusion_pytorch_model.safetensors"))
    save_file({dit_prefix + k: v for k, v in dit.items()}, str(files["transformer"]))

    g = load_file(str(src / "text_encoder" / "model.safetensors"))
    g = {"model." + k.removeprefix("language_model.model."): v for k, v in g.items()}
    g["spiece_model"] = spiece_tensor(gemma)
    save_file(g, str(files["text_encoder"]))

    j = {}
    for k, v in load_file(str(src / "clip_model" / "model.safetensors")).items():
        if ".lora_" in k:
            continue
        k = k.removeprefix("text_model.transformer.roberta.").replace(
            ".parametrizations.weight.original", ".weight"
        )
        j["model." + k] = v
    j["spiece_model"] = spiece_tensor(jina)
    save_file(j, str(files["clip_model"]))

    save_file(
        vae_to_bfl(load_file(str(src / "vae" / "diffusion_pytorch_model.safetensors"))), str(files["vae"])
    )
    if sidecars:
        for name, folder in (
            ("transformer", "transformer"),
            ("text_encoder", "text_encoder"),
            ("clip_model", "clip_model"),
            ("vae", "vae"),
        ):
            f = files[name]
            shutil.copy(
                src / folder / "config.json",
                f.with_name(f.name.removesuffix(".safetensors") + ".config.json"),
            )
    return files


def folder_with_tokenizers(src: Path, dst: Path, gemma_tok, jina_tok) -> Path:
    """A copy of a folder-layout model whose tokenizers are the given HF tokenizers."""
    shutil.copytree(src, dst)
    for sub, tok in (("text_encoder", gemma_tok), ("clip_model", jina_tok)):
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model"):
            (dst / sub / name).unlink(missing_ok=True)
        tok.save_pretrained(str(dst / sub))
    return dst


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
