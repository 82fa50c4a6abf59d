import math

import torch

from newbie.model.math import apply_rope, rope_angles, rope_inv_freqs, timestep_embedding


def test_timestep_embedding_is_cos_then_sin_of_raw_t():
    t = torch.tensor([0.0, 0.5])
    e = timestep_embedding(t, 8)
    freqs = [math.exp(-math.log(10000) * i / 4) for i in range(4)]
    assert torch.allclose(e[1, :4], torch.tensor([math.cos(0.5 * f) for f in freqs]))
    assert torch.allclose(e[1, 4:], torch.tensor([math.sin(0.5 * f) for f in freqs]))
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))


def test_rope_rotates_adjacent_pairs_as_complex_numbers():
    x = torch.randn(1, 3, 2, 12)
    pos = torch.tensor([[[0, 0, 0], [1, 2, 3], [5, 0, 1]]])
    ang = rope_angles(pos, rope_inv_freqs((4, 4, 4), 10000.0))
    out = apply_rope(x, ang.cos(), ang.sin())
    xc = torch.view_as_complex(x.double().reshape(1, 3, 2, 6, 2))
    ref = torch.view_as_real(
        xc * torch.polar(torch.ones_like(ang.double()), ang.double())[:, :, None]
    ).flatten(-2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[0, 0], x[0, 0])  # position 0 is the identity


def test_rope_attention_scores_depend_on_relative_position_only():
    q, k = torch.randn(1, 1, 1, 12), torch.randn(1, 1, 1, 12)
    inv = rope_inv_freqs((4, 4, 4), 10000.0)

    def score(pq, pk):
        aq, ak = rope_angles(torch.tensor([[pq]]), inv), rope_angles(torch.tensor([[pk]]), inv)
        return (apply_rope(q, aq.cos(), aq.sin()) * apply_rope(k, ak.cos(), ak.sin())).sum()

    torch.testing.assert_close(score([3, 1, 2], [1, 0, 0]), score([13, 5, 7], [11, 4, 5]))
