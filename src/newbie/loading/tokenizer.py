"""Our tokenizer: a `tokenizers.Tokenizer` (Rust; importing it costs nothing) plus the few facts that
transformers keeps beside it (special tokens, whether to add <bos>/<eos>), read the way transformers 5's
AutoTokenizer reads them, so that the ids are the same without importing transformers.

What AutoTokenizer does with a folder, and so what `from_folder` does (transformers 5.23,
tokenization_utils_tokenizers.py and the Gemma / XLM-RoBERTa tokenizer classes):
- tokenizer.json is the pipeline; padding and truncation saved in it are dropped (each call sets its own).
- tokenizer_config.json names the special tokens (bos_token, ...: a string or {"content": ...}); without an
  `added_tokens_decoder` in it, special_tokens_map.json does (the legacy files).
- tokenizer_class GemmaTokenizer / XLMRobertaTokenizer rebuild the normalizer, pre-tokenizer and decoder in
  their own way (PIPELINES); XLM-R always wraps a text as <s> text </s>.
- otherwise an explicit add_bos_token / add_eos_token (or a file without a post-processor) replaces the
  post-processor with "<bos> $A <eos>" as asked; else tokenizer.json's post-processor stays.
- every named special token that is not yet an added token becomes one (special: kept whole, and skipped by
  decode(skip_special_tokens=True)).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from newbie.errors import CheckpointError

# transformers' order of the named special tokens (SPECIAL_TOKENS_ATTRIBUTES): all_special_ids follows it
NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
NO_LIMIT = int(1e30)  # transformers' VERY_LARGE_INTEGER: "no model_max_length"
# what decode's clean_up_tokenization_spaces undoes (transformers' clean_up_tokenization)
CLEAN_UP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't")]
CLEAN_UP += [(" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


@dataclass
class Encoded:
    """Token ids and their mask: lists (one text, or a batch) or (B, L) tensors (return_tensors="pt")."""

    input_ids: object
    attention_mask: object

    def __getitem__(self, key: str):
        if key not in ("input_ids", "attention_mask"):
            raise KeyError(key)
        return getattr(self, key)

    def to(self, device) -> Encoded:
        return Encoded(self.input_ids.to(device), self.attention_mask.to(device))


class Tokenizer:
    """`backend` with its special tokens. `config`: the tokenizer_config.json fields that save_pretrained writes
    back (tokenizer_class, add_bos_token, ...), so that transformers reads the saved folder the same way."""

    def __init__(
        self, backend: Backend, specials: dict[str, str], config: dict | None = None, extras: list[str] = ()
    ):
        self.backend = backend
        self.specials = dict(specials)  # bos_token -> "<bos>", ..., and model-specific ones (boi_token ...)
        self.extras = list(extras)  # extra_special_tokens
        self.config = dict(config or {})
        self.padding_side = self.config.get("padding_side", "right")
        self.model_max_length = int(self.config.get("model_max_length") or NO_LIMIT)
        self.clean_up_spaces = bool(self.config.get("clean_up_tokenization_spaces", False))
        self._lock = threading.Lock()  # padding and truncation are settings of the shared backend
        backend.no_padding()
        backend.no_truncation()
        missing = [t for t in [*self.specials.values(), *self.extras] if backend.token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"tokenizer: special token(s) {', '.join(missing)} not in the vocabulary")

    # -- special tokens --

    def _id(self, name: str) -> int | None:
        token = self.specials.get(name)
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        return self._id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        return self._id("pad_token")

    @property
    def unk_token_id(self) -> int | None:
        return self._id("unk_token")

    @property
    def all_special_ids(self) -> list[int]:
        """Ids of the named special tokens, then the extra ones, in transformers' order, each once."""
        seen = dict.fromkeys([*self.specials.values(), *self.extras])
        return [self.backend.token_to_id(t) for t in seen]

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self.backend.get_added_tokens_decoder()

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    # -- encoding --

    def __call__(
        self,
        text: str | list[str],
        *,
        padding: bool | str = False,
        pad_to_multiple_of: int | None = None,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = None,
        add_special_tokens: bool = True,
    ) -> Encoded:
        """transformers' semantics: padding True/"longest" pads to the longest text (then up to a multiple of
        pad_to_multiple_of), "max_length" to max_length; truncation cuts to max_length with the added special
        tokens counted in (they are never cut)."""
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
        pad_max = padding == "max_length"
        if max_length is None and (truncation or pad_max) and self.model_max_length < NO_LIMIT:
            max_length = self.model_max_length
        if max_length is None:
            truncation, pad_max = False, False
            padding = False if padding == "max_length" else padding
        if padding not in (False, "do_not_pad") and self.pad_token_id is None:
            raise ValueError("this tokenizer has no padding token")
        texts = [text] if isinstance(text, str) else list(text)
        with self._lock:
            if truncation:
                self.backend.enable_truncation(max_length, stride=0, strategy="longest_first")
            if padding not in (False, "do_not_pad"):
                self.backend.enable_padding(
                    direction=self.padding_side,
                    pad_id=self.pad_token_id,
                    pad_token=self.specials["pad_token"],
                    length=max_length if pad_max else None,
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            try:
                encodings = self.backend.encode_batch(texts, add_special_tokens=add_special_tokens)
            finally:
                self.backend.no_padding()
                self.backend.no_truncation()
        ids = [e.ids for e in encodings]
        mask = [e.attention_mask for e in encodings]
        if return_tensors == "pt":
            import torch

            if len({len(r) for r in ids}) > 1:
                raise ValueError("texts of different lengths need padding=True to become one tensor")
            return Encoded(torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long))
        return Encoded(ids[0], mask[0]) if isinstance(text, str) else Encoded(ids, mask)

    # -- decoding --

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return self._clean_up(text)

    def batch_decode(self, seqs, skip_special_tokens: bool = False) -> list[str]:
        seqs = [[int(i) for i in s] for s in seqs]
        texts = self.backend.decode_batch(seqs, skip_special_tokens=skip_special_tokens)
        return [self._clean_up(t) for t in texts]

    def _clean_up(self, text: str) -> str:
        # transformers skips this for BPE models: it would eat spaces that BPE spells out
        if not self.clean_up_spaces or type(self.backend.model).__name__ == "BPE":
            return text
        for a, b in CLEAN_UP:
            text = text.replace(a, b)
        return text

    # -- saving --

    def save_pretrained(self, folder: str | Path) -> None:
        """tokenizer.json and tokenizer_config.json, which both `from_folder` and transformers' AutoTokenizer
        read back to the same ids."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:  # no call's padding or truncation in the file
            self.backend.save(str(folder / "tokenizer.json"))
        config = {**self.config, **self.specials}
        if self.extras:
            config["extra_special_tokens"] = self.extras
        config.setdefault("tokenizer_class", "TokenizersBackend")
        config["model_max_length"] = self.model_max_length
        config["padding_side"] = self.padding_side
        config["clean_up_tokenization_spaces"] = self.clean_up_spaces
        config["added_tokens_decoder"] = {
            str(i): _added_token_json(t) for i, t in sorted(self.added_tokens_decoder.items())
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def _added_token_json(t: AddedToken) -> dict:
    return {
        "content": t.content,
        "lstrip": t.lstrip,
        "normalized": t.normalized,
        "rstrip": t.rstrip,
        "single_word": t.single_word,
        "special": t.special,
    }


# -- building one --


def gemma_pipeline(backend: Backend) -> None:
    """transformers' GemmaTokenizer: spaces become ▁ before BPE (with byte fallback), and back on decode."""
    if isinstance(backend.model, models.BPE):  # the BPE settings GemmaTokenizer rebuilds its model with
        model = backend.model
        model.fuse_unk, model.byte_fallback, model.ignore_merges, model.dropout = True, True, False, None
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    )


