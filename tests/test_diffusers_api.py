"""The diffusers-style front end: every argument against the equivalent `Pipeline.generate` call, bit for
bit."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from newbie import NewbiePipeline
from newbie.errors import NewbieError
from newbie.model.text import TextEmbeds

SMALL = dict(height=32, width=32, num_inference_steps=2, sampler="euler")  # the call's size and steps
SAME = dict(height=32, width=32, steps=2, sampler="euler")  # the same for Pipeline.generate
XML = "<character_1> <gender>1girl</gender> <appearance>red_hair</appearance> </character_1>"


@pytest.fixture(scope="module")
def pipe(tiny_model_dir):
    return NewbiePipeline.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same(out, generation):
    assert len(out.images) == len(generation.images)
    for a, b in zip(out.images, generation.images):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert torch.equal(out.generation.latents, generation.latents)


def test_generator_prompts_and_images_per_prompt_match_generate(pipe):
    out = pipe(["a cat", "a dog"], num_images_per_prompt=2, generator=gen(7), guidance_scale=3.0, **SMALL)
    assert_same(out, pipe.engine.generate(["a cat", "a dog"], batch=2, seed=7, cfg=3.0, **SAME))
    assert [r.seed for r in out.recipes] == [7, 8, 9, 10]  # generator.initial_seed() is --seed
    assert [r.prompt for r in out.recipes] == ["a cat", "a cat", "a dog", "a dog"]  # diffusers' order


def test_sampling_arguments_map_to_settings(pipe):
    out = pipe(
        "a cat",
        negative_prompt="blurry",
        guidance_scale=2.5,
        cfg_normalization=True,
        shift=3.0,
        generator=gen(1),
        **SMALL,
    )
    assert_same(
        out, pipe.engine.generate("a cat", "blurry", seed=1, cfg=2.5, renorm_cfg=1.0, shift=3.0, **SAME)
    )
    out = pipe("a cat", cfg_normalization=0.5, guidance_scale=2.5, generator=gen(1), **SMALL)
    assert out.recipes[0].renorm_cfg == 0.5


def test_guidance_scale_at_most_one_turns_cfg_off(pipe):
    out = pipe("a cat", guidance_scale=0.0, generator=gen(2), **SMALL)
    assert out.recipes[0].cfg == 1.0
    assert_same(out, pipe.engine.generate("a cat", seed=2, cfg=1.0, **SAME))


def test_cfg_trunc_ratio_is_the_prs_step_fraction(pipe):
    steps, shift = 4, 6.0
    req = pipe.engine.request("a cat", steps=steps, shift=shift, cfg=3.0)
    sigmas = pipe.engine.schedule(req).tolist()
    for ratio, guided in ((1.0, 4), (0.5, 2), (0.3, 1), (0.0, 0), (1.5, 4), (-1.0, 0)):
        threshold = pipe._trunc_time(req, ratio)  # what the call puts in the Request (and its recipe)
        # the guided model applies CFG at sigma while 1 - sigma < cfg_trunc: the first `guided` steps
        assert [1.0 - s < threshold for s in sigmas[:-1]] == [i < guided for i in range(steps)]
    out = pipe("a cat", guidance_scale=3.0, cfg_trunc_ratio=0.5, generator=gen(3), **SMALL)
    sigma_1 = float(pipe.engine.schedule(pipe.engine.request("a cat", steps=2)).tolist()[1])
    assert_same(out, pipe.engine.generate("a cat", seed=3, cfg=3.0, cfg_trunc=1.0 - sigma_1, **SAME))


def test_a_list_of_generators_seeds_each_image(pipe):
    out = pipe("a cat", num_images_per_prompt=2, generator=[gen(5), gen(40)], **SMALL)
    req = pipe.engine.request("a cat", batch=2, seed=5, **SAME)
    req.seeds = [5, 40]
    assert_same(out, pipe.engine.run(req))
    assert [r.seed for r in out.recipes] == [5, 40]
    with pytest.raises(NewbieError, match="one per image"):
        pipe("a cat", generator=[gen(1), gen(2)], **SMALL)


def test_given_latents_replace_the_seeds_noise(pipe):
    req = pipe.engine.request("a cat", seed=11, **SAME)
    noise = pipe.engine.noise(req)
    out = pipe("a cat", latents=noise, num_inference_steps=2, sampler="euler")  # size from the latents
    assert_same(out, pipe.engine.generate("a cat", seed=11, **SAME))
    assert any("given latents" in w for w in out.recipes[0].warnings)
    with pytest.raises(NewbieError, match="latents must have shape"):
        pipe("a cat", latents=noise, num_images_per_prompt=2, **SMALL)


def test_encode_prompt_round_trips(pipe):
    prompt, negative = "a cat", "blurry"
    trio = pipe.encode_prompt(prompt, negative_prompt=negative, num_images_per_prompt=2)
    embeds, pooled, mask, neg_embeds, neg_pooled, neg_mask = trio
    assert embeds.shape[0] == pooled.shape[0] == mask.shape[0] == 2
    assert (
        embeds.shape[-1] == pipe.engine.dit.cfg.cap_feat_dim
        and pooled.shape[-1] == pipe.engine.dit.cfg.clip_text_dim
    )
    reference = pipe(
        prompt,
        negative_prompt=negative,
        num_images_per_prompt=2,
        guidance_scale=3.0,
        generator=gen(4),
        **SMALL,
    )
    out = pipe(
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        prompt_attention_mask=mask,
        negative_prompt_embeds=neg_embeds,
        negative_pooled_prompt_embeds=neg_pooled,
        negative_prompt_attention_mask=neg_mask,
        guidance_scale=3.0,
        generator=gen(4),
        **SMALL,
    )
    assert_same(out, reference.generation)
    assert any("prompt_embeds" in w for w in out.recipes[0].warnings)
    # one of our TextEmbeds, one row per prompt, repeated per image like diffusers
    one = pipe.encode_prompt(prompt, do_classifier_free_guidance=False)
    assert one[3:] == (None, None, None)
    out = pipe(
        prompt_embeds=TextEmbeds(one[0], one[2], one[1]),
        negative_prompt=negative,
        num_images_per_prompt=2,
        guidance_scale=3.0,
        generator=gen(4),
        **SMALL,
    )
    assert_same(out, reference.generation)
    with pytest.raises(NewbieError, match="pooled_prompt_embeds"):
        pipe(prompt_embeds=embeds, **SMALL)
    with pytest.raises(NewbieError, match="not both"):
        pipe(prompt, prompt_embeds=embeds, pooled_prompt_embeds=pooled, **SMALL)


def test_system_prompt_and_max_sequence_length(pipe):
    ours = pipe.engine.spec.text.system_prompt_xml
    sentence = ours.removesuffix(" <Prompt Start> ")
    assert sentence + " <Prompt Start> " == ours  # the PR's format around NewBie's own sentence
    default = pipe(XML, guidance_scale=3.0, generator=gen(6), **SMALL)
    assert_same(default, pipe.engine.generate(XML, seed=6, cfg=3.0, **SAME))
    same = pipe(XML, system_prompt=sentence, guidance_scale=3.0, generator=gen(6), **SMALL)
    assert_same(same, default.generation)
    assert any("system_prompt" in w for w in same.recipes[0].warnings)  # --from cannot know it
    other = pipe(
        XML, system_prompt="Draw.", guidance_scale=3.0, generator=gen(6), output_type="latent", **SMALL
    )
    assert not torch.equal(other.images, default.generation.latents)
    short = pipe(
        XML, max_sequence_length=8, guidance_scale=3.0, generator=gen(6), output_type="latent", **SMALL
    )
    assert not torch.equal(short.images, default.generation.latents)
    embeds = pipe.encode_prompt(XML, max_sequence_length=8, do_classifier_free_guidance=False)[0]
    assert embeds.shape[1] == 8 < pipe.encode_prompt(XML, do_classifier_free_guidance=False)[0].shape[1]
    with pytest.raises(NewbieError, match="multiple of 8"):
        pipe(XML, max_sequence_length=100, **SMALL)


def test_callback_sees_and_replaces_latents(pipe):
    seen = []

    def watch(p, i, t, kwargs):
        seen.append((i, float(t), kwargs["latents"].shape))
        return kwargs

    out = pipe("a cat", generator=gen(8), callback_on_step_end=watch, **SMALL)
    assert_same(out, pipe.engine.generate("a cat", seed=8, **SAME))
    sigmas = pipe.engine.schedule(pipe.engine.request("a cat", **SAME)).tolist()
    assert [i for i, _, _ in seen] == [0, 1]  # after each step, with the step's start timestep (float32)
    assert [t for _, t, _ in seen] == pytest.approx([sigmas[0] * 1000, sigmas[1] * 1000], rel=1e-6)
    assert seen[0][2] == (1, 16, 4, 4)

    def zero_last(p, i, t, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == 1 else {}

    out = pipe("a cat", generator=gen(8), callback_on_step_end=zero_last, output_type="latent", **SMALL)
    assert torch.equal(out.images, torch.zeros(1, 16, 4, 4))  # the sampler continued from what it returned
    assert any("callback" in w for w in out.recipes[0].warnings)
    with pytest.raises(NewbieError, match="only \\['latents'\\]"):
        pipe(
            "a cat", callback_on_step_end=watch, callback_on_step_end_tensor_inputs=["prompt_embeds"], **SMALL
        )


def test_output_types_and_return_dict(pipe):
    pil = pipe("a cat", generator=gen(9), **SMALL)
    arrays = pipe("a cat", generator=gen(9), output_type="np", **SMALL).images
    assert arrays.shape == (1, 32, 32, 3) and arrays.dtype == np.float32
    assert np.array_equal(np.round(arrays[0] * 255).astype(np.uint8), np.asarray(pil.images[0]))
    tensors = pipe("a cat", generator=gen(9), output_type="pt", **SMALL).images
    assert torch.equal(tensors, torch.from_numpy(arrays).permute(0, 3, 1, 2))
    (images,) = pipe("a cat", generator=gen(9), return_dict=False, **SMALL)
    assert np.array_equal(np.asarray(images[0]), np.asarray(pil.images[0]))


def test_bad_arguments_are_one_line_errors(pipe):
    with pytest.raises(NewbieError, match="did you mean 'guidance_scale'"):
        pipe("a cat", guidance=3.0)
    with pytest.raises(NewbieError, match="did you mean 'num_inference_steps'"):
        pipe("a cat", num_inference_step=3)
    with pytest.raises(NewbieError, match="sigmas"):
        pipe("a cat", sigmas=[1.0, 0.0])
    with pytest.raises(NewbieError, match="output_type"):
        pipe("a cat", output_type="jpeg", **SMALL)
    with pytest.raises(NewbieError, match="give a prompt"):
        pipe(**SMALL)
    with pytest.raises(NewbieError, match="multiple of 16"):
        pipe("a cat", height=40, width=32, num_inference_steps=1)
    with pytest.raises(NewbieError, match="did you mean 'torch_dtype'"):
        NewbiePipeline.from_pretrained(None, torch_type=torch.float32)
    with pytest.raises(NewbieError, match="text_encoder_2"):
        NewbiePipeline.from_pretrained(None, text_encoder_2=object())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shift=-1), "shift must be between 0.01 and 100, got -1"),
        (dict(shift=float("inf")), "shift must be a finite number"),
        (dict(num_inference_steps=0), "num_inference_steps: steps must be between 1 and 1000, got 0"),
        (dict(num_inference_steps=True), "num_inference_steps: steps must be a whole number, got True"),
        (dict(guidance_scale=1e308), "guidance_scale: cfg must be between 0 and 100, got 1e+308"),
        (dict(guidance_scale="high"), "guidance_scale: cfg must be a number, got 'high'"),
        (dict(cfg_trunc_ratio=7), "cfg_trunc_ratio: cfg_trunc must be between 0 and 1, got 7"),
        (dict(cfg_normalization=-3.0), "cfg_normalization: renorm_cfg must be between 0 and 100, got -3"),
        (dict(num_images_per_prompt=0), "num_images_per_prompt: batch must be between 1 and 64, got 0"),
        (dict(noise="white"), "unknown noise 'white'"),
        (dict(width="128"), "width must be a whole number, got '128'"),
    ],
)
def test_bad_settings_get_the_engines_message_under_the_diffusers_name(pipe, kwargs, message):
    from newbie.pipeline.request import SettingError

    with pytest.raises(SettingError, match=re.escape(message)):
        pipe("a cat", **{**SMALL, **kwargs})


def test_every_setting_has_a_diffusers_argument_and_extra_settings_pass_through(pipe, tmp_path):
    import inspect

    from newbie.diffusers_api import DIFFUSERS_NAMES
    from newbie.pipeline.recipe import PNG_KEY, Recipe, png_chunks

    def read_recipe(path):
        return Recipe.from_json(png_chunks(path)[PNG_KEY])

    from newbie.pipeline.request import Settings

    params = inspect.signature(NewbiePipeline.__call__).parameters
    for name in Settings.fields():
        given = DIFFUSERS_NAMES.get(name, name)
        assert given in params or name not in DIFFUSERS_NAMES, name  # a diffusers name is a real argument
    assert set(DIFFUSERS_NAMES) <= set(Settings.fields())
    out = pipe("a cat", generator=gen(4), noise="comfy", schedule="simple", **SMALL)
    assert_same(out, pipe.engine.generate("a cat", seed=4, noise="comfy", schedule="simple", **SAME))
    assert json.loads(out.images[0].info["newbie"])["schedule"] == "simple"  # the recipe rides on the image
    (path,) = out.save(tmp_path / "cat.png")
    assert read_recipe(path) == out.recipes[0]


def test_memory_methods_are_bit_identical(tiny_model_dir, pipe):
    reference = pipe.engine.generate("a cat", seed=12, cfg=3.0, **SAME)
    staged = NewbiePipeline.from_pretrained(tiny_model_dir)
    staged.enable_model_cpu_offload(device="cpu")
    assert staged.engine.plan.name == "staged" and staged.engine.plan.residency == "staged"
    assert_same(staged("a cat", generator=gen(12), guidance_scale=3.0, **SMALL), reference)
    streamed = NewbiePipeline.from_pretrained(tiny_model_dir)
    streamed.enable_sequential_cpu_offload(device="cpu")
    plan = streamed.engine.plan
    assert (
        plan.dit_streamed == len(streamed.transformer.layers)
        and plan.gemma_embed_on_cpu
        and not plan.vae_tiling
    )
    assert_same(streamed("a cat", generator=gen(12), guidance_scale=3.0, **SMALL), reference)
    streamed.enable_vae_tiling()
    assert streamed.engine.plan.vae_tiling and streamed.engine.plan.dit_streamed == plan.dit_streamed
    with pytest.raises(NewbieError, match="cannot move"):
        streamed.to("cpu")


def test_to_moves_and_casts(tiny_model_dir):
    p = NewbiePipeline.from_pretrained(tiny_model_dir)
    assert p.to("cpu") is p and p.device == torch.device("cpu") and p.dtype == torch.float32
    p.to(torch.bfloat16)
    assert p.dtype == torch.bfloat16 and p.text_encoder.dtype == torch.bfloat16
    assert p.engine.dtypes["dit"] == p.engine.dtypes["text"] == "bf16" and p.engine.dtypes["vae"] == "fp32"
    if not torch.cuda.is_available():
        with pytest.raises(NewbieError, match="no CUDA GPU"):
            p.to("cuda")


def test_save_pretrained_round_trips(tiny_model_dir, tmp_path, pipe):
    source = tmp_path / "source"
    shutil.copytree(tiny_model_dir, source)
    spec = {
        "name": "tiny",
        "sampling": {"width": 32, "height": 32, "steps": 2, "sampler": "euler", "cfg": 3.0},
    }
    (source / "newbie_spec.json").write_text(json.dumps(spec))
    first = NewbiePipeline.from_pretrained(source)
    first.save_pretrained(tmp_path / "saved")
    saved = tmp_path / "saved"
    for part in (
        "model_index.json",
        "newbie_spec.json",
        "transformer/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "clip_model/model.safetensors",
        "vae/config.json",
    ):
        assert (saved / part).is_file(), part
    again = NewbiePipeline.from_pretrained(saved)
    a, b = first("a cat", generator=gen(13)), again("a cat", generator=gen(13))  # the spec's defaults, both
    assert a.recipes[0].width == 32 and a.recipes[0].steps == 2
    assert_same(b, a.generation)


def test_import_newbie_stays_light():
    code = "import sys, newbie; print('newbie.diffusers_api' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def readme_example() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## diffusers-style", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "README's diffusers-style section has no python example"
    return blocks[0]


def test_readme_example_runs_on_the_demo_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md (diffusers-style)", "exec"), namespace)
    image = namespace["image"]
    assert image.size == (128, 128) and (tmp_path / "newbie_diffusers.png").is_file()
