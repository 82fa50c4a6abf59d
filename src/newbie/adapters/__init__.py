"""LoRA and LoKr adapters (spec §6) for the NewBie transformer: read, checked against the model, applied
unfused (per-request wrapping modules) or fused into the weights, and removed again without reloading the base model.

Python: `pipe.generate(prompt, loras=["style.safetensors:0.8", ("char_lora/", 0.6)], fuse_loras=False)`;
`pipe.adapters.clear()` drops them from the model at once.
"""

import importlib

# Lazy, so that `newbie --help` and the CLI flag definitions in this package do not import torch.
_EXPORTS = {
    "Adapter": "newbie.adapters.adapter",
    "linear_shapes": "newbie.adapters.adapter",
    "load_adapter": "newbie.adapters.adapter",
    "AdapterMismatch": "newbie.adapters.keys",
    "ActiveLora": "newbie.adapters.stack",
    "AdapterStack": "newbie.adapters.stack",
    "parse_lora": "newbie.adapters.stack",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'newbie.adapters' has no attribute '{name}'")


__all__ = sorted(_EXPORTS)