def xlmr_pipeline(backend: Backend, precompiled=None, add_prefix_space: bool = True) -> None:
    """transformers' XLMRobertaTokenizer: SentencePiece's character map only, words split on whitespace, ▁ before
    each; `precompiled`: the Precompiled normalizer (None: the one in `backend`'s own normalizer, if any)."""
    if precompiled is None:
        precompiled = _find_precompiled(backend.normalizer)
    backend.normalizer = precompiled
    scheme = "always" if add_prefix_space else "never"
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _find_precompiled(normalizer):
    """The Precompiled step of a normalizer (alone or in a Sequence), else None."""
    parts = (
        [normalizer[i] for i in range(len(normalizer))]
        if isinstance(normalizer, normalizers.Sequence)
        else [normalizer]
    )
    return next((n for n in parts if type(n).__name__ == "Precompiled"), None)


# tokenizer_class -> (its pipeline, its default special tokens); any other class keeps tokenizer.json's own
PIPELINES = {
    "GemmaTokenizer": (
        gemma_pipeline,
        {
            "bos_token": "<bos>",
            "eos_token": "<eos>",
            "unk_token": "<unk>",
            "pad_token": "<pad>",
            "mask_token": "<mask>",
        },
    ),
    "XLMRobertaTokenizer": (
        xlmr_pipeline,
        {
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "sep_token": "</s>",
            "pad_token": "<pad>",
            "cls_token": "<s>",
            "mask_token": "<mask>",
        },
    ),
}


def template(backend: Backend, specials: dict[str, str], add_bos: bool, add_eos: bool) -> None:
    """transformers' update_post_processor: "<bos> $A <eos>", each part only as asked."""
    bos, eos = specials.get("bos_token") if add_bos else None, specials.get("eos_token") if add_eos else None
    single = " ".join([*([f"{bos}:0"] if bos else []), "$A:0", *([f"{eos}:0"] if eos else [])])
    pair = " ".join([single, *([f"{bos}:1"] if bos else []), "$B:1", *([f"{eos}:1"] if eos else [])])
    tokens = [(t, backend.token_to_id(t)) for t in (bos, eos) if t]
    backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=tokens)


