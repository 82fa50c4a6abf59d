"""The artist workflows over HTTP (issue 10): img2img and inpainting with base64 images, LoRA adapters named
under DATA/adapters/, and the hires pass, on the tiny checkpoint."""

import base64
import io
import json
import os

import numpy as np
from PIL import Image

from newbie.adapters import linear_shapes
from tests.adapters.makers import write_peft
from tests.serve.conftest import FAST
from tests.serve.test_api import _error, _wait


def _b64_png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _gradient(mode="RGB"):
    y, x = np.mgrid[0:32, 0:32]
    rgb = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1).astype(np.uint8)  # smooth: a small PNG
    return Image.fromarray(rgb).convert(mode)


def _png(client, status, index=0):
    r = client.get(status["images"][index])
    assert r.status_code == 200
    with Image.open(io.BytesIO(r.content)) as im:
        return np.asarray(im.convert("RGB"))


def test_img2img_and_inpainting_with_base64_images(make_client, tiny_pipeline):
    client, service = make_client()
    init = _gradient()
    body = {"prompt": "1girl", **FAST, "init_image": _b64_png(init), "strength": 0.5}
    job = client.post("/v1/jobs", json=body)
    assert job.status_code == 202, job.text
    assert job.json()["params"]["strength"] == 0.5 and len(job.json()["params"]["init_image"]) == 64
    done = _wait(client, job.json()["id"])
    assert done["state"] == "done", done["error"]
    ref = tiny_pipeline.generate("1girl", seed=7, steps=2, width=32, height=32, init_image=init, strength=0.5)
    assert np.array_equal(_png(client, done), np.asarray(ref.images[0]))
    assert (service.images_dir / done["id"] / "init_image.png").is_file()  # kept in the job's folder

    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    r = client.post(
        "/v1/images/generations",
        json={**body, "mask": _b64_png(mask), "mask_feather": 2, "strength": None},
    )
    assert r.status_code == 200, r.text
    with Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))) as im:
        out = np.asarray(im.convert("RGB"))
    assert np.array_equal(out[:8], np.asarray(init)[:8])  # outside the mask: the input's exact pixels
    assert not np.array_equal(out[12:20, 12:20], np.asarray(init)[12:20, 12:20])


def test_bad_images_get_400(make_client):
    client, service = make_client()
    post = lambda body: client.post("/v1/jobs", json={"prompt": "a", **FAST, **body})  # noqa: E731
    assert _error(post({"init_image": "not base64!"}), 400)["param"] == "init_image"
    junk = base64.b64encode(b"GIF89a junk").decode()
    assert _error(post({"init_image": junk}), 400)["code"] == "invalid_image"
    init, small = _b64_png(_gradient()), _b64_png(Image.new("L", (16, 16), 255))
    assert "must match" in _error(post({"init_image": init, "mask": small}), 400)["message"]
    assert "input image" in _error(post({"strength": 0.5}), 400)["message"]
    assert _error(post({"init_image": init, "strength": 2}), 422)["code"] == "invalid_strength"
    assert service.store.counts()["queued"] == 0 and not list(service.images_dir.iterdir())


def test_lora_names_stay_inside_the_adapters_folder(make_client, tmp_path):
    client, service = make_client()
    (service.data_dir / "adapters").mkdir()
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    os.symlink(outside, service.data_dir / "adapters" / "link.safetensors")
    post = lambda name: client.post(  # noqa: E731
        "/v1/jobs", json={"prompt": "a", **FAST, "loras": [{"name": name, "strength": 0.5}]}
    )
    for bad in ("../outside.safetensors", str(outside), "a/../../outside.safetensors", "C:\\x.safetensors"):
        assert _error(post(bad), 400)["code"] == "invalid_lora", bad
    assert "outside" in _error(post("link.safetensors"), 400)["message"]
    missing = _error(post("nope.safetensors"), 400)
    assert missing["code"] == "lora_not_found" and "nope.safetensors" in missing["message"]
    assert _error(client.post("/v1/jobs", json={"prompt": "a", "loras": [{"path": "/x"}]}), 422)
    assert service.store.counts()["queued"] == 0


def test_a_lora_from_the_adapters_folder_is_applied(make_client, tiny_pipeline):
    client, service = make_client()
    write_peft(service.data_dir / "adapters" / "style", linear_shapes(tiny_pipeline.dit))
    base = client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()
    lora = {"name": "style", "strength": 1.0}
    job = client.post("/v1/jobs", json={"prompt": "1girl", **FAST, "loras": [lora]})
    assert job.status_code == 202, job.text
    assert job.json()["params"]["loras"] == [{"name": "style", "strength": 1.0}]  # no server path shown
    with_lora = _wait(client, job.json()["id"])
    assert with_lora["state"] == "done", with_lora["error"]
    assert not np.array_equal(_png(client, _wait(client, base["id"])), _png(client, with_lora))
    ref = tiny_pipeline.generate(
        "1girl", seed=7, steps=2, width=32, height=32, loras=[(service.data_dir / "adapters" / "style", 1.0)]
    )
    assert np.array_equal(_png(client, with_lora), np.asarray(ref.images[0]))
    tiny_pipeline.adapters.clear()


