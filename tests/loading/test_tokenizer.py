"""newbie.loading.tokenizer gives transformers' AutoTokenizer's ids, masks, padding, truncation, special tokens
and decoded text on the same files, without importing transformers.

The files: the demo model's word-level tokenizers; a Gemma-like BPE and an XLM-R-like unigram tokenizer.json
built here with the tokenizers library (with gemma-3's and jina-clip-v2's kinds of tokenizer_config.json);
SentencePiece models (a folder with only tokenizer.model); and what our save_pretrained writes.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as Backend

from newbie.demo.model import PACKAGED
from newbie.errors import CheckpointError
from newbie.loading.spiece import gemma_tokenizer
from newbie.loading.text import load_tokenizer
from newbie.loading.tokenizer import from_folder
from tests.loading import comfy_files as cf
from tests.loading.test_comfy_tokenizers import TEXTS

BATCH = [
    "red_hair girl, blue_eyes",
    "",
    "  You are an assistant designed to generate high-quality anime images",
    "x",
]
CALLS = [  # newbie.model.text's two calls, a truncation that bites, and plain padding
    {"padding": True, "pad_to_multiple_of": 8, "max_length": 16, "truncation": True},
    {"padding": True, "max_length": 6, "truncation": True},
    {"padding": True, "max_length": 3, "truncation": True},
    {"padding": True},
    {"padding": "max_length", "max_length": 24, "truncation": True},
]


def assert_same(ours, theirs, texts=TEXTS, batch=BATCH):
    for text in texts:
        for add in (True, False):
            assert (
                ours(text, add_special_tokens=add)["input_ids"]
                == theirs(text, add_special_tokens=add)["input_ids"]
            ), (text, add)
    for side in ("right", "left"):
        ours.padding_side = theirs.padding_side = side
        for kw in CALLS:
            a, b = ours(batch, return_tensors="pt", **kw), theirs(batch, return_tensors="pt", **kw)
            assert torch.equal(a.input_ids, b.input_ids), (side, kw)
            assert torch.equal(a.attention_mask, b.attention_mask), (side, kw)
            a, b = ours(batch, **kw), theirs(batch, **kw)  # lists
            assert a["input_ids"] == b["input_ids"] and a["attention_mask"] == b["attention_mask"], (side, kw)
    ours.padding_side = theirs.padding_side = "right"
    ids = list(range(len(theirs)))
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        seqs = [ids[:7], ids[3:20], []]
        assert ours.batch_decode(seqs, skip) == theirs.batch_decode(seqs, skip_special_tokens=skip)
    assert ours.all_special_ids == theirs.all_special_ids
    added = {i: (t.content, t.special) for i, t in ours.added_tokens_decoder.items()}
    assert added == {i: (t.content, t.special) for i, t in theirs.added_tokens_decoder.items()}
    assert len(ours) == len(theirs)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(ours, name) == getattr(theirs, name), name


def auto(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("sub", ["text_encoder", "clip_model"])
def test_demo_tokenizers_equal_autotokenizer(sub):
    ours = from_folder(PACKAGED / sub)
    assert_same(ours, auto(PACKAGED / sub))
    a = ours(BATCH, padding=True, pad_to_multiple_of=8, max_length=512, truncation=True, return_tensors="pt")
    assert a.input_ids.shape[1] % 8 == 0 and a.to("cpu").attention_mask.sum() < a.input_ids.numel()


def _write(folder, backend: Backend, config: dict, legacy_map: dict | None = None):
    folder.mkdir(parents=True)
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    if legacy_map is not None:
        (folder / "special_tokens_map.json").write_text(json.dumps(legacy_map))
    return folder


def gemma_like() -> Backend:
    """BPE over ▁-spaced text, <bos> added by the post-processor, turn markers as added tokens that are not
    special: the layout of gemma-3's tokenizer.json."""
    tok = Backend(models.BPE(unk_token="<unk>"))  # no fuse_unk: GemmaTokenizer rebuilds the model with it
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        cf.CORPUS * 20, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    )
    tok.add_tokens([AddedToken(t, normalized=False) for t in ("<start_of_turn>", "<end_of_turn>")])
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok


