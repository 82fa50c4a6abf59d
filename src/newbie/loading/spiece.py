"""Tokenizers from the SentencePiece model that a ComfyUI text-encoder file embeds (tensor `spiece_model`).

They give the same ids and special tokens as the Hugging Face tokenizers of the same models, and the same
call surface that newbie.model.text uses (padding, pad_to_multiple_of, truncation, return_tensors).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from newbie.errors import CheckpointError

SPIECE_KEY = "spiece_model"


class SentencePieceTokenizer:
    """sentencepiece underneath; `offset` shifts every piece id (XLM-R's fairseq numbering), `bos`/`eos` are
    added around each text (None: not added), text spelling a special token becomes that token, as in HF."""

    def __init__(
        self,
        proto: bytes,
        *,
        bos: int | None,
        eos: int | None,
        pad: int,
        unk: int,
        offset: int = 0,
        extra_specials: dict[str, int] | None = None,
        where: str = "",
    ):
        self.sp = _processor(proto, where)
        self.bos, self.eos, self.pad, self.unk, self.offset = bos, eos, pad, unk, offset
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos, eos, pad
        self.padding_side = "right"
        # HF matches special tokens in the raw text before the model sees it; sentencepiece never emits
        # control pieces for text, so those are split out here (user-defined pieces it keeps whole itself).
        self.specials = {
            self.sp.id_to_piece(i): self._map(i)
            for i in range(self.sp.get_piece_size())
            if self.sp.is_control(i) or self.sp.is_unknown(i)
        }
        self.specials.update(extra_specials or {})
        names = sorted(self.specials, key=len, reverse=True)
        self._split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")") if names else None
        self.vocab_size = max([self.sp.get_piece_size() - 1 + offset, *self.specials.values()]) + 1

    def _map(self, i: int) -> int:
        if self.offset and i == self.sp.unk_id():
            return self.unk
        return i + self.offset

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        parts = self._split.split(text) if self._split else [text]
        ids: list[int] = []
        for k, part in enumerate(parts):
            if k % 2:  # a special token's text
                ids.append(self.specials[part])
            elif part:
                ids += [self._map(i) for i in self.sp.encode(part)]
        return self._wrap(ids) if add_special_tokens else ids

    def _wrap(self, ids: list[int]) -> list[int]:
        return (
            ([self.bos] if self.bos is not None else []) + ids + ([self.eos] if self.eos is not None else [])
        )

    def __call__(
        self,
        text: str | list[str],
        padding: bool | str = False,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ):
        from transformers import BatchEncoding

        single = isinstance(text, str)
        rows = []
        for t in [text] if single else text:
            ids = self.encode(t, add_special_tokens=False)
            if truncation and max_length is not None:
                # as HF: the added special tokens count against max_length and are never cut
                n_special = (self.bos is not None) + (self.eos is not None) if add_special_tokens else 0
                ids = ids[: max(max_length - n_special, 0)]
            rows.append(self._wrap(ids) if add_special_tokens else ids)
        masks = [[1] * len(r) for r in rows]
        if padding in (True, "longest", "max_length"):
            n = max_length if padding == "max_length" and max_length else max(len(r) for r in rows)
            if pad_to_multiple_of:
                n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
            for r, m in zip(rows, masks):
                fill = n - len(r)
                if self.padding_side == "left":
                    r[:0], m[:0] = [self.pad] * fill, [0] * fill
                else:
                    r += [self.pad] * fill
                    m += [0] * fill
        elif return_tensors and len({len(r) for r in rows}) > 1:
            raise ValueError("texts of different lengths need padding=True to become one tensor")
        data = {"input_ids": rows[0] if single else rows, "attention_mask": masks[0] if single else masks}
        if return_tensors == "pt" and single:
            data = {k: [v] for k, v in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    def __len__(self) -> int:
        return self.vocab_size

    # -- the rest of the HF tokenizer surface that newbie uses (prompts.llm reads the vocabulary as text) --

    @property
    def all_special_ids(self) -> list[int]:
        return sorted(
            {*self.specials.values(), *(i for i in (self.bos, self.eos, self.pad) if i is not None)}
        )

    @property
    def added_tokens_decoder(self) -> dict:
        from tokenizers import AddedToken

        return {i: AddedToken(name, special=True) for name, i in self.specials.items()}

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        names = {i: name for name, i in self.specials.items()}
        out: list[str] = []
        run: list[int] = []
        for i in (int(i) for i in ids):
            if i in names:
                if run:
                    out.append(self.sp.decode(run))
                    run = []
                if not skip_special_tokens:
                    out.append(names[i])
            else:
                run.append(i - self.offset)
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def batch_decode(self, seqs, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(s, skip_special_tokens) for s in seqs]


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


def _processor(proto: bytes, where: str):
    import sentencepiece

    try:
        return sentencepiece.SentencePieceProcessor(model_proto=proto)
    except (RuntimeError, OSError, TypeError) as e:  # sentencepiece's own errors, with its own text
        raise CheckpointError(
            f"{where}: '{SPIECE_KEY}' is not a SentencePiece model ({_first_line(e)})"
        ) from None


def gemma_tokenizer(proto: bytes, where: str) -> SentencePieceTokenizer:
    """Gemma: the model's own ids, `<bos>` first, no end token (HF GemmaTokenizer's add_bos/no add_eos)."""
    sp = _processor(proto, where)  # its special ids first (the tokenizer's vocabulary pass comes once, after)
    bos, pad, unk = sp.bos_id(), sp.pad_id(), sp.unk_id()
    if bos < 0:
        raise CheckpointError(f"{where}: '{SPIECE_KEY}' defines no <bos> piece (a Gemma tokenizer needs one)")
    return SentencePieceTokenizer(proto, bos=bos, eos=None, pad=max(pad, 0), unk=unk, where=where)


def jina_tokenizer(proto: bytes, where: str) -> SentencePieceTokenizer:
    """Jina CLIP v2 (XLM-RoBERTa): `<s>`=0 ... `</s>`=2, pad 1, unk 3, as HF's XLMRobertaTokenizer.

    Two numberings are accepted. A model already in HF numbering (<s> 0, <pad> 1, </s> 2, <unk> 3), which is
    what ComfyUI's own use of the raw ids implies; or the original XLM-R sentencepiece.bpe.model (<unk> 0,
    <s> 1, </s> 2), which HF shifts by one (fairseq offset) and closes with <mask> after the last piece."""
    sp = _processor(proto, where)
    ids = (sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id())
    if ids == (0, 1, 2, 3):
        return SentencePieceTokenizer(proto, bos=0, eos=2, pad=1, unk=3, where=where)
    if (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2):
        extra = {
            sp.id_to_piece(sp.bos_id()): 0,
            "<pad>": 1,
            sp.id_to_piece(sp.eos_id()): 2,
            sp.id_to_piece(sp.unk_id()): 3,
            "<mask>": sp.get_piece_size() + 1,
        }
        return SentencePieceTokenizer(
            proto, bos=0, eos=2, pad=1, unk=3, offset=1, extra_specials=extra, where=where
        )
    raise CheckpointError(
        f"{where}: '{SPIECE_KEY}' has special ids bos={ids[0]} pad={ids[1]} eos={ids[2]} "
        f"unk={ids[3]}; expected an XLM-RoBERTa numbering (<s>/<pad>/</s>/<unk> = 0/1/2/3, "
        "or the original <unk>/<s>/</s> = 0/1/2)"
    )


def file_tokenizer(path: Path, what: str) -> SentencePieceTokenizer:
    from newbie.loading.safetensors_io import read_header

    proto = spiece_bytes(path)
    tok = gemma_tokenizer(proto, str(path)) if what == "Gemma" else jina_tokenizer(proto, str(path))
    # an id past the embedding table would only fail later, deep inside the encoder
    header = read_header(path)
    table = next(
        (k for k in header if k.endswith(("embed_tokens.weight", "embeddings.word_embeddings.weight"))), None
    )
    rows = header[table]["shape"][0] if table else None
    if rows is not None and tok.vocab_size > rows:
        raise CheckpointError(
            f"{path}: '{SPIECE_KEY}' has {tok.vocab_size} token ids but '{table}' only {rows} rows"
        )
    return tok
