"""The XML grammar, token by token: the tokenizer's vocabulary read as text, and a writer that lets the model
choose only what our parser reads (structure among the tags allowed at that point, field text from content
tokens, every field and the answer on a token budget, the open tags closed when it runs out)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from .model import CHARACTER_FIELDS, GENERAL_FIELDS

MAX_CHARACTERS = 4  # lint's NB101 limit: more are never generated
FIELD_TOKENS = {"n": 16, "caption": 96}  # content tokens per field; tag fields get TAG_FIELD_TOKENS
TAG_FIELD_TOKENS = 48


@dataclass(frozen=True)
class Vocab:
    pieces: tuple[str, ...]  # the text each token adds after another token
    content: torch.Tensor  # (V,) bool: may appear inside a field
    wordy: torch.Tensor  # (V,) bool: content holding a letter or digit (a field may close after one)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@lru_cache(maxsize=4)
def vocab_of(tokenizer, size: int) -> Vocab:
    """Pieces for token ids 0..size-1 (the model's vocabulary; ids the tokenizer lacks are never allowed).

    A token's text depends on what precedes it (SentencePiece's leading space, a word-level tokenizer's
    joining space), so each piece is read as decode([anchor, id]) minus decode([anchor])."""
    n = min(size, len(tokenizer))
    specials = set(tokenizer.all_special_ids)
    specials.update(i for i, t in tokenizer.added_tokens_decoder.items() if t.special)
    # a plain word to stand before each token: one of "a b c" or, in a small vocabulary, any alphanumeric token
    candidates = [*_encode(tokenizer, "a b c"), *range(n)]
    anchor = next(i for i in candidates if i not in specials and tokenizer.decode([i]).strip().isalnum())
    # newbie's Tokenizer decodes a batch in Rust, in parallel: about a second for Gemma's 262k tokens
    both = tokenizer.batch_decode([[anchor, i] for i in range(n)], skip_special_tokens=False)
    head = tokenizer.decode([anchor], skip_special_tokens=False)
    pieces = tuple(b[len(head) :] if b.startswith(head) else "" for b in both)
    banned = set(
        "<>&\n\r\t\ufffd"
    )  # markup, entities, line breaks and half-decoded bytes never go into a field
    content = [bool(p) and i not in specials and banned.isdisjoint(p) for i, p in enumerate(pieces)]
    wordy = [ok and any(c.isalnum() for c in p) for ok, p in zip(content, pieces)]
    pad = [False] * (size - n)
    return Vocab(pieces, torch.tensor(content + pad), torch.tensor(wordy + pad))


@dataclass
class _Choice:
    """Structural alternatives (label, literal text, token ids), narrowed as their tokens are chosen."""

    alts: list[tuple[str, str, list[int]]]
    offset: int = 0

    def allowed(self) -> list[int]:
        return sorted({ids[self.offset] for _, _, ids in self.alts if len(ids) > self.offset})

    def take(self, token: int) -> tuple[str, str] | None:
        """Advance by one token; (label, text) once an alternative is complete."""
        self.alts = [a for a in self.alts if len(a[2]) > self.offset and a[2][self.offset] == token]
        self.offset += 1
        done = [a for a in self.alts if len(a[2]) == self.offset]
        return (
            (done[0][0], done[0][1]) if done else None
        )  # two spellings one tokenizer cannot tell apart: the first


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    new_tokens: int = 0  # every token fed after the prompt, chosen or forced
    chosen_tokens: int = 0  # of which picked from the model's distribution (more than one allowed)
    prefill_s: float = 0.0
    decode_s: float = 0.0
    setup_s: float = 0.0  # cache allocation, compile (decoder "compiled") and CUDA graph capture
    decoder: str = ""
    graph: bool = False
    graph_error: str = ""  # why the CUDA graph (or the compiled step) could not be had, and what runs instead
    compiled: bool = False  # the step runs torch.compile'd code (decoder "compiled")
    truncated: bool = False  # the token budget ran out and the open tags were closed for it

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0


class GrammarWriter:
    """Writes one answer: each token the decoder is fed, chosen by the model among what the grammar allows
    (greedy, or sampled with `gen` at `temperature`), until the document is complete or the budget is spent."""

    def __init__(
        self, dec, tokenizer, voc: Vocab, blocked, stats: GenerationStats, budget: int, gen, temperature
    ):
        self.dec, self.voc, self.blocked, self.stats = dec, voc, blocked, stats
        self.gen, self.temperature = gen, temperature
        self.enc = lru_cache(maxsize=None)(lambda s: _encode(tokenizer, s))
        self.parts: list[str] = []
        self.open_tags: list[str] = []  # closing texts still owed, innermost last
        self.budget = budget

    def pick(self, logits: torch.Tensor, allowed: list[int] | None, close: int | None) -> int:
        """Greedy or seeded choice among the allowed ids (None: content tokens, plus `close` if given)."""
        if allowed is not None:
            idx = torch.tensor(allowed, device=logits.device)
            scores = torch.full_like(logits, -math.inf).index_copy_(0, idx, logits.index_select(0, idx))
        else:
            scores = logits.masked_fill(self.blocked, -math.inf)
            if close is not None:
                scores[close] = logits[close]
        if self.gen is None:
            return int(scores.argmax())
        return int(torch.multinomial(torch.softmax(scores / self.temperature, dim=-1), 1, generator=self.gen))

    def feed(self, ids: list[int]) -> torch.Tensor | None:
        """Feed tokens; None once the budget is spent (the caller then closes what is open)."""
        logits = None
        for t in ids:
            if self.budget <= 0:
                self.stats.truncated = True
                return None
            logits = self.dec.step(t)
            self.budget -= 1
            self.stats.new_tokens += 1
        return logits

    def choose(self, logits, alts: list[tuple[str, str]]):
        """The model picks one structural alternative (label, text); its text is written. (label, logits)."""
        choice = _Choice([(label, s, self.enc(s)) for label, s in alts])
        while True:
            allowed = choice.allowed()
            token = allowed[0] if len(allowed) == 1 else self.pick(logits, allowed, None)
            self.stats.chosen_tokens += len(allowed) > 1
            logits = self.feed([token])
            if logits is None:
                return None
            done = choice.take(token)
            if done:
                self.parts.append(done[1])
                return done[0], logits

    def fill(self, logits, name: str):
        """Field text until the model closes the field or its budget ends; then the closing tag."""
        closing = f"</{name}>" + ("" if name == "caption" else "\n")
        close_ids = self.enc(closing)
        self.open_tags.append(closing)
        wordy = False
        for _ in range(FIELD_TOKENS.get(name, TAG_FIELD_TOKENS)):
            token = self.pick(logits, None, close_ids[0] if wordy else None)
            self.stats.chosen_tokens += 1
            if wordy and token == close_ids[0]:
                break
            logits = self.feed([token])
            if logits is None:
                return None
            self.parts.append(self.voc.pieces[token])
            wordy = wordy or bool(self.voc.wordy[token])
        # a field of separators only is dropped by the builder later; the tags are closed either way
        logits = self.feed(close_ids)
        if logits is None:
            return None
        self.open_tags.pop()
        self.parts.append(closing)
        return logits

    def block(self, logits, name: str, fields: tuple[str, ...]):
        """Fields of an opened <character_N> or <general_tags>, in canonical order, then its closing tag."""
        closing = f"</{name}>\n"
        self.open_tags.append(closing)
        rest, first = list(fields), True
        while True:
            got = self.choose(logits, [(f, f"<{f}>") for f in rest] + ([] if first else [("/", closing)]))
            if got is None:
                return None
            label, logits = got
            if label == "/":
                self.open_tags.pop()
                return logits
            first, rest = False, rest[rest.index(label) + 1 :]
            logits = self.fill(logits, label)
            if logits is None:
                return None

    def document(self, logits: torch.Tensor) -> str:
        """Characters, then the general tags and the caption, from the prompt's logits; the open tags closed
        where the budget ran out."""
        n_chars = 0
        while logits is not None:
            alts = (
                [(f"character_{n_chars + 1}", f"<character_{n_chars + 1}>\n")]
                if n_chars < MAX_CHARACTERS
                else []
            )
            got = self.choose(logits, alts + [("general_tags", "<general_tags>\n"), ("caption", "<caption>")])
            if got is None:
                break
            label, logits = got
            if label == "caption":
                self.fill(logits, "caption")
                break
            if label == "general_tags":
                logits = self.block(logits, "general_tags", GENERAL_FIELDS)
                if logits is not None:  # the caption always follows the general tags
                    self.parts.append("<caption>")
                    self.open_tags.append("</caption>")
                    logits = self.feed(self.enc("<caption>"))
                    if logits is not None:
                        self.open_tags.pop()
                        self.fill(logits, "caption")
                break
            n_chars += 1
            logits = self.block(logits, label, CHARACTER_FIELDS)
        self.parts += reversed(
            self.open_tags
        )  # the budget ran out inside a field or block: close what is open
        return "".join(self.parts)