def _token(content, special=True, **kw):
    flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    return {"content": content, **flags, "special": special, **kw}


@pytest.mark.parametrize("style", ["gemma-3", "legacy", "generic"])
def test_gemma_like_tokenizer_json_equals_autotokenizer(tmp_path, style):
    names = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    if style == "gemma-3":  # GemmaTokenizer, add_bos_token, every added token listed, a model-specific token
        tok = gemma_like()  # the config lists every added token, as gemma-3's does, and one more
        added = {str(i): _token(t.content, t.special) for i, t in tok.get_added_tokens_decoder().items()}
        added[str(tok.get_vocab_size())] = _token("<start_of_image>")
        config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False}
        config |= {
            **names,
            "added_tokens_decoder": added,
            "boi_token": "<end_of_turn>",
            "padding_side": "left",
        }
        folder = _write(tmp_path / "g", tok, config)
    elif style == "legacy":  # the special tokens only in special_tokens_map.json
        config = {"tokenizer_class": "GemmaTokenizerFast", "add_bos_token": True}
        folder = _write(tmp_path / "g", gemma_like(), config, {**names, "mask_token": "<mask>"})
    else:  # no class: tokenizer.json's own post-processor decides
        folder = _write(tmp_path / "g", gemma_like(), {"tokenizer_class": "TokenizersBackend", **names})
    ours = from_folder(folder)
    assert ours("")["input_ids"] == [2]  # <bos> alone: the empty negative
    assert_same(ours, auto(folder))


