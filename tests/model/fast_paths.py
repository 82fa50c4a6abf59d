"""Test helpers around model/fused.py: undo the fast paths, and check the fused w1|w3 still backs both."""

from torch import nn

from newbie.precision.fp8 import Float8Linear


def disable(dit: nn.Module) -> None:
    """Back to the reference attention and two FFN GEMMs (w1/w3 stay views, which is harmless)."""
    for block in dit.blocks():
        block.attention.backend = "auto"
        block.feed_forward.unfuse()


def w13_intact(ff: nn.Module) -> bool:
    """The fused tensor still backs both weights (a memory plan or dtype change would replace them)."""
    w13 = ff.__dict__.get("w13")
    if w13 is None:
        return False
    w = w13.weight if isinstance(w13, Float8Linear) else w13
    h = ff.w1.weight.shape[0]
    return (
        ff.w1.weight.data_ptr() == w.data_ptr()
        and ff.w3.weight.data_ptr() == w[h:].data_ptr()
        and ff.w1.weight.dtype == w.dtype
    )
