import torch

from newbie.precision import compile_cache


def _model(width=4):
    return torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.LayerNorm(width))


def test_the_key_changes_with_shapes_dtype_options_and_torch(monkeypatch):
    cpu = torch.device("cpu")
    key = compile_cache.cache_key(_model(), cpu, {"mode": None})
    assert key == compile_cache.cache_key(_model(), cpu, {"mode": None})  # weights' values do not matter
    assert key != compile_cache.cache_key(_model(8), cpu, {"mode": None})
    assert key != compile_cache.cache_key(_model().to(torch.bfloat16), cpu, {"mode": None})
    assert key != compile_cache.cache_key(_model(), cpu, {"mode": "max-autotune"})
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert key != compile_cache.cache_key(_model(), cpu, {"mode": None})


def test_off_unless_asked_for(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    assert compile_cache.open_bundle(_model(), torch.device("cpu"), {}) is None
    monkeypatch.setenv(compile_cache.ENV, "1")
    bundle = compile_cache.open_bundle(_model(), torch.device("cpu"), {})
    assert bundle is not None and not bundle.restored and bundle.path.parent.parent == tmp_path


def test_saved_once_then_loaded_and_a_damaged_bundle_is_dropped(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(compile_cache.ENV, "1")
    saved, loaded = [], []
    monkeypatch.setattr(
        torch.compiler, "save_cache_artifacts", lambda: saved.append(1) or (b"artifacts", None)
    )

    def load(data):
        loaded.append(data)
        if data != b"artifacts":
            raise RuntimeError("bad bundle")
        return object()

    monkeypatch.setattr(torch.compiler, "load_cache_artifacts", load)
    first = compile_cache.open_bundle(_model(), torch.device("cpu"), {})
    compile_cache.close_bundle(first)
    assert first.path.read_bytes() == b"artifacts" and saved == [1]
    assert not list(first.path.parent.glob("*.tmp"))
    second = compile_cache.open_bundle(_model(), torch.device("cpu"), {})
    compile_cache.close_bundle(second)
    assert second.restored and loaded == [b"artifacts"] and saved == [1]  # not saved again
    first.path.write_bytes(b"garbage")
    third = compile_cache.open_bundle(_model(), torch.device("cpu"), {})
    assert not third.restored and not first.path.exists()
    compile_cache.close_bundle(third)
    assert first.path.read_bytes() == b"artifacts"
