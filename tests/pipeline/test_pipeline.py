import pytest
import torch

from newbie.config import TextConfig
from newbie.errors import NewbieError
from newbie.model.text import gemma_text

XML = (
    "<character_1> <n>$character_1$</n> <gender>1girl</gender> <appearance>red_hair, blue_eyes</appearance> "
    "<position>left</position> </character_1> <general_tags> <count>1girl</count> "
    "<background>white_background</background> </general_tags>"
)


def test_system_prompt_follows_the_prompt_kind():
    cfg = TextConfig()
    assert gemma_text(XML, cfg) == cfg.system_prompt_xml + XML
    assert gemma_text("1girl, red_hair", cfg) == cfg.system_prompt_text + "1girl, red_hair"
    assert gemma_text("", cfg) == ""  # the default negative: just <bos>


def test_text_embeds_shapes_and_padding(tiny_pipeline):
    e = tiny_pipeline.text.encode([XML, ""])
    assert e.cap_feats.shape[0] == 2 and e.cap_feats.shape[1] % 8 == 0
    assert e.cap_feats.shape[2] == tiny_pipeline.dit.cfg.cap_feat_dim
    assert e.pooled.shape == (2, tiny_pipeline.dit.cfg.clip_text_dim)
    assert e.cap_mask[1].sum() == 1 and e.cap_mask[1, 0]  # "" -> <bos> only
    text = tiny_pipeline.text
    n = len(text.gemma_tokenizer(gemma_text(XML, text.cfg))["input_ids"])  # the prompt's real tokens
    assert e.cap_mask[0, :n].all() and not e.cap_mask[0, n:].any()  # right padding only, after the tokens
    assert e.cap_feats.shape[1] == -(-n // 8) * 8  # the longest caption, rounded up to a multiple of 8
    # what the GPU scripts report as caption_tokens: the encoded caption's real tokens
    assert text.count_tokens(XML) == int(e.cap_mask[0].sum()) == n and text.count_tokens("") == 1


def test_generate_returns_images_and_full_recipes(tiny_pipeline):
    gen = tiny_pipeline.generate(XML, seed=7, steps=3, width=64, height=48, batch=2)
    assert len(gen.images) == 2 and gen.images[0].size == (64, 48)
    r0, r1 = gen.recipes
    assert (r0.seed, r1.seed) == (7, 8) and (r0.batch_index, r1.batch_index) == (0, 1)
    assert r0.prompt == XML and r0.steps == 3 and r0.sampler == "midpoint" and r0.shift == 6.0
    assert len(r0.model_hash) == 64 and r0.version
    assert gen.latents.shape == (2, 16, 6, 8)
    assert torch.isfinite(gen.latents).all()


def test_batch_images_equal_images_made_alone(tiny_pipeline):
    both = tiny_pipeline.generate(XML, seed=3, steps=2, width=32, height=32, batch=2, sampler="euler")
    alone = tiny_pipeline.generate(XML, seed=4, steps=2, width=32, height=32, sampler="euler")
    torch.testing.assert_close(both.latents[1:], alone.latents, rtol=1e-4, atol=1e-4)


def test_remake_is_bit_identical(tiny_pipeline):
    gen = tiny_pipeline.generate(
        XML,
        negative="black_background",
        seed=11,
        steps=3,
        width=32,
        height=32,
        cfg=3.0,
        sampler="dpmpp_2m",
        batch=2,
    )
    again = tiny_pipeline.remake(gen.recipes[1])
    assert torch.equal(again.latents, gen.latents[1:])
    assert again.images[0].tobytes() == gen.images[1].tobytes()


def test_cfg_truncation_changes_only_the_early_steps(tiny_pipeline):
    a = tiny_pipeline.generate(
        XML, seed=1, steps=4, width=32, height=32, cfg=4.0, cfg_trunc=0.0, sampler="euler"
    )
    b = tiny_pipeline.generate(XML, seed=1, steps=4, width=32, height=32, cfg=1.0, sampler="euler")
    torch.testing.assert_close(a.latents, b.latents)  # trunc 0: CFG never applies == cfg 1
    c = tiny_pipeline.generate(
        XML, seed=1, steps=4, width=32, height=32, cfg=4.0, cfg_trunc=1.0, sampler="euler"
    )
    assert not torch.allclose(a.latents, c.latents)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(width=100), "width 100 is not a positive multiple of 16"),
        (dict(height=4096), "height 4096 is larger than 2048"),
        (dict(steps=0), "steps must be between 1 and 1000, got 0"),
        (dict(sampler="ddim"), "unknown sampler 'ddim'"),
        (dict(cfg=float("nan")), "cfg must be a finite number"),
        (dict(batch=0), "batch must be between 1 and 64"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_pipeline, kwargs, message):
    with pytest.raises(NewbieError, match=message):
        tiny_pipeline.request("1girl", **kwargs)


def test_outside_trained_area_warns_in_the_recipe(tiny_pipeline):
    req = tiny_pipeline.request("1girl", width=2048, height=1024)
    assert any("outside the trained area" in w for w in req.warnings)
    assert not tiny_pipeline.request("1girl", width=1024, height=1024).warnings


def test_generation_save_writes_pngs_that_remake_bit_for_bit(tiny_pipeline, tmp_path):
    from newbie.pipeline.recipe import PNG_KEY, Recipe, png_chunks

    def read_recipe(path):
        return Recipe.from_json(png_chunks(path)[PNG_KEY])

    gen = tiny_pipeline.generate("1girl", seed=3, steps=2, width=32, height=32, batch=2, sampler="euler")
    paths = gen.save(tmp_path / "g.png")
    assert [p.name for p in paths] == ["g-1.png", "g-2.png"]
    recipe = read_recipe(paths[1])
    assert recipe == gen.recipes[1]
    again = tiny_pipeline.remake(recipe)
    assert again.images[0].tobytes() == gen.images[1].tobytes()
    with pytest.raises(NewbieError, match="give a .png path"):
        gen.save(tmp_path / "g.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g-1.png", "g-2.png"]
