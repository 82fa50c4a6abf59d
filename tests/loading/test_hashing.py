import hashlib
import json
import threading

import newbie
from newbie.loading.hashing import cache_file, file_sha256


def test_load_hashes_the_transformer_in_the_background(tiny_model_dir):
    newbie.load(tiny_model_dir, device="cpu", dtype="fp32")
    for t in threading.enumerate():
        if t.name == "newbie-hash":
            t.join(timeout=60)
    f = (tiny_model_dir / "transformer" / "diffusion_pytorch_model.safetensors").resolve()
    known = json.loads(cache_file().read_text())
    (key,) = [k for k in known if k.startswith(f"{f}|")]
    assert known[key] == hashlib.sha256(f.read_bytes()).hexdigest()


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
