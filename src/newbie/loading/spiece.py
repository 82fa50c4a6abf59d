"""Tokenizers from a SentencePiece model: the one a ComfyUI text-encoder file embeds (tensor `spiece_model`),
or a folder's tokenizer.model / sentencepiece.bpe.model without a tokenizer.json.

The model is converted to a `tokenizers` pipeline as transformers 5 converts it for GemmaTokenizer and
XLMRobertaTokenizer (convert_slow_tokenizer.py: SentencePieceExtractor, XLMRobertaConverter), so the ids,
special tokens and decoded text are theirs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import AddedToken, models, normalizers
from tokenizers import Tokenizer as Backend

from newbie.errors import CheckpointError
from newbie.loading.tokenizer import PIPELINES, Tokenizer, build, gemma_pipeline, xlmr_pipeline

SPIECE_KEY = "spiece_model"
# a folder's SentencePiece model, by encoder (Gemma's own; XLM-R's original numbering)
MODEL_FILES = {"Gemma": ("tokenizer.model",), "Jina": ("sentencepiece.bpe.model", "tokenizer.model")}


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def spiece_bytes(path: Path) -> bytes:
    """The embedded SentencePiece model bytes of a ComfyUI text-encoder file."""
    from newbie.loading.safetensors_io import load_tensors, read_header

    header = read_header(path)
    if SPIECE_KEY not in header:
        raise CheckpointError(
            f"{path}: no '{SPIECE_KEY}' tensor (the embedded tokenizer ComfyUI text encoders carry)"
        )
    if header[SPIECE_KEY]["dtype"] not in ("U8", "I8") or len(header[SPIECE_KEY]["shape"]) != 1:
        raise CheckpointError(
            f"{path}: '{SPIECE_KEY}' must be a 1-D uint8 tensor of SentencePiece model bytes, "
            f"got {header[SPIECE_KEY]['dtype']} {list(header[SPIECE_KEY]['shape'])}"
        )
    t = load_tensors([path], keys={SPIECE_KEY})[SPIECE_KEY]
    return t.to(torch.uint8).numpy().tobytes()


CONTROL, USER_DEFINED = 3, 4  # SentencePiece piece types


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = 1  # NORMAL; 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE


@dataclass
class SpmModel:
    """The parts of a SentencePiece ModelProto that the conversion reads (defaults: the proto's own)."""

    pieces: list[Piece] = field(default_factory=list)
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    charsmap: bytes = b""  # normalizer_spec.precompiled_charsmap


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]  # an IndexError past the end: a truncated model
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not b & 0x80:
            return value, i
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes):
    """(field number, value) of one protobuf message: ints for varints, bytes for the rest."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            value, i = buf[i : i + n], i + n
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i : i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        if i > len(buf):
            raise ValueError("truncated")
        yield number, value


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def parse_model(proto: bytes, where: str) -> SpmModel:
    """A SentencePiece model's pieces, special ids and character map, read from its protobuf bytes directly
    (sentencepiece_model.proto field numbers), so that neither sentencepiece nor protobuf is needed."""
    model = SpmModel()
    try:
        for number, value in _fields(proto):
            if number == 1:  # pieces
                piece = Piece("")
                for n, v in _fields(value):
                    if n == 1:
                        piece.piece = v.decode("utf-8")
                    elif n == 2:
                        piece.score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        piece.type = v
                model.pieces.append(piece)
            elif number == 2:  # trainer_spec
                ids = {40: "unk_id", 41: "bos_id", 42: "eos_id", 43: "pad_id"}
                for n, v in _fields(value):
                    if n in ids:
                        setattr(model, ids[n], _int32(v))
            elif number == 3:  # normalizer_spec
                model.charsmap = next((v for n, v in _fields(value) if n == 2), b"")
    except (ValueError, IndexError, TypeError, AttributeError, struct.error) as e:
        raise CheckpointError(f"{where}: '{SPIECE_KEY}' is not a SentencePiece model ({e})") from None
    if not model.pieces:
        raise CheckpointError(f"{where}: '{SPIECE_KEY}' is not a SentencePiece model (no pieces)")
    return model


def _spm_added(model) -> list[AddedToken]:
    """Control pieces are special tokens, user-defined ones are kept whole but are not special (transformers'
    SentencePieceExtractor)."""
    return [
        AddedToken(p.piece, normalized=False, special=p.type == CONTROL)
        for p in model.pieces
        if p.type in (CONTROL, USER_DEFINED)
    ]


def bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """transformers' generate_merges without scores: for each piece in id order, every split of it into two
    pieces of the vocabulary, shortest left part first."""
    return [(p[:k], p[k:]) for p in vocab for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab]


def gemma_tokenizer(proto: bytes, where: str) -> Tokenizer:
    """Gemma (a BPE SentencePiece model): the model's own ids, `<bos>` first, no end token (transformers'
    GemmaTokenizer with gemma-3's add_bos_token / no add_eos_token)."""
    model = parse_model(proto, where)
    if not (0 <= model.bos_id < len(model.pieces) and 0 <= model.unk_id < len(model.pieces)):
        raise CheckpointError(
            f"{where}: '{SPIECE_KEY}' defines no <bos> or <unk> piece (a Gemma tokenizer needs both)"
        )
    vocab = {p.piece: i for i, p in enumerate(model.pieces)}
    unk = model.pieces[model.unk_id].piece
    backend = Backend(
        models.BPE(vocab=vocab, merges=bpe_merges(vocab), fuse_unk=True, unk_token=unk, byte_fallback=True)
    )
    gemma_pipeline(backend)
    config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False}
    for name, i in (
        ("bos", model.bos_id),
        ("eos", model.eos_id),
        ("unk", model.unk_id),
        ("pad", model.pad_id),
    ):
        if 0 <= i < len(model.pieces):
            config[f"{name}_token"] = model.pieces[i].piece
    config["mask_token"] = "<mask>" if "<mask>" in vocab else None  # never a token past the embedding table
    added = _spm_added(model)
    config["extra_special_tokens"] = [t.content for t in added]
    return build(backend, config, where, extra_added=added)


