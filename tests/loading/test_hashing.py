import hashlib
import json
import threading

import newbie
from newbie.loading.folder import locate
from newbie.loading.hashing import (
    BackgroundHashes,
    cache_file,
    component_files,
    component_hashes,
    file_sha256,
)


def test_load_hashes_every_component_in_the_background(tiny_model_dir):
    """load() starts the hashes of all four components (what every recipe records) and returns without them;
    they land in the on-disk cache, and the pipeline's hashes are the foreground ones."""
    pipe = newbie.load(tiny_model_dir, device="cpu", dtype="fp32")
    threads = [t for t in threading.enumerate() if t.name == "newbie-hash"]
    for t in threads:
        t.join(timeout=60)
    known = json.loads(cache_file().read_text())
    files = component_files(locate(tiny_model_dir))
    assert sorted(files) == ["clip_model", "text_encoder", "transformer", "vae"]
    for f in (p.resolve() for paths in files.values() for p in paths):
        (key,) = [k for k in known if k.startswith(f"{f}|")]
        assert known[key] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert pipe.component_hashes == component_hashes(locate(tiny_model_dir))
    assert pipe.model_hash == pipe.component_hashes["transformer"]


def test_background_hashes_wait_only_for_what_is_asked(tiny_model_dir):
    hashes = BackgroundHashes(locate(tiny_model_dir))
    assert list(hashes.get(("transformer",))) == ["transformer"]
    assert hashes.get() == component_hashes(locate(tiny_model_dir))


def test_threads_hashing_at_once_keep_every_entry(tmp_path):
    files = []
    for i in range(6):
        files.append(tmp_path / f"w{i}.bin")
        files[-1].write_bytes(bytes([i]) * (1 << 16))
    cache = tmp_path / "cache" / "hashes.json"
    threads = [threading.Thread(target=file_sha256, args=(f, cache)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    known = json.loads(cache.read_text())
    assert len(known) == 6 and not list(cache.parent.glob("*.tmp"))
    assert set(known.values()) == {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
