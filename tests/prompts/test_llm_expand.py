"""`prompt expand --llm`: the model's own Gemma writes the XML under a token grammar (CPU, demo model)."""

import argparse
import re

import pytest
import torch

from newbie.cli import prompts as cli
from newbie.errors import NewbieError
from newbie.prompts import CHARACTER_FIELDS, expand, parse, to_xml
from newbie.prompts.llm import (
    SYSTEM_PROMPT,
    TAG_FIELD_TOKENS,
    chat_text,
    examples,
    expand_llm,
    expand_with_pipeline,
    lm_logits,
    load_gemma_only,
    make_decoder,
    vocab_of,
)

INPUTS = [
    "two girls under cherry blossoms, one with silver hair holding an umbrella",
    "1girl, solo, blue_hair, school_uniform, smile",
    "a knight (armor) on a horse at sunset",
]
EMPTY_FIELD = re.compile(r"<([a-z_0-9]+)>[\s,]*</\1>")


@pytest.fixture(scope="module")
def demo_gemma():
    gemma, tokenizer, _, _ = load_gemma_only(device="cpu", dtype="fp32")
    return gemma, tokenizer


def _check_valid(out, text):
    prompt = parse(out.xml)  # raises PromptError if the output is not our XML
    assert prompt.kind == "xml" and prompt.caption
    assert to_xml(prompt) == out.xml  # already in the builder's canonical rendering
    assert parse(out.raw).kind == "xml"  # what Gemma wrote parses too, before re-rendering
    assert len(prompt.characters) <= 4
    assert out.source == "llm" and out.stats.new_tokens > 0


@pytest.mark.parametrize("text", INPUTS)
def test_output_is_valid_xml_greedy_and_seeded(demo_gemma, text):
    gemma, tok = demo_gemma
    for seed in (None, 1):
        out = expand_llm(text, gemma, tok, seed=seed, max_new_tokens=32)
        _check_valid(out, text)
        assert out.stats.new_tokens <= 32


def test_greedy_is_deterministic_and_seeds_matter(demo_gemma):
    gemma, tok = demo_gemma
    a = expand_llm(INPUTS[0], gemma, tok, max_new_tokens=40)
    b = expand_llm(INPUTS[0], gemma, tok, max_new_tokens=40)
    assert a.raw == b.raw and a.xml == b.xml
    s1 = expand_llm(INPUTS[0], gemma, tok, seed=5, max_new_tokens=40)
    s2 = expand_llm(INPUTS[0], gemma, tok, seed=5, max_new_tokens=40)
    assert s1.raw == s2.raw
    others = {expand_llm(INPUTS[0], gemma, tok, seed=s, max_new_tokens=40).raw for s in (6, 7)}
    assert len(others | {s1.raw}) > 1


class ScriptedDecoder:
    """Stands in for Gemma: fixed preferences (token text -> logit), the same at every step."""

    graph, graph_error = None, ""

    def __init__(self, tok, size, prefs):
        self.logits = torch.zeros(size)
        for text, value in prefs.items():
            (i,) = tok(text, add_special_tokens=False)["input_ids"]
            self.logits[i] = value
        self.fed = []

    def prefill(self, ids):
        return self.logits

    def step(self, token):
        self.fed.append(token)
        return self.logits


def _scripted(monkeypatch, demo_gemma, prefs):
    from newbie.prompts import llm

    gemma, tok = demo_gemma
    dec = ScriptedDecoder(tok, gemma.embed_tokens.weight.shape[0], prefs)
    monkeypatch.setattr(llm, "make_decoder", lambda *a, **k: dec)
    return dec


def test_a_model_that_closes_early_gets_a_complete_document(monkeypatch, demo_gemma):
    # it wants "<" (markup) most, then "1girl": each field gets one tag, then closes; no empty field
    dec = _scripted(monkeypatch, demo_gemma, {"<": 10.0, "1girl": 5.0})
    gemma, tok = demo_gemma
    out = expand_llm("a boy", gemma, tok, max_new_tokens=2000)
    assert not out.stats.truncated and out.stats.new_tokens == len(dec.fed) < 2000
    assert out.raw.endswith("</caption>") and not EMPTY_FIELD.search(out.raw)
    prompt = parse(out.raw)
    assert len(prompt.characters) == 4 and prompt.general is not None  # at most 4, then general tags
    for block in re.findall(r"<character_\d>\n(.*?)</character_\d>", out.raw, re.DOTALL):
        names = re.findall(r"<([a-z_]+)>", block)
        assert names == sorted(names, key=CHARACTER_FIELDS.index)  # canonical field order
        assert all(tags.strip() == "1girl" for tags in re.findall(r">([^<]+)</", block))
    parse(out.xml)


