import shutil

import pytest
import torch
from safetensors.torch import load_file

import newbie
from newbie.errors import CheckpointError
from newbie.loading.dit import load_dit
from newbie.loading.text import load_gemma, load_jina
from newbie.loading.vae import load_vae


def _same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].device == sb[k].device, k
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_parallel_load_equals_one_by_one_loads(tiny_model_dir, dtype):
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype=dtype)
    want = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    _same(pipe.dit, load_dit(tiny_model_dir, pipe.spec.dit, want))
    _same(pipe.text.gemma, load_gemma(tiny_model_dir / "text_encoder", want))
    _same(pipe.text.jina, load_jina(tiny_model_dir / "clip_model", want))
    _same(pipe.codec.vae, load_vae(tiny_model_dir / "vae", torch.float32)[0])
    # and the tensors are the files' own, cast once (no detour through another dtype)
    raw = load_file(str(tiny_model_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
    for k, v in pipe.dit.state_dict().items():
        assert torch.equal(v, raw[k].to(want)), k


def test_parallel_load_of_the_embedded_demo_model_matches(monkeypatch):
    pipe = newbie.load(device="cpu")
    folder = pipe.folder.root
    _same(pipe.dit, load_dit(folder, pipe.spec.dit, torch.float32))
    _same(pipe.text.gemma, load_gemma(folder / "text_encoder", torch.float32))


def test_the_transformer_error_comes_first_as_in_a_one_by_one_load(tiny_model_dir, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_model_dir, root)
    for part in ("transformer", "text_encoder"):
        f = next((root / part).glob("*.safetensors"))
        f.write_bytes(f.read_bytes()[:-64])  # truncated: both damaged
    with pytest.raises(CheckpointError) as err:
        newbie.load(root, device="cpu", dtype="fp32")
    assert str(root / "transformer") in str(err.value)


def test_a_broken_vae_is_named_after_the_other_components_load(tiny_model_dir, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_model_dir, root)
    f = next((root / "vae").glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:-64])
    with pytest.raises(CheckpointError) as err:
        newbie.load(root, device="cpu", dtype="fp32")
    assert str(root / "vae") in str(err.value)


def test_a_missing_tokenizer_is_named_after_a_damaged_transformer(tiny_model_dir, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(tiny_model_dir, root)
    for f in (root / "text_encoder").glob("tokenizer*"):
        f.unlink()
    with pytest.raises(CheckpointError, match="no Gemma tokenizer"):
        newbie.load(root, device="cpu", dtype="fp32")
    f = next((root / "transformer").glob("*.safetensors"))
    f.write_bytes(f.read_bytes()[:-64])
    with pytest.raises(CheckpointError) as err:
        newbie.load(root, device="cpu", dtype="fp32")
    assert str(root / "transformer") in str(err.value)
