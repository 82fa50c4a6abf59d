"""ComfyUI compatibility: its initial noise, and `--from` a ComfyUI PNG built here from the node types and
widget order of the official NewBie template (Comfy-Org/workflow_templates,
image_newbieimage_exp0_1-t2i.json)."""

import json

import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from newbie.cli.main import main
from newbie.errors import NewbieError
from newbie.pipeline.comfy_png import read_comfy_png, settings_from_graph, workflow_to_api
from newbie.pipeline.recipe import Recipe
from newbie.sampling.schedules import flow_sigmas, simple_sigmas

TEMPLATE = (
    "You are an assistant designed to generate high-quality anime images with the highest degree of "
    "image-text alignment based on xml format textual prompts. <Prompt Start>\n{user_prompt}"
)
USER = "<character_1><gender>1girl</gender></character_1>"
NEG = "You are an assistant designed to generate low-quality images based on textual prompts. <Prompt Start>"


def api_graph(
    seed=27582042565232,
    steps=20,
    cfg=5.5,
    sampler="res_multistep",
    scheduler="simple",
    shift=6,
    width=1024,
    height=1536,
    batch=1,
):
    """The `prompt` chunk ComfyUI writes for the template: subgraph nodes flattened to "41:<inner id>"."""
    return {
        "47": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": TEMPLATE}},
        "48": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": USER}},
        "44": {"class_type": "PrimitiveStringMultiline", "inputs": {"value": "a caption"}},
        "43": {
            "class_type": "StringReplace",
            "inputs": {"string": ["47", 0], "find": "{user_prompt}", "replace": ["48", 0]},
        },
        "46": {
            "class_type": "StringReplace",
            "inputs": {"string": ["43", 0], "find": "{caption}", "replace": ["44", 0]},
        },
        "41:30": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "NewBie-Image-Exp0.1-bf16.safetensors", "weight_dtype": "default"},
        },
        "41:32": {"class_type": "ModelSamplingAuraFlow", "inputs": {"shift": shift, "model": ["41:30", 0]}},
        "41:34": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "gemma_3_4b_it_bf16.safetensors",
                "clip_name2": "jina_clip_v2_bf16.safetensors",
                "type": "newbie",
                "device": "default",
            },
        },
        "41:31": {
            "class_type": "EmptySD3LatentImage",
            "inputs": {"width": width, "height": height, "batch_size": batch},
        },
        "41:43": {"class_type": "CLIPTextEncode", "inputs": {"text": ["46", 0], "clip": ["41:34", 0]}},
        "41:49": {"class_type": "CLIPTextEncode", "inputs": {"text": NEG, "clip": ["41:34", 0]}},
        "41:3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": sampler,
                "scheduler": scheduler,
                "denoise": 1,
                "model": ["41:32", 0],
                "positive": ["41:43", 0],
                "negative": ["41:49", 0],
                "latent_image": ["41:31", 0],
            },
        },
        "41:26": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "41:8": {"class_type": "VAEDecode", "inputs": {"samples": ["41:3", 0], "vae": ["41:26", 0]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "NewBie-Image-Exp0.1", "images": ["41:8", 0]},
        },
    }


