"""Adapters through generate(), recipes, remake and the CLI."""

import json
import shutil

import pytest
from PIL import Image

from newbie.cli.main import main
from newbie.errors import NewbieError
from tests.adapters.makers import write_lokr, write_peft

ARGS = dict(seed=3, steps=2, width=32, height=32, sampler="euler", cfg=1.0)


def test_per_request_adapters_and_recipes(tmp_path, shapes, pipe):
    base = pipe.generate("1girl", **ARGS)
    lora = write_peft(tmp_path / "style", shapes, alpha=8.0)
    with_lora = pipe.generate("1girl", loras=[f"{lora}:0.9"], **ARGS)
    assert with_lora.images[0].tobytes() != base.images[0].tobytes()
    rec = with_lora.recipes[0].loras[0]
    assert (
        rec["strength"] == 0.9
        and rec["kind"] == "lora"
        and rec["name"] == "style"
        and len(rec["sha256"]) == 64
    )
    # the next request without adapters is the base model again, bit for bit
    assert pipe.generate("1girl", **ARGS).images[0].tobytes() == base.images[0].tobytes()
    assert pipe.generate("1girl", loras=[(lora, 0.0)], **ARGS).images[0].tobytes() == base.images[0].tobytes()
    again = pipe.remake(with_lora.recipes[0])
    assert again.images[0].tobytes() == with_lora.images[0].tobytes()


def test_remake_finds_moved_adapters_by_hash_and_refuses_changed_ones(tmp_path, shapes, pipe):
    lokr = write_lokr(tmp_path / "a.safetensors", shapes)
    gen = pipe.generate("1girl", loras=[(lokr, 0.5)], fuse_loras=True, **ARGS)
    assert gen.recipes[0].fuse_loras is True
    moved = tmp_path / "moved.safetensors"
    shutil.move(lokr, moved)
    with pytest.raises(NewbieError, match="is not at .*give it with --lora"):
        pipe.remake(gen.recipes[0])
    assert pipe.remake(gen.recipes[0], loras=[str(moved)]).images[0].tobytes() == gen.images[0].tobytes()
    write_lokr(moved, shapes, seed=1)  # same name, other weights
    with pytest.raises(NewbieError, match="differs from the recipe's"):
        pipe.remake(gen.recipes[0], loras=[str(moved)])


def test_bad_adapter_requests(tmp_path, shapes, pipe):
    with pytest.raises(NewbieError, match="strength must be a finite number"):
        pipe.request("1girl", loras=[(write_peft(tmp_path / "l", shapes), float("inf"))])
    with pytest.raises(NewbieError, match="no such adapter"):
        pipe.request("1girl", loras=["missing/dir:0.5"])


def test_cli_lora_remake_and_inspect(tiny_model_dir, tmp_path, shapes, capsys):
    lora = write_peft(tmp_path / "style", shapes)
    out = tmp_path / "a.png"
    common = ["--model", str(tiny_model_dir), "--quiet"]
    assert (
        main(
            [
                "generate",
                "1girl",
                "--seed",
                "1",
                "--steps",
                "1",
                "--size",
                "32x32",
                "--cfg",
                "1",
                "--lora",
                f"{lora}:0.7",
                "--out",
                str(out),
                *common,
            ]
        )
        == 0
    )
    with Image.open(out) as im:
        rec = json.loads(im.info["newbie"])
    assert rec["loras"][0]["strength"] == 0.7
    assert main(["generate", "--from", str(out), "--out", str(tmp_path / "b.png"), *common]) == 0
    assert (tmp_path / "b.png").read_bytes() == out.read_bytes()
    capsys.readouterr()
    assert main(["adapter", "inspect", str(lora), "--model", str(tiny_model_dir)]) == 0
    text = capsys.readouterr().out
    assert "kind     lora, 7 layers" in text and "attention.qkv x2" in text and "scale    2 x7" in text
    # against the real NewBie shapes (the default), a tiny-model adapter does not fit: one line, exit 2
    assert main(["adapter", "inspect", str(lora)]) == 2
    assert (
        "does not fit this model: key 'base_model.model.clip_text_pooled_proj.1.lora_A.weight'"
        in capsys.readouterr().err
    )


def test_unfused_adapters_stay_inside_compiled_blocks(tmp_path, shapes, tiny_model_dir):
    # an unfused adapter is a module in the layer's place (AdaptedLinear), not a hook dynamo would not see:
    # the compiled blocks trace it, so no block falls back to eager (the hooks of old needed honour_hooks)
    import torch

    import newbie

    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp32")  # private: it gets compiled
    lora = write_peft(tmp_path / "style", shapes, alpha=8.0)
    base = pipe.generate("1girl", **ARGS)
    eager = pipe.generate("1girl", loras=[f"{lora}:0.9"], **ARGS)
    linears: list[int] = []  # per compiled graph: how many linear products it holds

    def backend(gm, example_inputs):
        linears.append(sum("linear" in str(n.target) for n in gm.graph.nodes))
        return gm.forward

    torch._dynamo.reset()
    try:
        pipe.compile(backend=backend)
        plain_graphs = max(linears)
        compiled = pipe.generate("1girl", loras=[f"{lora}:0.9"], **ARGS)
        assert not any("ran uncompiled" in e for e in compiled.guard_events)
        assert all(b._compiled_call_impl is not None for b in pipe.dit.blocks())
        assert max(linears) > plain_graphs  # the adapter's thin matmuls inside the block graphs
        torch.testing.assert_close(compiled.latents, eager.latents, rtol=1e-5, atol=1e-5)
        plain = pipe.generate("1girl", **ARGS)  # the adapter off again: the base model's result
        torch.testing.assert_close(plain.latents, base.latents, rtol=1e-5, atol=1e-5)
    finally:
        torch._dynamo.reset()