def test_a_model_that_never_closes_is_stopped_by_the_budgets(monkeypatch, demo_gemma):
    _scripted(monkeypatch, demo_gemma, {"1girl": 10.0})  # markup never tempts it: fields end at their cap
    gemma, tok = demo_gemma
    out = expand_llm("a boy", gemma, tok, max_new_tokens=300)
    assert out.stats.truncated and out.stats.new_tokens == 300
    longest = max(len(t.split()) for t in re.findall(r">([^<]+)</", out.raw))
    assert longest == TAG_FIELD_TOKENS
    parse(out.raw), parse(out.xml)


def test_token_budget_closes_open_tags_and_keeps_the_users_caption(demo_gemma):
    gemma, tok = demo_gemma
    for budget in (1, 7):
        out = expand_llm(INPUTS[0], gemma, tok, max_new_tokens=budget)
        assert out.stats.new_tokens <= budget and out.stats.truncated
        parse(out.raw)
        assert parse(out.xml).caption == INPUTS[0]
        assert "budget" in out.note


class FullForwardDecoder:
    """No cache: the whole sequence through the model's own forward at every token."""

    graph, graph_error = None, ""

    def __init__(self, gemma):
        self.gemma, self.ids = gemma, []

    def prefill(self, ids):
        self.ids = list(ids)
        return lm_logits(self.gemma, self.gemma(input_ids=torch.tensor([self.ids]))[0, -1])

    def step(self, token):
        return self.prefill(self.ids + [token])


def test_static_decoder_writes_what_full_forwards_write_greedily(monkeypatch, demo_gemma):
    from newbie.prompts import llm

    gemma, tok = demo_gemma
    a = expand_llm(INPUTS[1], gemma, tok, max_new_tokens=30)
    assert a.stats.decoder == "StaticDecoder"
    monkeypatch.setattr(llm, "make_decoder", lambda *a, **k: FullForwardDecoder(gemma))
    b = expand_llm(INPUTS[1], gemma, tok, max_new_tokens=30)
    assert a.raw == b.raw


def test_static_decoder_logits_equal_transformers_full_forward_with_sliding_window_and_softcap():
    from transformers import Gemma3TextConfig, Gemma3TextModel

    from newbie.model.gemma import Gemma, GemmaConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        final_logit_softcapping=3.0,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
    )
    cfg._attn_implementation = "sdpa"
    reference = Gemma3TextModel(cfg).eval()  # transformers: the reference, in tests only
    with torch.no_grad():
        for p in reference.parameters():  # RMSNorm weights start at 0: give every weight a value
            p.normal_(0, 0.3)
        model = Gemma(GemmaConfig.from_dict(cfg.to_dict())).eval()
        model.load_state_dict(reference.state_dict())
        ids = torch.randint(3, 50, (1, 12))
        hidden = reference(input_ids=ids).last_hidden_state[0]
        full = torch.stack([lm_logits(model, h) for h in hidden])
        assert full.abs().max() <= 3.0  # softcapped
        for kind in ("auto", "eager"):
            dec = make_decoder(model, 16, torch.device("cpu"), kind)
            got = [dec.prefill(ids[0, :5].tolist())] + [dec.step(int(t)) for t in ids[0, 5:]]
            torch.testing.assert_close(torch.stack(got), full[4:], atol=1e-4, rtol=1e-4)


def test_vocab_keeps_markup_out_of_fields(demo_gemma):
    gemma, tok = demo_gemma
    voc = vocab_of(tok, gemma.embed_tokens.weight.shape[0])
    for text in ("<", ">", "/"):
        (i,) = tok(text, add_special_tokens=False)["input_ids"]
        assert voc.content[i] == (text == "/")
    for i in tok.all_special_ids:
        assert not voc.content[i]
    (girl,) = tok("1girl", add_special_tokens=False)["input_ids"]
    assert voc.content[girl] and voc.wordy[girl] and voc.pieces[girl].strip() == "1girl"


def test_prompt_is_gemma_chat_with_our_system_prompt_and_builder_examples():
    text = chat_text("a cat")
    assert text.startswith("<start_of_turn>user\n" + SYSTEM_PROMPT)
    assert text.endswith("<start_of_turn>user\na cat<end_of_turn>\n<start_of_turn>model\n")
    for question, answer in examples():
        assert f"{question}<end_of_turn>\n<start_of_turn>model\n{answer}<end_of_turn>" in text
        assert to_xml(parse(answer)) == answer
    assert "<n>saber_\\(fate\\)</n>" in examples()[0][1]  # the escaping rule, shown by example


def test_fallback_without_gemma_is_the_rule_based_expander():
    out = expand_llm(INPUTS[0])
    assert out.source == "rules" and out.xml == to_xml(expand(INPUTS[0])) and out.stats is None
    assert "no Gemma" in out.note
    assert expand_with_pipeline(None, INPUTS[0]).xml == out.xml