def workflow(seed=27582042565232, steps=20, width=1024, height=1536):
    """The `workflow` chunk: the template's editor graph (a subgraph instance with promoted widgets)."""

    def node(nid, kind, widgets, inputs=(), mode=0, **extra):
        return {
            "id": nid,
            "type": kind,
            "mode": mode,
            "widgets_values": list(widgets),
            "inputs": [{"name": n, "type": "X", "link": link} for n, link in inputs],
            **extra,
        }

    sub = "200c18f2-7c51-4b4a-bf17-293f2f691b1b"
    return {
        "nodes": [
            node(9, "SaveImage", ["NewBie-Image-Exp0.1"], [("images", 70)]),
            node(47, "PrimitiveStringMultiline", [TEMPLATE]),
            node(46, "StringReplace", ["", "{caption}", ""], [("string", 73), ("replace", 74)]),
            node(44, "PrimitiveStringMultiline", ["a caption"]),
            node(43, "StringReplace", ["", "{user_prompt}", ""], [("string", 71), ("replace", 72)]),
            node(48, "PrimitiveStringMultiline", [USER]),
            node(37, "MarkdownNote", ["notes"]),
            node(
                41,
                sub,
                [
                    "",
                    NEG,
                    None,
                    None,
                    None,
                    None,
                    "NewBie-Image-Exp0.1-bf16.safetensors",
                    "gemma_3_4b_it_bf16.safetensors",
                    "jina_clip_v2_bf16.safetensors",
                    "ae.safetensors",
                ],
                [("text", 76)],
                properties={
                    "proxyWidgets": [
                        ["-1", "text"],
                        ["-1", "text_1"],
                        ["3", "seed"],
                        ["3", "control_after_generate"],
                        ["31", "width"],
                        ["31", "height"],
                        ["-1", "unet_name"],
                        ["-1", "clip_name1"],
                        ["-1", "clip_name2"],
                        ["-1", "vae_name"],
                    ]
                },
            ),
        ],
        "links": [
            [70, 41, 0, 9, 0, "IMAGE"],
            [71, 47, 0, 43, 0, "STRING"],
            [72, 48, 0, 43, 1, "STRING"],
            [73, 43, 0, 46, 0, "STRING"],
            [74, 44, 0, 46, 1, "STRING"],
            [76, 46, 0, 41, 0, "STRING"],
        ],
        "definitions": {
            "subgraphs": [
                {
                    "id": sub,
                    "name": "NewBie Image Exp0.1",
                    "inputs": [
                        {"name": n}
                        for n in ("text", "text_1", "unet_name", "clip_name1", "clip_name2", "vae_name")
                    ],
                    "nodes": [
                        node(32, "ModelSamplingAuraFlow", [6], [("model", 53)]),
                        node(
                            30,
                            "UNETLoader",
                            ["NewBie-Image-Exp0.1-bf16.safetensors", "default"],
                            [("unet_name", 88)],
                        ),
                        node(26, "VAELoader", ["ae.safetensors"], [("vae_name", 91)]),
                        node(
                            34,
                            "DualCLIPLoader",
                            ["gemma", "jina", "newbie", "default"],
                            [("clip_name1", 89), ("clip_name2", 90)],
                        ),
                        node(8, "VAEDecode", [], [("samples", 7), ("vae", 42)]),
                        node(31, "EmptySD3LatentImage", [width, height, 1]),
                        node(
                            3,
                            "KSampler",
                            [seed, "fixed", steps, 5.5, "res_multistep", "simple", 1],
                            [("model", 50), ("positive", 73), ("negative", 80), ("latent_image", 48)],
                        ),
                        node(43, "CLIPTextEncode", [""], [("clip", 70), ("text", 86)]),
                        node(
                            49,
                            "CLIPTextEncode",
                            ["ignored: the instance's text_1 widget wins"],
                            [("clip", 77), ("text", 87)],
                        ),
                    ],
                    "links": [
                        {"id": i, "origin_id": o, "origin_slot": os_, "target_id": t, "target_slot": ts}
                        for i, o, os_, t, ts in [
                            (53, 30, 0, 32, 0),
                            (7, 3, 0, 8, 0),
                            (42, 26, 0, 8, 1),
                            (50, 32, 0, 3, 0),
                            (48, 31, 0, 3, 3),
                            (9, 8, 0, -20, 0),
                            (70, 34, 0, 43, 0),
                            (73, 43, 0, 3, 1),
                            (77, 34, 0, 49, 0),
                            (80, 49, 0, 3, 2),
                            (86, -10, 0, 43, 1),
                            (87, -10, 1, 49, 1),
                            (88, -10, 2, 30, 0),
                            (89, -10, 3, 34, 0),
                            (90, -10, 4, 34, 1),
                            (91, -10, 5, 26, 0),
                        ]
                    ],
                }
            ]
        },
        "version": 0.4,
    }


def write_png(path, **chunks):
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, json.dumps(value))
    Image.new("RGB", (16, 16)).save(path, pnginfo=info)
    return path


def test_comfy_noise_is_torch_manual_seed_then_one_randn_of_the_batch(tiny_pipeline):
    req = tiny_pipeline.request("1girl", seed=123456789, width=48, height=32, batch=3, noise="comfy")
    with torch.random.fork_rng(devices=[]):
        expected = torch.randn((3, 16, 4, 6), generator=torch.manual_seed(123456789))
    got = tiny_pipeline.noise(req)
    assert torch.equal(got, expected)
    ours = tiny_pipeline.noise(tiny_pipeline.request("1girl", seed=123456789, width=48, height=32, batch=3))
    assert torch.equal(ours[0], expected[0]) and not torch.equal(ours[1], expected[1])  # per-image seeds


