"""Strict loading into modules built without allocating their parameters."""

from __future__ import annotations

import torch

from newbie.errors import CheckpointError


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, what: str) -> None:
    check_keys(model, sd, where, what)
    model.load_state_dict(sd, strict=True, assign=True)


def check_keys(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str, what: str) -> None:
    want = model.state_dict()
    missing = sorted(set(want) - set(sd))
    unexpected = sorted(set(sd) - set(want))
    if missing or unexpected:
        msg = []
        if missing:
            msg.append(f"missing {len(missing)}: {', '.join(missing[:5])}")
        if unexpected:
            msg.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:5])}")
        raise CheckpointError(f"{where}: {what} weights do not match its config ({'; '.join(msg)})")
    bad = [
        f"{k} {tuple(sd[k].shape)} != {tuple(want[k].shape)}" for k in want if sd[k].shape != want[k].shape
    ]
    if bad:
        raise CheckpointError(f"{where}: {what} tensor shape mismatch: {', '.join(bad[:5])}")
    # integer data where the model has float weights: a damaged or foreign file, not an engine bug
    wrong = [
        f"{k} ({sd[k].dtype})" for k in want if want[k].is_floating_point() and not sd[k].is_floating_point()
    ]
    if wrong:
        raise CheckpointError(f"{where}: {what} holds non-float weights: {', '.join(wrong[:3])}")


def build_empty(factory, device):
    """Parameters on meta (filled by an assign-load), buffers such as RoPE tables built for real."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = factory()
    return model
