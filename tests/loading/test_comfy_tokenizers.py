"""Tokenizers converted from a ComfyUI file's embedded SentencePiece model give HF's ids, special tokens included."""

import pytest
import torch
from safetensors.torch import save_file

from newbie.errors import CheckpointError
from newbie.loading.spiece import SPIECE_KEY, file_tokenizer, gemma_tokenizer, jina_tokenizer, parse_model
from tests.loading import comfy_files as cf

TEXTS = [
    "red_hair girl, Blue eyes.",
    "",
    "  two  spaces\tand\nnewline ",
    " lead",
    "Ünïcode ☃ 中文",
    "<bos>hello <start_of_turn>x <eos> y <mask>",
    "a<unk>b <pad>",
    "<s>abc</s> <mask> <pad>",
    (
        "You are an assistant designed to generate high-quality anime images based on xml format prompts. "
        "<Prompt Start> <character_1> <n>$character_1$</n> <gender>1girl</gender> </character_1>"
    ),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    g, x = cf.gemma_spiece(), cf.xlmr_spiece()
    hf_g, hf_j = cf.hf_tokenizers(g, x, tmp_path_factory.mktemp("hf"))
    return g, x, cf.xlmr_spiece_hf_numbered(x), hf_g, hf_j


def test_gemma_ids_equal_hf(models):
    g, _, _, hf_g, _ = models
    ours = gemma_tokenizer(g, "gemma")
    for text in TEXTS:
        assert ours(text)["input_ids"] == hf_g(text)["input_ids"], text
    assert ours("")["input_ids"] == [2]  # <bos> alone: the default negative
    assert ours("<bos>")["input_ids"] == [2, 2]  # typed special tokens become the token, as in HF


@pytest.mark.parametrize("numbering", ["hf", "original"])
def test_jina_ids_equal_hf_in_both_numberings(models, numbering):
    _, original, hf_numbered, _, hf_j = models
    ours = jina_tokenizer(hf_numbered if numbering == "hf" else original, "jina")
    for text in TEXTS:
        assert ours(text)["input_ids"] == hf_j(text)["input_ids"], text
    assert ours("")["input_ids"] == [0, 2]
    assert len(ours) == len(hf_j) == cf.DEMO_VOCAB


@pytest.mark.parametrize("which", ["gemma", "jina"])
def test_batches_pad_and_truncate_as_hf(models, which):
    g, _, hf_numbered, hf_g, hf_j = models
    ours, theirs = (
        (gemma_tokenizer(g, "g"), hf_g) if which == "gemma" else (jina_tokenizer(hf_numbered, "j"), hf_j)
    )
    batch = ["red", "You are an assistant designed to generate", ""]
    for side in ("right", "left"):  # newbie.model.text pads on the right
        ours.padding_side = theirs.padding_side = side
        for kw in (
            {"padding": True, "pad_to_multiple_of": 8, "max_length": 16, "truncation": True},
            {"padding": True, "max_length": 6, "truncation": True},
            {"padding": True},
        ):
            a = ours(batch, return_tensors="pt", **kw)
            b = theirs(batch, return_tensors="pt", **kw)
            assert torch.equal(a.input_ids, b.input_ids) and torch.equal(
                a.attention_mask, b.attention_mask
            ), (side, kw)
    assert (
        ours(batch[1], return_tensors="pt").input_ids.shape
        == theirs(batch[1], return_tensors="pt").input_ids.shape
    )


def test_unknown_special_numbering_and_broken_models_are_refused(models, tmp_path):
    g, *_ = models
    with pytest.raises(CheckpointError, match="expected an XLM-RoBERTa numbering"):
        jina_tokenizer(g, "x")  # Gemma's numbering is not an XLM-R one
    with pytest.raises(CheckpointError, match=f"'{SPIECE_KEY}' is not a SentencePiece model"):
        gemma_tokenizer(b"not a model", "x")
    table = {"model.embed_tokens.weight": torch.zeros(50, 4)}  # fewer rows than the tokenizer has ids
    save_file({**table, SPIECE_KEY: cf.spiece_tensor(g)}, str(tmp_path / "small.safetensors"))
    with pytest.raises(
        CheckpointError, match=f"'{SPIECE_KEY}' has 119 token ids but 'model.embed_tokens.weight' only 50"
    ):
        file_tokenizer(tmp_path / "small.safetensors", "Gemma")
    save_file({**table, SPIECE_KEY: torch.zeros(8)}, str(tmp_path / "float.safetensors"))
    with pytest.raises(CheckpointError, match=f"'{SPIECE_KEY}' must be a 1-D uint8 tensor"):
        file_tokenizer(tmp_path / "float.safetensors", "Gemma")
    save_file(table, str(tmp_path / "none.safetensors"))
    with pytest.raises(CheckpointError, match=f"no '{SPIECE_KEY}' tensor"):
        file_tokenizer(tmp_path / "none.safetensors", "Jina")


def test_decode_and_vocabulary_as_hf(models):
    """What `newbie prompt expand --llm` reads from the Gemma tokenizer (pieces as text, special ids)."""
    from newbie.prompts.llm import vocab_of

    g, _, _, hf_g, _ = models
    ours = gemma_tokenizer(g, "gemma")
    for ids in ([2, 10, 11], [5, 6, 0, 0], [118, 3, 40]):
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == hf_g.decode(ids, skip_special_tokens=skip)
    a, b = vocab_of(ours, cf.DEMO_VOCAB), vocab_of(hf_g, cf.DEMO_VOCAB)
    assert a.pieces == b.pieces and torch.equal(a.content, b.content) and torch.equal(a.wordy, b.wordy)


def test_the_protobuf_reader_reads_what_protobuf_reads(models):
    """parse_model reads the model bytes itself (no protobuf at run time): the same pieces and ids as
    sentencepiece's generated protobuf class."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    for proto in models[:3]:
        ref = pb.ModelProto()
        ref.ParseFromString(proto)
        ours = parse_model(proto, "x")
        assert [(p.piece, p.score, p.type) for p in ours.pieces] == [
            (p.piece, p.score, p.type) for p in ref.pieces
        ]
        spec = ref.trainer_spec
        assert (ours.unk_id, ours.bos_id, ours.eos_id, ours.pad_id) == (
            spec.unk_id,
            spec.bos_id,
            spec.eos_id,
            spec.pad_id,
        )
        assert ours.charsmap == ref.normalizer_spec.precompiled_charsmap
    assert any(parse_model(p, "x").pad_id == -1 for p in models[:3])  # a negative id survives
    with pytest.raises(CheckpointError, match="is not a SentencePiece model"):
        parse_model(models[0][:-3], "x")  # cut short
