"""The static decoder's "compiled" kind on the CPU: the torch.compile'd one-token step writes what the eager
step writes, compiles once per shape, and falls back to the plain step (saying why) when compiling fails."""

import pytest
import torch

from newbie.errors import NewbieError
from newbie.model.gemma import FULL, SLIDING, Gemma, GemmaConfig, init_weights
from newbie.prompts.llm_model import DECODER_KINDS, make_decoder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gemma():
    """Both layer types, a window the cache outgrows, linear RoPE scaling and a logit softcap: every branch
    of the step."""
    torch.manual_seed(0)
    cfg = GemmaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=4,
        layer_types=[SLIDING, FULL, SLIDING],
        rope_parameters={
            FULL: {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            SLIDING: {"rope_type": "default", "rope_theta": 1e4},
        },
        final_logit_softcapping=3.0,
    )
    model = init_weights(Gemma(cfg)).eval().requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():  # RMSNorm weights start at 0: give every weight a value
            p.normal_(0, 0.3)
    return model


IDS = [5, 9, 17, 3, 40, 22, 8, 61, 33, 12, 7, 50]


def _decode(dec, prompt: int = 5) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([dec.prefill(IDS[:prompt])] + [dec.step(t) for t in IDS[prompt:]])


def test_the_compiled_step_writes_what_the_eager_step_writes(gemma):
    eager = _decode(make_decoder(gemma, 16, CPU, "eager"))
    dec = make_decoder(gemma, 16, CPU, "compiled", backend="aot_eager")
    assert dec.compiled is not None and dec.graph is None and dec.graph_error == ""  # no graph on the CPU
    got = _decode(dec)
    torch.testing.assert_close(got, eager, atol=1e-5, rtol=1e-5)
    assert got.abs().max() <= 3.0  # the softcap is inside the compiled step
    # past the sliding window: its mask is part of the compiled step, not only of the eager one
    assert len(IDS) > gemma.config.sliding_window + 5


def test_a_second_decoder_of_the_same_shape_does_not_compile_again(gemma):
    from torch._dynamo.utils import counters

    make_decoder(gemma, 16, CPU, "compiled", backend="aot_eager")
    before = counters["stats"]["unique_graphs"]
    dec = make_decoder(gemma, 16, CPU, "compiled", backend="aot_eager")  # its own cache tensors
    assert counters["stats"]["unique_graphs"] == before
    torch.testing.assert_close(_decode(dec), _decode(make_decoder(gemma, 16, CPU, "eager")))


def test_a_failed_compile_falls_back_to_the_plain_step_and_says_why(gemma):
    def broken(graph_module, example_inputs):
        raise RuntimeError("no kernels today")

    dec = make_decoder(gemma, 16, CPU, "compiled", backend=broken)
    assert dec.compiled is None
    assert "compile failed" in dec.graph_error and "no kernels today" in dec.graph_error
    torch.testing.assert_close(_decode(dec), _decode(make_decoder(gemma, 16, CPU, "eager")))


def test_unknown_kinds_are_refused_naming_the_choices(gemma):
    assert DECODER_KINDS == ("auto", "eager", "compiled")
    with pytest.raises(NewbieError, match=r"unknown decoder 'fast' \(choose from auto, eager, compiled\)"):
        make_decoder(gemma, 16, CPU, "fast")


def test_streamed_weights_get_no_compiled_step(gemma):
    import copy

    streamed = copy.deepcopy(gemma)
    streamed.layers[1].to("meta")  # as a memory plan's streamed block sits off the device between uses
    dec = make_decoder(streamed, 16, CPU, "compiled", backend="aot_eager")
    assert not dec.resident and dec.compiled is None and dec.graph is None


@pytest.mark.slow  # cold ~20 s on a loaded 2-core CPU (inductor's C++ kernels), ~6 s from its cache
def test_the_inductor_step_matches_the_eager_step(gemma):
    # inductor's own CPU kernels (the GPU's are Triton: measured by the speed bench's llm section)
    dec = make_decoder(gemma, 16, CPU, "compiled")
    assert dec.compiled is not None and dec.graph_error == "", dec.graph_error
    eager = _decode(make_decoder(gemma, 16, CPU, "eager"))
    torch.testing.assert_close(_decode(dec), eager, atol=1e-5, rtol=1e-5)


def test_the_static_steps_embedding_has_the_modules_bits(gemma):
    import copy

    half = copy.deepcopy(gemma).to(torch.bfloat16)  # sqrt(32) = 5.657 -> 5.656 in bf16: the rounded factor
    dec = make_decoder(half, 16, CPU, "eager")
    assert dec.embed_scale.dtype == torch.bfloat16 and dec.embed_scale.device == CPU
    tok = torch.tensor(IDS)
    ours = torch.nn.functional.embedding(tok, half.embed_tokens.weight) * dec.embed_scale
    assert torch.equal(ours, half.embed_tokens(tok))


def test_a_dropped_compiled_decoder_is_freed_at_once(gemma):
    # its KV cache goes with it (107 MB at Gemma3-4B's shapes): nothing (the compiled function, dynamo's
    # cache) keeps it, and no reference cycle waits for the garbage collector
    import gc
    import weakref

    dec = make_decoder(gemma, 16, CPU, "compiled", backend="aot_eager")
    _decode(dec)
    ref = weakref.ref(dec)
    gc.disable()
    try:
        del dec
        assert ref() is None
    finally:
        gc.enable()