def xlmr_template(backend: Backend, specials: dict[str, str]) -> None:
    bos, eos = specials["bos_token"], specials["eos_token"]
    backend.post_processor = processors.TemplateProcessing(
        single=[bos, "$A", eos],
        pair=[bos, "$A", eos, eos, "$B", eos],
        special_tokens=[(bos, backend.token_to_id(bos)), (eos, backend.token_to_id(eos))],
    )


def build(backend: Backend, config: dict, where: str, extra_added: list[AddedToken] = ()) -> Tokenizer:
    """The Tokenizer that transformers makes of `backend` and a tokenizer_config.json's `config`."""
    cls = str(config.get("tokenizer_class") or "TokenizersBackend").removesuffix("Fast")
    pipeline, defaults = PIPELINES.get(cls, (None, {}))
    named, extras = _named_specials(config)
    specials = {k: v for k, v in {**defaults, **named}.items() if v is not None}  # None: "has none"
    added = [_added_token(d) for _, d in sorted(config.get("added_tokens_decoder", {}).items(), key=_by_id)]
    for t in [*added, *extra_added]:  # a named special token is special whatever its entry says
        t.special = t.special or t.content in specials.values()
    if (
        pipeline is not None
        and added
        and _flags(backend.get_added_tokens_decoder().values()) != _flags(added)
    ):
        backend = _without_added_tokens(backend)  # these classes take the added tokens from the config alone
    if pipeline is xlmr_pipeline:
        xlmr_pipeline(backend, add_prefix_space=bool(config.get("add_prefix_space", True)))
    elif pipeline is not None:
        pipeline(backend)
    have = {t.content for t in backend.get_added_tokens_decoder().values()}
    new = [t for t in [*added, *extra_added] if t.content not in have]
    backend.add_tokens([t for t in new if not t.special])
    backend.add_special_tokens([t for t in new if t.special])
    # the named and extra special tokens that are not yet added tokens (a token's first addition decides
    # whether decode skips it, in tokenizers as in transformers)
    have = {t.content for t in backend.get_added_tokens_decoder().values()}
    wanted = dict.fromkeys([*specials.values(), *extras])
    backend.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in wanted if t not in have]
    )
    if cls == "XLMRobertaTokenizer":
        xlmr_template(backend, specials)
    elif "add_bos_token" in config or "add_eos_token" in config or backend.post_processor is None:
        template(backend, specials, bool(config.get("add_bos_token")), bool(config.get("add_eos_token")))
    keep = ("tokenizer_class", "add_bos_token", "add_eos_token", "add_prefix_space", "model_max_length")
    keep += ("padding_side", "clean_up_tokenization_spaces")
    kept = {k: config[k] for k in keep if k in config}
    if cls in PIPELINES and "padding_side" not in kept:
        kept["padding_side"] = "left" if cls == "GemmaTokenizer" else "right"
    try:
        return Tokenizer(backend, specials, kept, extras)
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _flags(tokens) -> dict:
    return {t.content: (t.special, t.lstrip, t.rstrip, t.single_word, t.normalized) for t in tokens}


def _without_added_tokens(backend: Backend) -> Backend:
    data = json.loads(backend.to_str())
    data["added_tokens"] = []
    return Backend.from_str(json.dumps(data))


def _by_id(item) -> int:
    return int(item[0])


def _added_token(d) -> AddedToken:
    if isinstance(d, str):
        return AddedToken(d, special=True)
    fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
    return AddedToken(**{k: d[k] for k in fields if k in d})


def _named_specials(config: dict) -> tuple[dict[str, str], list[str]]:
    """bos_token, ... and model-specific *_token entries (Gemma3's boi_token, image_token ...) as strings, and
    the extra_special_tokens list."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if key.endswith("_token") and (value is None or isinstance(value, (str, dict))):
            text = value if value is None or isinstance(value, str) else value.get("content")
            if text is None or isinstance(text, str):
                out[key] = text
    ordered = {k: out[k] for k in NAMED if k in out}
    ordered.update({k: v for k, v in out.items() if k not in ordered})
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):  # named ones, as transformers treats a dict
        ordered.update({k: _content(v) for k, v in extra.items()})
        extra = []
    return ordered, [_content(t) for t in extra]


def _content(t) -> str:
    return t if isinstance(t, str) else t.get("content")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def folder_config(folder: Path) -> dict:
    """tokenizer_config.json, completed from special_tokens_map.json where transformers would."""
    path = folder / "tokenizer_config.json"
    config = _read_json(path) if path.is_file() else {}
    legacy = folder / "special_tokens_map.json"
    if "added_tokens_decoder" not in config and legacy.is_file():
        config.update(_read_json(legacy))
    return config


def from_folder(folder: Path) -> Tokenizer:
    """A folder's tokenizer.json with its tokenizer_config.json (see the module docstring)."""
    path = folder / "tokenizer.json"
    try:
        backend = Backend.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for a bad file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a tokenizers file ({first})") from None
    return build(backend, folder_config(folder), str(folder))
