import numpy as np

import newbie
from newbie.pipeline.load import warm_up


def test_warm_up_caches_the_negative_and_changes_no_image(tiny_model_dir):
    kw = dict(seed=3, steps=2, width=64, height=64)
    cold = newbie.load(tiny_model_dir, device="cpu", dtype="fp32")
    want = cold.generate("a red cat", **kw).images[0]
    warm = newbie.load(tiny_model_dir, device="cpu", dtype="fp32", warm=True)
    assert warm.embed_cache.get(warm.spec.sampling.negative) is not None
    assert warm_up(warm) > 0  # again: harmless
    got = warm.generate("a red cat", **kw).images[0]
    assert np.array_equal(np.asarray(got), np.asarray(want))