def test_xml_input_is_returned_parsed(demo_gemma):
    gemma, tok = demo_gemma
    xml = "<character_1>\n<gender>1girl</gender>\n</character_1>"
    out = expand_llm(xml, gemma, tok)
    assert out.source == "input" and out.xml == to_xml(parse(xml))


@pytest.mark.parametrize(
    "text,kwargs,message",
    [
        ("", {}, "empty"),
        ("x" * 2001, {}, "limit"),
        ("a girl", {"seed": 1, "temperature": 0.0}, "temperature"),
        ("a girl", {"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_requests_are_one_line_errors(demo_gemma, text, kwargs, message):
    gemma, tok = demo_gemma
    with pytest.raises(NewbieError, match=message):
        expand_llm(text, gemma, tok, **kwargs)


def test_pipeline_expansion_runs_in_its_text_stage(tiny_pipeline):
    stages = []
    real = tiny_pipeline.stage

    def spy(name):
        stages.append(name)
        return real(name)

    tiny_pipeline.stage = spy
    try:
        out = expand_with_pipeline(tiny_pipeline, "two girls", max_new_tokens=24)
    finally:
        del tiny_pipeline.stage
    assert stages == ["text"] and out.source == "llm"
    parse(out.xml)


def run_cli(capsys, *argv):
    parser = argparse.ArgumentParser(prog="newbie")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["prompt", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_expand_llm_on_the_demo_model(capsys):
    code, out, err = run_cli(
        capsys, "expand", "--llm", "--device", "cpu", "--max-new-tokens", "30", INPUTS[0]
    )
    assert code == 0
    assert parse(out).kind == "xml"
    assert "gemma: " in err and "tok/s" in err and "greedy" in err


def test_cli_expand_llm_bad_dtype_is_exit_2(capsys):
    code, out, err = run_cli(capsys, "expand", "--llm", "--dtype", "fp7", "a girl")
    assert (code, out) == (2, "") and err.startswith("error: unknown dtype 'fp7'") and err.count("\n") == 1


def test_cli_expand_llm_unknown_decoder_is_exit_2_before_loading(capsys, monkeypatch):
    from newbie.prompts import llm

    monkeypatch.setattr(llm, "load_gemma_only", lambda *a, **k: pytest.fail("loaded for a bad decoder name"))
    code, out, err = run_cli(capsys, "expand", "--llm", "--decoder", "fast", "a girl")
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert err.startswith("error: unknown decoder 'fast' (choose from auto, eager, compiled)")


def test_cli_expand_llm_compiled_decoder(capsys, monkeypatch):
    from newbie.prompts import llm

    kinds = []

    def recording(gemma, max_len, device, kind="auto", backend="inductor"):
        kinds.append(kind)  # aot_eager: the same trace as inductor, without its CPU code generation
        return make_decoder(gemma, max_len, device, kind, backend="aot_eager")

    monkeypatch.setattr(llm, "make_decoder", recording)
    argv = ["expand", "--llm", "--device", "cpu", "--max-new-tokens", "12", INPUTS[0]]
    code, compiled, err = run_cli(capsys, *argv, "--decoder", "compiled")
    assert code == 0 and kinds == ["compiled"] and "note: decoder" not in err
    assert "decoder compiled set up in " in err  # the compile's cost, said
    code, plain, _ = run_cli(capsys, *argv, "--decoder", "eager")
    assert code == 0 and kinds == ["compiled", "eager"]
    assert compiled == plain  # greedy: the same tokens from the compiled step


def test_every_token_goes_through_each_layers_forward_so_streaming_hooks_fire(demo_gemma):
    import copy

    gemma, _ = demo_gemma
    cpu = torch.device("cpu")
    seen = []
    hook = gemma.layers[1].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    try:
        dec = make_decoder(gemma, 64, cpu)
        dec.prefill([2, 5, 6])
        dec.step(7)
    finally:
        hook.remove()
    assert seen == [3, 1] and dec.resident
    streamed = copy.deepcopy(gemma)
    streamed.layers[1].to("meta")  # as a memory plan's streamed block sits in pinned CPU memory between uses
    assert not make_decoder(streamed, 64, cpu).resident  # no CUDA graph over weights that move
    with pytest.raises(NewbieError, match="unknown decoder"):
        make_decoder(gemma, 64, cpu, "fast")


def test_an_unindexed_cuda_device_matches_the_weights_device(monkeypatch):
    # torch.device("cuda") != torch.device("cuda:0"): comparing them made the H200 run skip the static decoder's
    # CUDA graph (bench/results/llm-speed-h200-2026-12-01.json, cuda_graph false)
    import torch

    from newbie.prompts.llm import _indexed

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert _indexed(torch.device("cuda")) == torch.device("cuda", 1)
    assert _indexed("cuda:0") == torch.device("cuda", 0)
    assert _indexed("cpu") == torch.device("cpu")