def test_hires_reaches_the_pipeline(make_client):
    client, _ = make_client()
    job = client.post("/v1/jobs", json={"prompt": "1girl", **FAST, "hires": True}).json()
    assert job["params"]["hires"]["width"] == 64 and job["steps"] == 3  # 2 steps + 1 hires step
    done = _wait(client, job["id"])
    assert done["state"] == "done" and done["step"] == 3
    assert _png(client, done).shape == (64, 64, 3)
    hires = {"scale": 1.5, "upscaler": "latent", "steps": 2}
    job = client.post("/v1/jobs", json={"prompt": "1girl", **FAST, "hires": hires}).json()
    expected = {"width": 48, "height": 48, "upscaler": "latent", "strength": 0.5, "steps": 2}
    assert job["params"]["hires"] == expected
    assert _png(client, _wait(client, job["id"])).shape == (48, 48, 3)
    post = lambda hires: client.post("/v1/jobs", json={"prompt": "a", **FAST, "hires": hires})  # noqa: E731
    assert _error(post({"scale": 8}), 400)["param"] == "size"  # 256x256: over the server's pixel limit
    assert _error(post({"size": 2}), 422)


def test_symlinks_inside_an_adapter_folder_are_refused(make_client, tiny_pipeline, tmp_path):
    """A LoRA folder under adapters/ whose weights file or config is a link to a file outside (issue 27)."""
    client, service = make_client()
    outside = tmp_path / "secret"
    write_peft(outside, linear_shapes(tiny_pipeline.dit))
    post = lambda name: client.post(  # noqa: E731
        "/v1/jobs", json={"prompt": "a", **FAST, "loras": [{"name": name, "strength": 0.5}]}
    )
    for linked in ("adapter_model.safetensors", "adapter_config.json"):
        folder = service.data_dir / "adapters" / f"via-{linked.split('.')[0]}"
        write_peft(folder, linear_shapes(tiny_pipeline.dit))
        (folder / linked).unlink()
        os.symlink(outside / linked, folder / linked)
        error = _error(post(folder.name), 400)
        assert error["code"] == "invalid_lora" and "outside" in error["message"], error
        assert str(tmp_path) not in error["message"]
    assert service.store.counts()["queued"] == 0


def test_hostile_lora_names_and_configs_are_400_not_500(make_client, tiny_pipeline):
    client, service = make_client()
    folder = service.data_dir / "adapters" / "typo"
    write_peft(folder, linear_shapes(tiny_pipeline.dit))
    config = folder / "adapter_config.json"
    post = lambda name: client.post(  # noqa: E731
        "/v1/jobs", json={"prompt": "a", **FAST, "loras": [{"name": name, "strength": 0.5}]}
    )
    for name in ("a\x00b", "x" * 300, "d/" + "y" * 300):
        error = _error(post(name), 400)
        assert error["code"] == "invalid_lora" and "\x00" not in error["message"]
    for field, value in (("r", "two"), ("lora_alpha", "two"), ("alpha_pattern", {"(": 2})):
        config.write_text(json.dumps({"r": 2, "lora_alpha": 4, field: value}))
        error = _error(post("typo"), 400)
        assert f"'{field}'" in error["message"] and str(service.data_dir) not in error["message"], error
    assert service.store.counts()["queued"] == 0


def test_image_bombs_are_refused_on_their_header(make_client):
    """A tiny PNG claiming 1x60,000 (under the pixel cap, but a side no image needs), a JPEG header
    claiming more pixels than the cap, and a PNG with a >1 MB compressed text chunk: 400, nothing decoded."""
    import struct
    import zlib

    client, service = make_client()
    post = lambda image: client.post(  # noqa: E731
        "/v1/jobs", json={"prompt": "a", **FAST, "init_image": base64.b64encode(image).decode()}
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def png(width: int, height: int, extra: bytes = b"") -> bytes:
        header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        rows = zlib.compress(b"\x00" * (width + 1) * min(height, 4))
        return b"\x89PNG\r\n\x1a\n" + header + extra + chunk(b"IDAT", rows) + chunk(b"IEND", b"")

    tall = _error(post(png(1, 60_000)), 400)  # under this test's pixel cap, over any side we need
    assert tall["code"] == "invalid_image" and "per side" in tall["message"]
    wide = _error(post(png(5000, 5000)), 400)
    assert "pixels" in wide["message"]
    text = chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"a" * (2 << 20)))
    assert _error(post(png(8, 8, text)), 400)["code"] == "invalid_image"
    assert service.store.counts()["queued"] == 0


def test_a_nan_lora_is_a_failed_job_with_the_reason_not_a_black_done(make_client, tiny_pipeline):
    from safetensors.torch import load_file, save_file

    client, service = make_client()
    folder = service.data_dir / "adapters" / "nan"
    write_peft(folder, linear_shapes(tiny_pipeline.dit))
    weights = folder / "adapter_model.safetensors"
    save_file({k: v.fill_(float("nan")) for k, v in load_file(weights).items()}, weights)
    job = client.post("/v1/jobs", json={"prompt": "1girl", **FAST, "loras": [{"name": "nan", "strength": 1}]})
    status = _wait(client, job.json()["id"])
    tiny_pipeline.adapters.clear()
    assert status["state"] == "failed" and "NaN" in status["error"], status
    assert not (service.images_dir / status["id"] / "0.png").exists()
    ok = _wait(client, client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    assert ok["state"] == "done"


def test_the_png_is_fsynced_before_the_job_is_marked_done(make_client, monkeypatch):
    import newbie.pipeline.images as images

    client, service = make_client()
    synced, at_finish = [], []
    real_fsync, real_finish = os.fsync, service.store.finish
    monkeypatch.setattr(images.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])

    def finish(job_id, state, **kw):
        at_finish.append(len(synced))
        return real_finish(job_id, state, **kw)

    monkeypatch.setattr(service.store, "finish", finish)
    status = _wait(client, client.post("/v1/jobs", json={"prompt": "1girl", **FAST}).json()["id"])
    assert status["state"] == "done" and at_finish == [2]  # the file, then its folder
