"""Token embeddings that skip their random init when built on the meta device.

The loaders build every model on meta and assign the checkpoint's tensors, so an init there is wasted, and
nn.Embedding's (normal_) on a meta tensor imports torch._dynamo: 1.5 s on a 2-core CPU, 6-12 s on the H100
machine, on the critical path of every fresh load (2026-12-07). Built anywhere else it draws exactly as
nn.Embedding does, so seeded tiny checkpoints keep their bits."""

from __future__ import annotations

from torch import nn


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        if not self.weight.is_meta:
            super().reset_parameters()