def test_request_fields_and_bad_values(tiny_pipeline):
    req = tiny_pipeline.request("1girl", steps=7, shift=6.0)
    assert (req.noise, req.schedule) == ("newbie", "uniform")
    assert torch.equal(tiny_pipeline.schedule(req), flow_sigmas(7, 6.0))
    req = tiny_pipeline.request("1girl", steps=7, shift=6.0, schedule="simple")
    assert torch.equal(tiny_pipeline.schedule(req), simple_sigmas(7, 6.0))
    for kwargs, message in (
        ({"noise": "gpu"}, "unknown noise 'gpu'"),
        ({"schedule": "karras"}, "unknown schedule"),
    ):
        with pytest.raises(NewbieError, match=message):
            tiny_pipeline.request("1girl", **kwargs)


def test_comfy_settings_are_recorded_and_remade_bit_for_bit(tiny_pipeline):
    gen = tiny_pipeline.generate(
        "1girl",
        seed=5,
        steps=3,
        width=32,
        height=32,
        batch=2,
        noise="comfy",
        schedule="simple",
        sampler="res_multistep",
    )
    rec = gen.recipes[1]
    assert (rec.noise, rec.schedule, rec.sampler, rec.seed, rec.batch_index) == (
        "comfy",
        "simple",
        "res_multistep",
        6,
        1,
    )
    again = tiny_pipeline.remake(Recipe.from_json(rec.to_json()))
    assert torch.equal(again.latents, gen.latents[1:2])
    old = json.loads(rec.to_json())
    del old["noise"], old["schedule"]  # a recipe written before these fields existed
    assert (Recipe.from_json(json.dumps(old)).noise, Recipe.from_json(json.dumps(old)).schedule) == (
        "newbie",
        "uniform",
    )


def test_template_prompt_graph_maps_to_settings():
    s, notes = settings_from_graph(api_graph())
    assert s.prompt == TEMPLATE.replace("{user_prompt}", USER) and s.negative == NEG
    assert (s.seed, s.steps, s.cfg, s.sampler, s.schedule, s.shift) == (
        27582042565232,
        20,
        5.5,
        "res_multistep",
        "simple",
        6.0,
    )
    assert (s.width, s.height, s.batch, s.noise) == (1024, 1536, 1, "comfy")
    assert (s.cfg_trunc, s.renorm_cfg) == (1.0, 0.0)  # ComfyUI's KSampler: plain CFG on every step
    assert not [n for n in notes if n.startswith("could not map")]


def test_a_bad_graph_value_is_refused_by_the_requests_rule():
    from newbie.pipeline.request import SettingError

    g = api_graph()
    node = next(n for n in g.values() if n["class_type"].startswith("ModelSampling"))
    node["inputs"]["shift"] = 0.0
    with pytest.raises(SettingError, match=r"the ComfyUI graph's shift must be between 0.01 and 100, got 0"):
        settings_from_graph(g)


def test_unmapped_settings_become_notes():
    g = api_graph(sampler="dpmpp_2m_sde", scheduler="karras")
    g["41:3"]["inputs"]["denoise"] = 0.5
    s, notes = settings_from_graph(g)
    text = "\n".join(notes)
    assert "could not map: sampler 'dpmpp_2m_sde'" in text and "could not map: scheduler 'karras'" in text
    assert "could not map: denoise 0.5" in text
    assert (s.sampler, s.schedule) == ("res_multistep", "simple")
    g = api_graph()
    g["41:3"]["inputs"]["model"] = ["41:30", 0]  # no ModelSampling node
    assert any("ModelSamplingAuraFlow" in n for n in settings_from_graph(g)[1])


def test_workflow_chunk_gives_the_same_settings_as_the_prompt_chunk():
    graph = workflow_to_api(workflow())
    ks = graph["41:3"]["inputs"]
    assert ks["seed"] == 27582042565232 and ks["model"] == ["41:32", 0]
    from_workflow, _ = settings_from_graph(graph)
    from_prompt, _ = settings_from_graph(api_graph())
    assert from_workflow == from_prompt


