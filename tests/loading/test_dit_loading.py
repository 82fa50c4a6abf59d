import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from newbie.bench.speed_peers import lumina2_state_dict
from newbie.config import DiTConfig
from newbie.errors import CheckpointError
from newbie.loading.dit import load_dit
from newbie.model.dit import NextDiT

BASE = DiTConfig()  # spec defaults: the tiny folder's config.json must override them


def _forward(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = m.cfg
    x = torch.randn(1, 16, 8, 8, generator=g)
    return m(
        x,
        torch.rand(1, generator=g),
        torch.randn(1, 5, cfg.cap_feat_dim, generator=g),
        None,
        torch.randn(1, cfg.clip_text_dim, generator=g),
    )


def _reference(tiny_model_dir):
    sd = load_file(str(tiny_model_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    cfg = json.loads((tiny_model_dir / "transformer" / "config.json").read_text())
    return sd, cfg


def test_official_folder_loads_strictly_and_drops_norm_final(tiny_model_dir):
    sd, _ = _reference(tiny_model_dir)
    assert "norm_final.weight" in sd
    m = load_dit(tiny_model_dir, BASE, torch.float32)
    assert m.cfg.dim == 48 and m.cfg.n_layers == 2
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert next(m.parameters()).dtype == torch.float32


def test_loads_in_target_dtype(tiny_model_dir):
    m = load_dit(tiny_model_dir / "transformer", BASE, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())


def test_diffusers_layout_and_prefixes_give_the_same_model(tiny_model_dir, tmp_path):
    sd, cfg = _reference(tiny_model_dir)
    ref = load_dit(tiny_model_dir, BASE, torch.float32)
    dcfg = ref.cfg
    diff = lumina2_state_dict({k: v for k, v in sd.items() if k != "norm_final.weight"}, dcfg)
    # lumina2_state_dict skips the pooled path (the parity test feeds it); the Disty0 layout nests it
    for k, v in sd.items():
        if k.startswith(("clip_text_pooled_proj.", "time_text_embed.")):
            diff["time_caption_embed." + k] = v
    folder = tmp_path / "diffusers" / "transformer"
    folder.mkdir(parents=True)
    save_file(diff, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "Lumina2Transformer2DModel",
                "hidden_size": dcfg.dim,
                "num_layers": dcfg.n_layers,
                "num_refiner_layers": dcfg.n_refiner_layers,
                "num_attention_heads": dcfg.n_heads,
                "num_kv_heads": dcfg.n_kv_heads,
                "axes_dim_rope": list(dcfg.axes_dims),
                "axes_lens": list(dcfg.axes_lens),
                "cap_feat_dim": dcfg.cap_feat_dim,
                "pooled_projection_dim": dcfg.clip_text_dim,
                "multiple_of": dcfg.multiple_of,
                "ffn_dim_multiplier": None,
                "norm_eps": 1e-5,
            }
        )
    )
    m = load_dit(folder.parent, BASE, torch.float32)
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k

    # a single file with the ComfyUI-style prefix and no config beside it (sizes checked, layer counts from keys)
    single = tmp_path / "single.safetensors"
    save_file({"model.diffusion_model." + k: v for k, v in sd.items()}, str(single))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_dit(
            single, BASE, torch.float32
        )  # spec widths (2304) do not match a tiny file: an error, not a guess
    m2 = load_dit(single, dcfg.replace(n_layers=36), torch.float32)
    assert m2.cfg.n_layers == 2
    torch.testing.assert_close(_forward(m2), _forward(ref))


def _damaged_copy(tiny_model_dir, tmp_path, edit):
    sd, cfg = _reference(tiny_model_dir)
    edit(sd)
    folder = tmp_path / "bad" / "transformer"
    folder.mkdir(parents=True)
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder.parent


def test_missing_key_is_named(tiny_model_dir, tmp_path):
    root = _damaged_copy(tiny_model_dir, tmp_path, lambda sd: sd.pop("layers.1.attention.k_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): layers\.1\.attention\.k_norm\.weight"):
        load_dit(root, BASE)


def test_unexpected_key_is_named(tiny_model_dir, tmp_path):
    root = _damaged_copy(
        tiny_model_dir, tmp_path, lambda sd: sd.update({"layers.9.extra.weight": torch.zeros(2)})
    )
    with pytest.raises(CheckpointError, match=r"unexpected 1 key\(s\): layers\.9\.extra\.weight"):
        load_dit(root, BASE)


def test_wrong_shape_is_named(tiny_model_dir, tmp_path):
    root = _damaged_copy(tiny_model_dir, tmp_path, lambda sd: sd.update({"x_embedder.bias": torch.zeros(7)}))
    with pytest.raises(CheckpointError, match=r"x_embedder\.bias \(7,\) != \(48,\)"):
        load_dit(root, BASE)


def test_truncated_and_garbage_files_are_reported(tiny_model_dir, tmp_path):
    src = tiny_model_dir / "transformer" / "diffusion_pytorch_model.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(src.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="cut.safetensors: damaged safetensors file"):
        load_dit(cut, BASE)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01garbage" * 3)
    with pytest.raises(CheckpointError, match="junk.safetensors: damaged"):
        load_dit(junk, BASE)


def test_config_disagreeing_with_tensors_is_an_error(tiny_model_dir, tmp_path):
    sd, cfg = _reference(tiny_model_dir)
    cfg["n_layers"] = 3
    folder = tmp_path / "m" / "transformer"
    folder.mkdir(parents=True)
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"missing .*layers\.2\."):
        load_dit(folder.parent, BASE)


def _real_layout_96(tmp_path, pooled_out: int, mix_in: int):
    """A real-layout folder at dim 96 / clip_text_dim 32, its pooled-path tensors written by hand."""
    cfg = DiTConfig(
        dim=96,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=8,
        n_kv_heads=4,
        cap_feat_dim=64,
        clip_text_dim=32,
        axes_dims=(4, 4, 4),
        axes_lens=(64, 32, 32),
        multiple_of=16,
    )
    with torch.device("meta"):
        names = NextDiT(cfg).state_dict()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) for k, v in names.items()}
    sd["clip_text_pooled_proj.1.weight"] = torch.randn(pooled_out, 32, generator=g)
    sd["clip_text_pooled_proj.1.bias"] = torch.randn(pooled_out, generator=g)
    sd["time_text_embed.1.weight"] = torch.randn(96, mix_in, generator=g)
    sd["norm_final.weight"] = torch.ones(96)
    folder = tmp_path / "m96" / "transformer"
    folder.mkdir(parents=True)
    save_file(sd, str(folder / "diffusion_pytorch_model.safetensors"))
    (folder / "config.json").write_text(
        json.dumps(
            {
                "_class_name": "NextDiT_3B_GQA_patch2_Adaln_Refiner_WHIT_CLIP",
                "dim": 96,
                "n_layers": 1,
                "n_refiner_layers": 1,
                "n_heads": 8,
                "n_kv_heads": 4,
                "axes_dims": [4, 4, 4],
                "axes_lens": [64, 32, 32],
                "clip_text_dim": 32,
                "clip_img_dim": 32,
                "cap_feat_dim": 64,
                "multiple_of": 16,
            }
        )
    )
    return folder.parent, sd


def test_official_pooled_shapes_load_at_a_width_other_than_1024(tmp_path):
    # spec §2.3: clip_text_pooled_proj.1 is clip_text_dim -> clip_text_dim, time_text_embed.1 reads
    # min(dim, 1024) + clip_text_dim; a real-layout checkpoint at dim 96 / clip 32 must load as it is
    root, sd = _real_layout_96(tmp_path, pooled_out=32, mix_in=96 + 32)
    m = load_dit(root, BASE, torch.float32)
    assert (m.cfg.dim, m.cfg.clip_text_dim) == (96, 32)
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k]), k
    out = _forward(m)
    assert out.shape == (1, 16, 8, 8) and torch.isfinite(out).all()


def test_pre_official_pooled_shapes_are_refused_by_name(tmp_path):
    # the layout newbie used to build (pooled projected to the conditioning width) is not the official one
    root, _ = _real_layout_96(tmp_path, pooled_out=96, mix_in=2 * 96)
    with pytest.raises(CheckpointError, match=r"clip_text_pooled_proj\.1\.bias \(96,\) != \(32,\)"):
        load_dit(root, BASE)