def xlmr_like() -> Backend:
    """A unigram model over SentencePiece's own character map, ▁ before each word, <s> ... </s>: the layout of
    xlm-roberta's tokenizer.json (whose pre-tokenizer XLMRobertaTokenizer replaces)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(cf.xlmr_spiece())
    tok = Backend(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=300,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(cf.CORPUS * 20, trainer)
    tok.add_special_tokens(["<mask>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def test_xlmr_like_tokenizer_json_equals_autotokenizer(tmp_path):
    """jina-clip-v2's kind of tokenizer_config.json: XLMRobertaTokenizer, <mask> with lstrip, a model_max_length
    that truncation=True alone applies, clean_up_tokenization_spaces."""
    tok = xlmr_like()
    added = {str(i): _token(t) for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>"])}
    added[str(tok.token_to_id("<mask>"))] = _token("<mask>", lstrip=True)
    config = {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 12, "added_tokens_decoder": added}
    config |= {
        "clean_up_tokenization_spaces": True,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "cls_token": "<s>",
    }
    config |= {"sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}
    folder = _write(tmp_path / "j", tok, config)
    ours, theirs = from_folder(folder), auto(folder)
    assert ours("")["input_ids"] == [0, 2]
    assert_same(ours, theirs, texts=[*TEXTS, "don 't , stop . now !", "a <mask> b"])
    long = " ".join(["red_hair"] * 30)
    assert ours(long, truncation=True)["input_ids"] == theirs(long, truncation=True)["input_ids"]
    assert len(ours(long, truncation=True)["input_ids"]) == 12


def test_a_folder_with_only_a_sentencepiece_model(tmp_path):
    g, x = cf.gemma_spiece(), cf.xlmr_spiece()
    hf_g, hf_j = cf.hf_tokenizers(g, x, tmp_path / "hf")  # transformers' own conversions
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "tokenizer.model").write_bytes(g)
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "sentencepiece.bpe.model").write_bytes(x)
    assert_same(load_tokenizer([tmp_path / "g"], "Gemma"), hf_g)
    assert_same(load_tokenizer([tmp_path / "j"], "Jina"), hf_j)


@pytest.mark.parametrize("source", ["demo-gemma", "demo-jina", "spiece-gemma"])
def test_save_pretrained_reads_back_the_same_in_both(tmp_path, source):
    ours = {
        "demo-gemma": lambda: from_folder(PACKAGED / "text_encoder"),
        "demo-jina": lambda: from_folder(PACKAGED / "clip_model"),
        "spiece-gemma": lambda: gemma_tokenizer(cf.gemma_spiece(), "g"),
    }[source]()
    ours(BATCH, padding=True, max_length=4, truncation=True)  # a call's settings never reach the file
    ours.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    assert_same(from_folder(tmp_path / "out"), ours)
    assert_same(from_folder(tmp_path / "out"), auto(tmp_path / "out"))


def test_demo_word_tokenizer_equals_the_packaged_files():
    from newbie.demo.tiny import word_tokenizer
    from newbie.demo.vocab import toy_words

    for style, sub in (("gemma", "text_encoder"), ("jina", "clip_model")):
        assert_same(word_tokenizer(toy_words(), style), from_folder(PACKAGED / sub))


def test_damaged_files_are_one_line_errors(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"tokenizer.json: not a tokenizers file") as e:
        load_tokenizer([tmp_path / "a"], "Gemma")
    assert "\n" not in str(e.value)
    (tmp_path / "b").mkdir()
    gemma_like().save(str(tmp_path / "b" / "tokenizer.json"))
    (tmp_path / "b" / "tokenizer_config.json").write_text("[1, 2")
    with pytest.raises(CheckpointError, match=r"tokenizer_config.json: unreadable"):
        load_tokenizer([tmp_path / "b"], "Gemma")
    (tmp_path / "b" / "tokenizer_config.json").write_text('{"bos_token": "<bos>"}')
    with pytest.raises(ValueError, match="return_tensors must be None or 'pt'"):
        from_folder(tmp_path / "b")("x", return_tensors="np")
    with pytest.raises(ValueError, match="no padding token"):
        from_folder(tmp_path / "b")(["x", "y z"], padding=True)


def test_loading_and_tokenizing_imports_no_transformers(tmp_path):
    """The demo folders' tokenizers and a SentencePiece model's, loaded, called as newbie.model.text calls them,
    decoded and saved in a fresh process: neither transformers nor diffusers (nor sentencepiece, protobuf)."""
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "tokenizer.model").write_bytes(cf.gemma_spiece())
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from newbie.demo.model import PACKAGED\n"
        "from newbie.loading.text import load_tokenizer\n"
        "g = load_tokenizer([PACKAGED / 'text_encoder'], 'Gemma')\n"
        "j = load_tokenizer([PACKAGED / 'clip_model'], 'Jina')\n"
        "s = load_tokenizer([Path(sys.argv[1]) / 'spm'], 'Gemma')\n"
        "t = g(['1girl', ''], padding=True, pad_to_multiple_of=8, max_length=512, truncation=True,"
        " return_tensors='pt').to('cpu')\n"
        "assert t.input_ids.shape == (2, 8) and j('1girl')['input_ids'][0] == 0, t\n"
        "assert s('red_hair')['input_ids'][0] == 2\n"
        "g.decode(t.input_ids[0]); s.batch_decode([[5, 6]]); g.save_pretrained(Path(sys.argv[1]) / 'out')\n"
        "heavy = ('transformers', 'diffusers', 'accelerate', 'sentencepiece', 'google.protobuf')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr


def test_calls_from_threads_do_not_mix_their_settings():
    """Padding and truncation are settings of the shared Rust tokenizer; a server encodes from many threads."""
    from concurrent.futures import ThreadPoolExecutor

    tok = from_folder(PACKAGED / "text_encoder")
    jobs = [CALLS[i % len(CALLS)] for i in range(200)]
    expected = [tok(BATCH, **kw)["input_ids"] for kw in jobs]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda kw: tok(BATCH, **kw)["input_ids"], jobs))
    assert got == expected
    assert (
        tok(BATCH[0])["input_ids"] == tok(BATCH[0], add_special_tokens=True)["input_ids"]
    )  # nothing left set
    with pytest.raises(KeyError):
        tok("x")["token_type_ids"]
