"""Sentence or tags -> XML prompt with the model's own Gemma3 (the text encoder, used as the chat model it is).

NewBie's text encoder is Gemma3-4B-it, an instruction-tuned chat model whose output head is its tied
embedding table, so the same weights that encode prompts can write them: logits = final-normed hidden @
embed_tokens.weight.T (softcapped when the config says so). No second copy of any weight is made.

The answer is constrained token by token to the XML subset our parser reads, so it always parses:
- structure (`<character_N>`, field tags, `</...>`, `<general_tags>`, `<caption>`) is chosen only among the
  tags allowed at that point, in the canonical field order, each tag's tokens forced once it is unambiguous;
- field text may use any token whose text has no `<`, `>`, `&` or line break, and a field can be closed only
  after it holds a letter or digit (no empty fields);
- every field and the whole answer have a token budget; when it runs out the open tags are closed.
The result is re-rendered by our builder (underscores, `\\(` `\\)` escapes, empty fields dropped) and linted.
Imported only on demand: it needs torch, unlike the rest of newbie.prompts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from newbie.errors import NewbieError

from .build import from_dict
from .expand import expand as rule_expand
from .lint import LintWarning, lint
from .model import CHARACTER_FIELDS, GENERAL_FIELDS
from .parse import parse, prompt_kind
from .render import to_xml

MAX_INPUT_CHARS = 2000
MAX_CHARACTERS = 4  # lint's NB101 limit: more are never generated
FIELD_TOKENS = {"n": 16, "caption": 96}  # content tokens per field; tag fields get TAG_FIELD_TOKENS
TAG_FIELD_TOKENS = 48

# Our own system prompt, following the rules of the NewBie team's "Danbooru-to-XML" Gemma workflow
# (spec/newbie-exp0.1.md section 5). Gemma has no system role: it goes at the top of the first user turn.
SYSTEM_PROMPT = f"""You turn a short image description (a sentence or a list of Danbooru tags) into the XML \
prompt of the NewBie anime image model. Rules:
- Answer with XML only: one <character_N> block per person (N = 1, 2, ...), then <general_tags>, then <caption>.
- Character fields, in this order: {" ".join(f"<{f}>" for f in CHARACTER_FIELDS)}.
- General fields, in this order: {" ".join(f"<{f}>" for f in GENERAL_FIELDS)}.
- Field values are comma-separated Danbooru tags with underscores. Keep every tag the user gave verbatim.
- Escape parentheses inside tags as \\( and \\).
- A named character's Danbooru name goes in <n>; write $character_N$ when no name is given.
- Leave out every field that would be empty.
- <caption> is one or two plain English sentences describing the whole image, without underscores."""

# Few-shot examples, rendered by our own builder so they show exactly the layout the grammar enforces.
_EXAMPLES = [
    (
        "saber (fate) in armor holding a sword on a hill at sunset, a boy with short black hair watching her",
        {
            "characters": [
                {
                    "n": "saber_(fate)",
                    "gender": "1girl",
                    "appearance": "blonde_hair, green_eyes, ahoge, braid",
                    "clothing": "armor, armored_dress, blue_dress",
                    "expression": "serious",
                    "action": "standing, holding_sword",
                    "position": "left",
                },
                {
                    "gender": "1boy",
                    "appearance": "black_hair, short_hair",
                    "action": "watching",
                    "position": "right",
                },
            ],
            "general_tags": {
                "count": "1girl, 1boy",
                "style": "anime_style",
                "background": "hill, sunset, sky",
                "lighting": "backlighting",
                "other": "fate_(series)",
            },
            "caption": "Saber in blue and silver armor stands on a hill at sunset holding a sword while a boy "
            "with short black hair watches her.",
        },
    ),
    (
        "1girl, solo, silver_hair, red_eyes, maid, smile, looking_at_viewer, indoors",
        {
            "characters": [
                {
                    "gender": "1girl",
                    "appearance": "silver_hair, red_eyes",
                    "clothing": "maid",
                    "expression": "smile, looking_at_viewer",
                },
            ],
            "general_tags": {"count": "solo", "background": "indoors"},
            "caption": "A smiling maid with silver hair and red eyes looks at the viewer in a room.",
        },
    ),
]


def examples() -> list[tuple[str, str]]:
    """(user text, XML answer) pairs of the few-shot prompt."""
    return [(text, to_xml(from_dict(data))) for text, data in _EXAMPLES]


def chat_text(user: str) -> str:
    """The conversation in Gemma's chat format (system prompt in the first user turn), ending where the
    model's answer starts. The tokenizer adds <bos>."""
    turns = []
    for i, (text, answer) in enumerate(examples()):
        content = f"{SYSTEM_PROMPT}\n\n{text}" if i == 0 else text
        turns.append(
            f"<start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n{answer}<end_of_turn>\n"
        )
    turns.append(f"<start_of_turn>user\n{user}<end_of_turn>\n<start_of_turn>model\n")
    return "".join(turns)


