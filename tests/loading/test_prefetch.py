import os

from newbie.loading.prefetch import prefetch, weight_paths


def test_weight_paths_finds_folder_files_and_single_files_and_skips_the_rest(tmp_path):
    model = tmp_path / "model"
    (model / "transformer").mkdir(parents=True)
    (model / "vae").mkdir()
    a = model / "transformer" / "diffusion_pytorch_model.safetensors"
    b = model / "vae" / "diffusion_pytorch_model.safetensors"
    for f in (a, b):
        f.write_bytes(b"x" * 64)
    (model / "vae" / "config.json").write_text("{}")
    single = tmp_path / "gemma_3_4b_it_bf16.safetensors"
    single.write_bytes(b"y" * 64)
    got = weight_paths(str(model), None, str(single), str(tmp_path / "missing"), str(model / "vae"), "demo")
    assert got == [a, b, single]  # each once, folders sorted, config files and unknown names left out


def test_prefetch_advises_every_file_from_a_thread_that_ends(tmp_path, monkeypatch):
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for f in files:
        f.write_bytes(b"z" * 4096)
    advised = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, *a: advised.append(a) or real(fd, *a))
    thread = prefetch([*files, tmp_path / "gone.safetensors"])  # a file deleted meanwhile is skipped
    thread.join(10)
    assert not thread.is_alive() and thread.daemon
    assert advised == [(0, 0, os.POSIX_FADV_WILLNEED)] * 3
    assert prefetch([]) is None
