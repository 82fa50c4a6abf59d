"""Adapter tensor names -> (transformer Linear name, part). Accepts the key spellings of spec §6: PEFT
(`base_model.model.<m>.lora_A.weight`), ComfyUI's prefixes, kohya (`lora_down`/`lora_up`/`alpha`) and LyCORIS
(`lycoris_<m with . -> _>.lokr_w1`)."""

from __future__ import annotations

from newbie.errors import NewbieError

# name ending -> part; longest endings first so `.lokr_w1_a` is not read as `.lokr_w1`
PARTS = {
    ".lora_A.weight": "lora_down",
    ".lora_B.weight": "lora_up",
    ".lora_down.weight": "lora_down",
    ".lora_up.weight": "lora_up",
    ".lokr_w1_a": "lokr_w1_a",
    ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2_a": "lokr_w2_a",
    ".lokr_w2_b": "lokr_w2_b",
    ".lokr_w1": "lokr_w1",
    ".lokr_w2": "lokr_w2",
    ".alpha": "alpha",
}
# endings of adapter kinds we recognise but do not apply: say so instead of "unknown key"
UNSUPPORTED = {
    ".lokr_t2": "LoKr Tucker factors (conv layers only)",
    ".dora_scale": "DoRA",
    ".lora_magnitude_vector": "DoRA",
    ".hada_w1_a": "LoHa",
    ".hada_w1_b": "LoHa",
    ".hada_w2_a": "LoHa",
    ".hada_w2_b": "LoHa",
    ".w_norm": "norm-layer training",
    ".b_norm": "norm-layer training",
    ".diff": "full-weight diffs",
    ".lora_B.bias": "LoRA biases",
    ".oft_blocks": "OFT",
    ".oft_diag": "OFT",
}
DOTTED_PREFIXES = (
    "unet.base_model.model.",
    "base_model.model.",
    "model.diffusion_model.",
    "diffusion_model.",
    "transformer.",
)
UNDERSCORED_PREFIXES = ("lycoris_", "lora_unet_", "lora_transformer_")
HINT = " (layers are named as in the official checkpoint, e.g. layers.0.attention.qkv)"


class AdapterMismatch(NewbieError):
    """An adapter that does not fit the loaded transformer; the message names the first key that does not."""


def split_key(key: str) -> tuple[str, str]:
    """'base_model.model.layers.0.attention.qkv.lora_A.weight'
    -> ('base_model.model.layers.0.attention.qkv', 'lora_down')"""
    for ending in sorted(UNSUPPORTED, key=len, reverse=True):
        if key.endswith(ending):
            raise AdapterMismatch(f"key '{key}': {UNSUPPORTED[ending]} adapters are not supported")
    for ending in sorted(PARTS, key=len, reverse=True):
        if key.endswith(ending):
            return key[: -len(ending)], PARTS[ending]
    raise AdapterMismatch(
        f"key '{key}' is not a LoRA/LoKr tensor (expected e.g. '<layer>.lora_A.weight' or "
        f"'lycoris_<layer>.lokr_w1')"
    )


class ModuleNames:
    """Resolves adapter module paths against the transformer's actual Linear layers. Underscored LyCORIS/kohya
    names are looked up in a table built from the real names, because names such as `feed_forward` and
    `adaLN_modulation` contain underscores themselves and cannot be split back by rule."""

    def __init__(self, linear_shapes: dict[str, tuple[int, int]]):
        self.shapes = linear_shapes
        self.underscored: dict[str, str] = {}
        for name in linear_shapes:
            flat = name.replace(".", "_")
            if flat in self.underscored:  # two layers with one underscored spelling: never guess between them
                self.underscored[flat] = ""
            else:
                self.underscored[flat] = name

    def resolve(self, path: str, key: str) -> str:
        for prefix in UNDERSCORED_PREFIXES:
            if path.startswith(prefix):
                name = self.underscored.get(path[len(prefix) :])
                if name:
                    return name
                raise AdapterMismatch(f"key '{key}' names no Linear layer of this transformer{HINT}")
        for prefix in DOTTED_PREFIXES:
            if path.startswith(prefix) and path[len(prefix) :] in self.shapes:
                return path[len(prefix) :]
        if path in self.shapes:
            return path
        raise AdapterMismatch(f"key '{key}' names no Linear layer of this transformer{HINT}")