# ---------------------------------------------------------------------------------------------------------
# The tokenizer's vocabulary, as text


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
    backend = getattr(tokenizer, "backend_tokenizer", None)
    seqs = [[anchor, i] for i in range(n)]
    if backend is not None:  # Rust, parallel: about a second for Gemma's 262k tokens
        both = backend.decode_batch(seqs, skip_special_tokens=False)
        head = backend.decode([anchor], skip_special_tokens=False)
    else:
        both = tokenizer.batch_decode(seqs, skip_special_tokens=False)
        head = tokenizer.decode([anchor], skip_special_tokens=False)
    pieces = tuple(b[len(head) :] if b.startswith(head) else "" for b in both)
    banned = set(
        "<>&\n\r\t\ufffd"
    )  # markup, entities, line breaks and half-decoded bytes never go into a field
    content = [bool(p) and i not in specials and banned.isdisjoint(p) for i, p in enumerate(pieces)]
    wordy = [ok and any(c.isalnum() for c in p) for ok, p in zip(content, pieces)]
    pad = [False] * (size - n)
    return Vocab(pieces, torch.tensor(content + pad), torch.tensor(wordy + pad))


# ---------------------------------------------------------------------------------------------------------
# Running Gemma as a chat model


def lm_logits(gemma, hidden: torch.Tensor) -> torch.Tensor:
    """(D,) or (1, D) final-normed hidden -> (V,) float32 logits through the tied embedding table."""
    table = gemma.embed_tokens.weight
    logits = (hidden.reshape(1, -1).to(table.device, table.dtype) @ table.T).float()[0]
    cap = getattr(gemma.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _embed(gemma, ids: torch.Tensor, device) -> torch.Tensor:
    table = gemma.embed_tokens.weight  # a memory plan may keep it on the CPU: look up where it is
    return gemma.embed_tokens(ids.to(table.device)).to(device)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class StaticDecoder:
    """Gemma3TextModel's math over a preallocated KV cache: the prompt in one pass, then one token per step.
    On CUDA the step (embedding, 34 layers, logits) is captured once as a CUDA graph, so a token costs one
    graph launch instead of thousands of kernel launches from Python. Same modules and weights as the encoder."""

    def __init__(self, gemma, max_len: int, device: torch.device, use_graph: bool = True):
        cfg = gemma.config
        device = _indexed(device)
        self.gemma, self.device, self.max_len = gemma, device, max_len
        dtype = gemma.norm.weight.dtype
        kv_shape = (1, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(kv_shape, device=device, dtype=dtype) for _ in gemma.layers]
        self.v = [torch.zeros(kv_shape, device=device, dtype=dtype) for _ in gemma.layers]
        self.keys = torch.arange(max_len, device=device)
        self.types = list(cfg.layer_types)
        # cos/sin for every position, per layer type, from the model's own rotary module (its scaling rules)
        probe = torch.zeros(1, device=device, dtype=dtype)
        self.rope = {t: gemma.rotary_emb(probe, self.keys[None], t) for t in set(self.types)}
        self.window = cfg.sliding_window
        self.graph = None
        self.graph_error = ""
        if use_graph and device.type == "cuda" and gemma.embed_tokens.weight.device == device:
            self._capture()

    def forward(self, h: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        """h (1, T, D) embedded tokens at positions pos (T,) -> (1, D) final-normed hidden of the last one.
        n_keys: attend over the first n_keys cache slots only (eager steps); a CUDA graph reads them all."""
        T, L = h.shape[1], n_keys or self.max_len
        keys = self.keys[:L]
        causal = keys[None, :] <= pos[:, None]  # (T, L): unwritten slots are never read
        sliding = causal & (keys[None, :] > pos[:, None] - self.window)
        rope = {
            k: [t.index_select(1, pos)[:, None] for t in cs] for k, cs in self.rope.items()
        }  # (1, 1, T, hd)
        for i, layer in enumerate(self.gemma.layers):
            attn = layer.self_attn
            cos, sin = rope[self.types[i]]
            x = layer.input_layernorm(h)
            q = attn.q_norm(attn.q_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2))  # (1, H, T, hd)
            k = attn.k_norm(attn.k_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2))  # (1, KV, T, hd)
            v = attn.v_proj(x).view(1, T, -1, attn.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            mask = sliding if self.types[i] == "sliding_attention" else causal
            o = F.scaled_dot_product_attention(
                q,
                self.k[i][:, :, :L],
                self.v[i][:, :, :L],
                attn_mask=mask[None, None],
                scale=attn.scaling,
                enable_gqa=True,
            )
            h = h + layer.post_attention_layernorm(attn.o_proj(o.transpose(1, 2).reshape(1, T, -1)))
            h = h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
        return self.gemma.norm(h[:, -1])

    def _logits_at(self, ids: torch.Tensor, pos: torch.Tensor, n_keys: int | None = None) -> torch.Tensor:
        return lm_logits(self.gemma, self.forward(_embed(self.gemma, ids[None], self.device), pos, n_keys))

    def _capture(self) -> None:
        self.tok = torch.zeros(1, dtype=torch.long, device=self.device)
        self.pos = torch.full((1,), self.max_len - 1, dtype=torch.long, device=self.device)  # warm-up slot
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._logits_at(self.tok, self.pos)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = self._logits_at(self.tok, self.pos)
            self.graph = graph
        except Exception as e:  # noqa: BLE001 - e.g. a quantized kernel that cannot be captured: eager steps work
            self.graph, self.graph_error = None, f"{type(e).__name__}: {e}"
            torch.cuda.synchronize(self.device)

    def prefill(self, ids: list[int]) -> torch.Tensor:
        n = len(ids)
        if n >= self.max_len:
            raise NewbieError(f"the expansion prompt is {n} tokens; the cache holds {self.max_len}")
        t = torch.tensor(ids, device=self.device)
        self.n = n
        return self._logits_at(t, torch.arange(n, device=self.device), n)

    def step(self, token: int) -> torch.Tensor:
        if self.n >= self.max_len:
            raise NewbieError("the expansion ran past its token budget")
        if self.graph is not None:
            self.tok.fill_(token)
            self.pos.fill_(self.n)
            self.graph.replay()
            out = self.out
        else:
            out = self._logits_at(
                torch.tensor([token], device=self.device),
                torch.tensor([self.n], device=self.device),
                self.n + 1,
            )
        self.n += 1
        return out


class ReferenceDecoder:
    """Gemma3TextModel.forward with transformers' DynamicCache. Slower, but it goes through each layer's
    forward, so streamed layers (memory plans that move blocks in forward hooks) work; also the reference
    the static decoder is tested against."""

    def __init__(self, gemma, device: torch.device):
        from transformers import DynamicCache

        self.gemma, self.device = gemma, device
        self.cache = DynamicCache(config=gemma.config)
        self.graph, self.graph_error = None, ""

    def _run(self, ids: list[int]) -> torch.Tensor:
        embeds = _embed(self.gemma, torch.tensor([ids]), self.device)
        out = self.gemma(inputs_embeds=embeds, past_key_values=self.cache, use_cache=True)
        return lm_logits(self.gemma, out.last_hidden_state[:, -1])

    def prefill(self, ids: list[int]) -> torch.Tensor:
        return self._run(ids)

    def step(self, token: int) -> torch.Tensor:
        return self._run([token])


def _all_on(module, device: torch.device) -> bool:
    return all(p.device == device for p in module.parameters())


def _indexed(device: torch.device) -> torch.device:
    """ "cuda" -> "cuda:N" (the current device): a tensor's .device always carries the index, and
    torch.device("cuda:0") != torch.device("cuda"), so unindexed devices would never match a weight's."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def make_decoder(gemma, max_len: int, device: torch.device, kind: str = "auto"):
    """ "static" (own KV cache, CUDA graph on CUDA), "reference" (transformers forward), or "auto": static
    unless some layer weights are elsewhere (streamed by a memory plan)."""
    device = _indexed(device)
    if kind == "auto":
        kind = (
            "static" if _all_on(gemma.layers, device) and gemma.norm.weight.device == device else "reference"
        )
    if kind == "static":
        return StaticDecoder(gemma, max_len, device)
    if kind == "reference":
        return ReferenceDecoder(gemma, device)
    raise NewbieError(f"unknown decoder '{kind}' (choose from auto, static, reference)")


# ---------------------------------------------------------------------------------------------------------
# The XML grammar, token by token


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
    setup_s: float = 0.0  # cache allocation and CUDA graph capture
    decoder: str = ""
    graph: bool = False
    graph_error: str = ""  # why the CUDA graph could not be captured (then each step runs eagerly)
    truncated: bool = False  # the token budget ran out and the open tags were closed for it

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.decode_s if self.decode_s > 0 else 0.0


def generate_xml(
    gemma,
    tokenizer,
    text: str,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 512,
    device=None,
    decoder: str = "auto",
) -> tuple[str, GenerationStats]:
    """The raw XML Gemma writes for `text` under the grammar, and how it went. Greedy when seed is None."""
    if max_new_tokens < 1:
        raise NewbieError("max_new_tokens must be at least 1")
    if seed is not None and not temperature > 0:
        raise NewbieError("sampling with a seed needs a temperature > 0")
    device = torch.device(device) if device is not None else gemma.norm.weight.device
    stats = GenerationStats()
    t0 = time.perf_counter()
    vocab_size = gemma.embed_tokens.weight.shape[0]
    voc = vocab_of(tokenizer, vocab_size)
    out_device = gemma.embed_tokens.weight.device  # logits live with the table (on the CPU in some plans)
    blocked = ~voc.content.to(out_device)
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prompt_ids = bos + _encode(tokenizer, chat_text(text))
    stats.prompt_tokens = len(prompt_ids)
    enc = lru_cache(maxsize=None)(lambda s: _encode(tokenizer, s))
    cache_len = (
        -(-(len(prompt_ids) + max_new_tokens + 1) // 64) * 64
    )  # aligned rows suit the attention kernels
    dec = make_decoder(gemma, cache_len, device, decoder)
    stats.decoder, stats.graph, stats.graph_error = type(dec).__name__, dec.graph is not None, dec.graph_error
    gen = torch.Generator(device=out_device).manual_seed(seed) if seed is not None else None
    _sync(device)
    stats.setup_s = time.perf_counter() - t0

    def pick(logits: torch.Tensor, allowed: list[int] | None, close: int | None) -> int:
        """Greedy or seeded choice among the allowed ids (None: content tokens, plus `close` if given)."""
        if allowed is not None:
            idx = torch.tensor(allowed, device=logits.device)
            scores = torch.full_like(logits, -math.inf).index_copy_(0, idx, logits.index_select(0, idx))
        else:
            scores = logits.masked_fill(blocked, -math.inf)
            if close is not None:
                scores[close] = logits[close]
        if gen is None:
            return int(scores.argmax())
        return int(torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1, generator=gen))

    parts: list[str] = []
    open_tags: list[str] = []  # closing texts still owed, innermost last
    budget = [max_new_tokens]

    def feed(ids: list[int]) -> torch.Tensor | None:
        """Feed tokens; None once the budget is spent (the caller then closes what is open)."""
        logits = None
        for t in ids:
            if budget[0] <= 0:
                stats.truncated = True
                return None
            logits = dec.step(t)
            budget[0] -= 1
            stats.new_tokens += 1
        return logits

    def choose(logits, alts: list[tuple[str, str]]):
        """The model picks one structural alternative (label, text); its text is written. (label, logits)."""
        choice = _Choice([(label, s, enc(s)) for label, s in alts])
        while True:
            allowed = choice.allowed()
            token = allowed[0] if len(allowed) == 1 else pick(logits, allowed, None)
            stats.chosen_tokens += len(allowed) > 1
            logits = feed([token])
            if logits is None:
                return None
            done = choice.take(token)
            if done:
                parts.append(done[1])
                return done[0], logits

    def fill(logits, name: str):
        """Field text until the model closes the field or its budget ends; then the closing tag."""
        closing = f"</{name}>" + ("" if name == "caption" else "\n")
        close_ids = enc(closing)
        open_tags.append(closing)
        wordy = False
        for _ in range(FIELD_TOKENS.get(name, TAG_FIELD_TOKENS)):
            token = pick(logits, None, close_ids[0] if wordy else None)
            stats.chosen_tokens += 1
            if wordy and token == close_ids[0]:
                break
            logits = feed([token])
            if logits is None:
                return None
            parts.append(voc.pieces[token])
            wordy = wordy or bool(voc.wordy[token])
        # a field of separators only is dropped by the builder later; the tags are closed either way
        logits = feed(close_ids)
        if logits is None:
            return None
        open_tags.pop()
        parts.append(closing)
        return logits

    def block(logits, name: str, fields: tuple[str, ...]):
        """Fields of an opened <character_N> or <general_tags>, in canonical order, then its closing tag."""
        closing = f"</{name}>\n"
        open_tags.append(closing)
        rest, first = list(fields), True
        while True:
            got = choose(logits, [(f, f"<{f}>") for f in rest] + ([] if first else [("/", closing)]))
            if got is None:
                return None
            label, logits = got
            if label == "/":
                open_tags.pop()
                return logits
            first, rest = False, rest[rest.index(label) + 1 :]
            logits = fill(logits, label)
            if logits is None:
                return None

    t1 = time.perf_counter()
    logits = dec.prefill(prompt_ids)
    _sync(device)
    stats.prefill_s = time.perf_counter() - t1
    t1 = time.perf_counter()
    n_chars = 0
    while logits is not None:
        alts = (
            [(f"character_{n_chars + 1}", f"<character_{n_chars + 1}>\n")] if n_chars < MAX_CHARACTERS else []
        )
        got = choose(logits, alts + [("general_tags", "<general_tags>\n"), ("caption", "<caption>")])
        if got is None:
            break
        label, logits = got
        if label == "caption":
            fill(logits, "caption")
            break
        if label == "general_tags":
            logits = block(logits, "general_tags", GENERAL_FIELDS)
            if logits is not None:  # the caption always follows the general tags
                parts.append("<caption>")
                open_tags.append("</caption>")
                logits = feed(enc("<caption>"))
                if logits is not None:
                    open_tags.pop()
                    fill(logits, "caption")
            break
        n_chars += 1
        logits = block(logits, label, CHARACTER_FIELDS)
    parts += reversed(open_tags)  # the budget ran out inside a field or block: close what is open
    _sync(device)
    stats.decode_s = time.perf_counter() - t1
    return "".join(parts), stats


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------
# The expander


@dataclass
class Expansion:
    xml: str
    warnings: list[LintWarning] = field(default_factory=list)
    source: str = "llm"  # "llm", "rules" (no Gemma loaded) or "input" (the text was XML already)
    raw: str = ""  # what Gemma wrote, before our builder re-rendered it
    stats: GenerationStats | None = None
    note: str = ""


def expand_llm(
    text: str,
    gemma=None,
    tokenizer=None,
    *,
    seed: int | None = None,
    temperature: float = 0.7,
    max_new_tokens: int = 512,
    device=None,
    decoder: str = "auto",
) -> Expansion:
    """XML for `text` written by Gemma under the grammar; the rule-based expander when no Gemma is given."""
    if len(text) > MAX_INPUT_CHARS:
        raise NewbieError(f"the text to expand is {len(text)} characters; the limit is {MAX_INPUT_CHARS}")
    if not text.strip():
        raise NewbieError("nothing to expand: the text is empty")
    if prompt_kind(text) == "xml":
        xml = to_xml(parse(text))
        return Expansion(xml, lint(xml), "input", note="the text is an XML prompt already")
    if gemma is None or tokenizer is None:
        xml = to_xml(rule_expand(text))
        return Expansion(xml, lint(xml), "rules", note="no Gemma loaded: rule-based expansion")
    with torch.no_grad():
        raw, stats = generate_xml(
            gemma,
            tokenizer,
            text,
            seed=seed,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            device=device,
            decoder=decoder,
        )
    prompt = parse(raw)  # cannot fail: the grammar only writes what the parser reads
    if not prompt.caption:  # the budget ended before the caption: the user's own words describe the image
        prompt.caption = " ".join(text.split())
    xml = to_xml(prompt)
    note = "token budget reached: open tags were closed" if stats.truncated else ""
    return Expansion(xml, lint(xml), "llm", raw, stats, note)


def expand_with_pipeline(pipe, text: str, **kwargs) -> Expansion:
    """expand_llm with a loaded Pipeline's Gemma, inside its text stage (a memory plan brings it in)."""
    text_encoders = getattr(pipe, "text", None) if pipe is not None else None
    if text_encoders is None or getattr(text_encoders, "gemma", None) is None:
        return expand_llm(text, **kwargs)
    with pipe.stage("text"):
        return expand_llm(
            text, text_encoders.gemma, text_encoders.gemma_tokenizer, device=text_encoders.device, **kwargs
        )


def load_gemma_only(model=None, text_encoder=None, device: str | None = None, dtype: str = "auto"):
    """(gemma, tokenizer, device, notice) from a model folder (default: the demo model), without the DiT,
    Jina or VAE: for `newbie prompt expand --llm`, which needs only the chat model."""
    from newbie.demo.model import resolve_model
    from newbie.device import DTYPES, parse_dtype, resolve_device
    from newbie.loading.folder import locate
    from newbie.loading.text import load_gemma, load_tokenizer

    model, notice = resolve_model(model)  # None or "demo": the embedded demo model
    dev = resolve_device(device)
    dtype = parse_dtype(dtype, dev)
    folder = locate(model, text_encoder)
    if folder.text_encoder is None:
        raise NewbieError(
            f"{folder.name}: no Gemma3 text encoder (text_encoder/); give --text-encoder, "
            "or drop --llm for the rule-based expander"
        )
    gemma = load_gemma(folder.text_encoder, DTYPES[dtype], dev)
    return gemma, load_tokenizer(folder.gemma_tokenizer_dirs, "Gemma"), dev, notice
