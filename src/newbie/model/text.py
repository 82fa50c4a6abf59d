"""Text conditioning: Gemma3 hidden states for the caption tokens, Jina CLIP v2 pooled feature (spec §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from newbie.config import TextConfig
from newbie.model.gemma import hidden_state_layers
from newbie.prompt_kind import prompt_kind


@dataclass
class TextEmbeds:
    cap_feats: Tensor  # (B, L, cap_feat_dim), right-padded, L a multiple of 8
    cap_mask: Tensor  # (B, L) bool
    pooled: Tensor  # (B, clip_dim)

    def to(self, device=None, dtype=None) -> TextEmbeds:
        return TextEmbeds(
            self.cap_feats.to(device, dtype), self.cap_mask.to(device), self.pooled.to(device, dtype)
        )

    def trimmed(self) -> TextEmbeds:
        """Drop caption padding when every sample has the same valid length, so the DiT runs with no mask
        (results are identical: padding is masked anyway). One host sync, once per request."""
        lengths = self.cap_mask.sum(1)
        n = int(lengths[0])
        if bool((lengths == n).all()):
            return TextEmbeds(self.cap_feats[:, :n], self.cap_mask[:, :n], self.pooled)
        return self

    @staticmethod
    def cat(parts: list[TextEmbeds]) -> TextEmbeds:
        """Stack along the batch, right-padding captions to the longest."""
        n = max(p.cap_feats.shape[1] for p in parts)
        feats, masks = [], []
        for p in parts:
            pad = n - p.cap_feats.shape[1]
            feats.append(torch.nn.functional.pad(p.cap_feats, (0, 0, 0, pad)))
            masks.append(torch.nn.functional.pad(p.cap_mask, (0, pad), value=False))
        return TextEmbeds(torch.cat(feats), torch.cat(masks), torch.cat([p.pooled for p in parts]))


PROMPT_START = "<Prompt Start>"  # ends the system prompt in NewBie's Gemma input (and in ComfyUI's workflows)


def gemma_text(prompt: str, cfg: TextConfig) -> str:
    """What Gemma reads: the training system prompt for the prompt's kind, then the prompt.
    An empty prompt (the default negative) stays empty, as in the official sampler. A prompt that already
    carries a system prompt (ComfyUI workflows put one before "<Prompt Start>") is read as written."""
    if not prompt or PROMPT_START in prompt:
        return prompt
    system = cfg.system_prompt_xml if prompt_kind(prompt) == "xml" else cfg.system_prompt_text
    return system + prompt


class TextEncoders:
    def __init__(self, gemma, gemma_tokenizer, jina, jina_tokenizer, cfg: TextConfig):
        self.gemma, self.gemma_tokenizer = gemma, gemma_tokenizer
        self.jina, self.jina_tokenizer = jina, jina_tokenizer
        self.cfg = cfg
        gemma_tokenizer.padding_side = "right"
        jina_tokenizer.padding_side = "right"

    @property
    def device(self) -> torch.device:
        return (
            self.gemma.norm.weight.device
        )  # not the embedding table, which a memory plan may keep on the CPU

    def count_tokens(self, prompt: str) -> int:
        """Gemma tokens of a prompt as encoded (system prompt included): the GPU scripts report it."""
        return len(self.gemma_tokenizer(gemma_text(prompt, self.cfg))["input_ids"])

    @torch.no_grad()
    def encode(self, prompts: list[str], clip_prompts: list[str] | None = None) -> TextEmbeds:
        """clip_prompts: what Jina reads when it differs from Gemma's text (training-time caption dropout
        blanks only Gemma's caption)."""
        device = self.device
        tok = self.gemma_tokenizer(
            [gemma_text(p, self.cfg) for p in prompts],
            padding=True,
            pad_to_multiple_of=self.cfg.pad_multiple,
            max_length=self.cfg.max_tokens,
            truncation=True,
            return_tensors="pt",
        ).to(device)
        table = self.gemma.embed_tokens.weight
        # hidden_states[hidden_layer] (-2: the input of the last layer): only the layers before it run
        n_layers = hidden_state_layers(self.cfg.hidden_layer, len(self.gemma.layers))
        if table.device != device:  # a memory plan keeps the 1.3 GB table on the CPU: look up there
            embeds = self.gemma.embed_tokens(tok.input_ids.to(table.device)).to(device)
            cap_feats = self.gemma(inputs_embeds=embeds, attention_mask=tok.attention_mask, n_layers=n_layers)
        else:
            cap_feats = self.gemma(
                input_ids=tok.input_ids, attention_mask=tok.attention_mask, n_layers=n_layers
            )
        cap_mask = tok.attention_mask.bool()

        jtok = self.jina_tokenizer(
            prompts if clip_prompts is None else clip_prompts,
            padding=True,
            max_length=self.cfg.clip_max_tokens,
            truncation=True,
            return_tensors="pt",
        ).to(self.jina.device)
        hidden = self.jina(jtok.input_ids, jtok.attention_mask).float()
        m = jtok.attention_mask[..., None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)  # masked mean; no projection, no normalisation
        return TextEmbeds(cap_feats, cap_mask, pooled.to(device, cap_feats.dtype))