def test_read_png_prefers_prompt_and_falls_back_to_workflow(tmp_path):
    both = read_comfy_png(write_png(tmp_path / "a.png", prompt=api_graph(seed=1), workflow=workflow(seed=2)))
    assert (both.source, both.settings.seed) == ("prompt", 1)
    only = read_comfy_png(write_png(tmp_path / "b.png", workflow=workflow(seed=2)))
    assert (only.source, only.settings.seed) == ("workflow", 2)
    with pytest.raises(NewbieError, match="no KSampler"):
        read_comfy_png(write_png(tmp_path / "c.png", prompt={"1": {"class_type": "SaveImage", "inputs": {}}}))


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_from_a_comfyui_png(tiny_model_dir, tmp_path, capsys):
    src = write_png(
        tmp_path / "comfy.png", prompt=api_graph(steps=3, width=48, height=32, batch=2, scheduler="beta")
    )
    out = tmp_path / "remade.png"
    code, stdout, err = run(
        capsys, "generate", "--from", str(src), "--model", str(tiny_model_dir), "--out", str(out), "--quiet"
    )
    assert code == 0, err
    assert "could not map: scheduler 'beta'" in err
    with Image.open(tmp_path / "remade-2.png") as im:
        rec = Recipe.from_json(im.info["newbie"])
        assert im.size == (48, 32)
    assert (rec.noise, rec.schedule, rec.sampler, rec.steps, rec.cfg, rec.seed) == (
        "comfy",
        "simple",
        "res_multistep",
        3,
        5.5,
        27582042565233,
    )
    # flags on the command line override the graph
    code, _, err = run(
        capsys,
        "generate",
        "--from",
        str(src),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o.png"),
        "--quiet",
        "--steps",
        "2",
    )
    assert code == 0, err
    with Image.open(tmp_path / "o-1.png") as im:
        assert Recipe.from_json(im.info["newbie"]).steps == 2
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, _, err = run(capsys, "generate", "--from", str(plain), "--model", str(tiny_model_dir))
    assert code == 2 and "neither a newbie recipe nor a ComfyUI graph" in err
    assert len(err.strip().splitlines()) == 1


def test_a_prompt_carrying_its_own_system_prompt_is_read_as_written():
    from newbie.config import TextConfig
    from newbie.model.text import gemma_text

    cfg, text = TextConfig(), TEMPLATE.replace("{user_prompt}", USER)
    assert gemma_text(text, cfg) == text and gemma_text(NEG, cfg) == NEG  # as ComfyUI feeds Gemma
    assert gemma_text(USER, cfg) == cfg.system_prompt_xml + USER  # newbie's own prompts are unchanged


def _nested_workflow(per_level: int, levels: int) -> dict:
    """A few KB of JSON: each subgraph holds `per_level` instances of the next one (10 x 8: 10^8 nodes
    once expanded without bounds)."""
    defs = []
    for level in range(levels):
        inner = f"sub-{level + 1}" if level + 1 < levels else "StringReplace"
        nodes = [
            {"id": i, "type": inner, "mode": 0, "widgets_values": [], "inputs": []} for i in range(per_level)
        ]
        defs.append({"id": f"sub-{level}", "nodes": nodes, "links": [], "inputs": []})
    top = {"id": 1, "type": "sub-0", "mode": 0, "widgets_values": [], "inputs": []}
    return {"nodes": [top], "links": [], "definitions": {"subgraphs": defs}}


def _doubling_chain(depth: int) -> dict:
    """StringConcatenate n+1 = n + n: without memoisation 2^depth evaluations, and a text of 2^depth."""
    graph = api_graph()
    graph["c0"] = {"class_type": "PrimitiveString", "inputs": {"value": "ab"}}
    for i in range(1, depth + 1):
        prev = [f"c{i - 1}", 0]
        graph[f"c{i}"] = {"class_type": "StringConcatenate", "inputs": {"string_a": prev, "string_b": prev}}
    graph["41:43"]["inputs"]["text"] = [f"c{depth}", 0]
    return graph


def test_graph_bombs_stop_with_one_line_in_bounded_time(tiny_model_dir, tmp_path, capsys):
    import time

    t0 = time.monotonic()
    with pytest.raises(NewbieError, match="too large"):
        workflow_to_api(_nested_workflow(10, 8))
    with pytest.raises(NewbieError, match="grows past"):
        settings_from_graph(_doubling_chain(45))
    assert time.monotonic() - t0 < 10
    # a chain of 12 doublings (an 8 KB prompt) is fine and computed once per node
    settings, _ = settings_from_graph(_doubling_chain(12))
    assert settings.prompt == "ab" * 4096
    for name, chunks in (
        ("nested.png", {"workflow": _nested_workflow(10, 8)}),
        ("chain.png", {"prompt": _doubling_chain(45)}),
    ):
        src = write_png(tmp_path / name, **chunks)
        code, _, err = run(capsys, "generate", "--from", str(src), "--model", str(tiny_model_dir))
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert time.monotonic() - t0 < 30