def jina_tokenizer(proto: bytes, where: str) -> Tokenizer:
    """Jina CLIP v2 (XLM-RoBERTa, a unigram SentencePiece model): `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3, as
    transformers' XLMRobertaTokenizer.

    Two numberings are accepted. A model already in HF numbering (<s> 0, <pad> 1, </s> 2, <unk> 3), which is
    what ComfyUI's own use of the raw ids implies; or the original XLM-R sentencepiece.bpe.model (<unk> 0,
    <s> 1, </s> 2), which HF shifts by one (fairseq offset) and closes with <mask> after the last piece."""
    model = parse_model(proto, where)
    ids = (model.bos_id, model.pad_id, model.eos_id, model.unk_id)
    pieces = [(p.piece, p.score) for p in model.pieces]
    if ids == (0, 1, 2, 3):
        vocab = pieces
    elif (model.unk_id, model.bos_id, model.eos_id) == (0, 1, 2):
        head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        vocab = head + pieces[3:] + [("<mask>", 0.0)]
    else:
        raise CheckpointError(
            f"{where}: '{SPIECE_KEY}' has special ids bos={ids[0]} pad={ids[1]} eos={ids[2]} "
            f"unk={ids[3]}; expected an XLM-RoBERTa numbering (<s>/<pad>/</s>/<unk> = 0/1/2/3, "
            "or the original <unk>/<s>/</s> = 0/1/2)"
        )
    backend = Backend(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    xlmr_pipeline(backend, normalizers.Precompiled(model.charsmap) if model.charsmap else None)
    added = _spm_added(model)
    config = {"tokenizer_class": "XLMRobertaTokenizer", **PIPELINES["XLMRobertaTokenizer"][1]}
    config["extra_special_tokens"] = [t.content for t in added]
    return build(backend, config, where, extra_added=added)


def file_tokenizer(path: Path, what: str) -> Tokenizer:
    from newbie.loading.safetensors_io import read_header

    proto = spiece_bytes(path)
    tok = gemma_tokenizer(proto, str(path)) if what == "Gemma" else jina_tokenizer(proto, str(path))
    # an id past the embedding table would only fail later, deep inside the encoder
    header = read_header(path)
    table = next(
        (k for k in header if k.endswith(("embed_tokens.weight", "embeddings.word_embeddings.weight"))), None
    )
    rows = header[table]["shape"][0] if table else None
    if rows is not None and len(tok) > rows:
        raise CheckpointError(
            f"{path}: '{SPIECE_KEY}' has {len(tok)} token ids but '{table}' only {rows} rows"
        )
    return tok
