"""Prompt-embedding cache: re-generating with another seed never re-runs the text encoders.

Keyed by the prompt, the encoders' weights (content hashes) and their dtype. Entries live in memory (LRU)
and, when a folder is given, on disk as safetensors files named by the key.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from newbie.model.text import TextEmbeds


class EmbeddingCache:
    def __init__(self, encoder_id: str, folder: Path | None = None, capacity: int = 64):
        self.encoder_id, self.folder, self.capacity = encoder_id, folder, capacity
        self.memory: OrderedDict[str, TextEmbeds] = OrderedDict()
        self.hits = self.misses = 0

    def key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.encoder_id}\0{prompt}".encode()).hexdigest()

    def get(self, prompt: str) -> TextEmbeds | None:
        k = self.key(prompt)
        if k in self.memory:
            self.memory.move_to_end(k)
            self.hits += 1
            return self.memory[k]
        if self.folder and (self.folder / f"{k}.safetensors").is_file():
            from safetensors.torch import load_file

            try:
                d = load_file(str(self.folder / f"{k}.safetensors"))
                e = TextEmbeds(d["cap_feats"], d["cap_mask"].bool(), d["pooled"])
            except Exception:  # a damaged cache file is only a miss
                return self._miss()
            self._remember(k, e)
            self.hits += 1
            return e
        return self._miss()

    def _miss(self):
        self.misses += 1
        return None

    def put(self, prompt: str, e: TextEmbeds) -> None:
        k = self.key(prompt)
        e = TextEmbeds(e.cap_feats.detach().cpu(), e.cap_mask.cpu(), e.pooled.detach().cpu())
        self._remember(k, e)
        if self.folder:
            from safetensors.torch import save_file

            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{k}.tmp"
            save_file(
                {
                    "cap_feats": e.cap_feats.contiguous(),
                    "cap_mask": e.cap_mask.to(torch.uint8),
                    "pooled": e.pooled.contiguous(),
                },
                str(tmp),
            )
            os.replace(tmp, self.folder / f"{k}.safetensors")

    def _remember(self, k: str, e: TextEmbeds) -> None:
        self.memory[k] = e
        self.memory.move_to_end(k)
        while len(self.memory) > self.capacity:
            self.memory.popitem(last=False)
