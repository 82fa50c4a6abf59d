"""The API body's ComfyUI options (noise, schedule, res_multistep) reach the engine and its recipes."""

import base64
import io
import json

import numpy as np
from PIL import Image

from tests.serve.conftest import FAST


def test_comfy_noise_schedule_and_sampler_through_the_api(make_client, tiny_pipeline):
    client, _ = make_client()
    body = {"prompt": "1girl", **FAST, "noise": "comfy", "schedule": "simple", "sampler": "res_multistep"}
    r = client.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    ref = tiny_pipeline.generate(
        "1girl",
        seed=7,
        steps=2,
        width=32,
        height=32,
        noise="comfy",
        schedule="simple",
        sampler="res_multistep",
    )
    with Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))) as im:
        assert np.array_equal(np.asarray(im), np.asarray(ref.images[0]))
        recipe = json.loads(im.info["newbie"])
    assert (recipe["noise"], recipe["schedule"], recipe["sampler"]) == ("comfy", "simple", "res_multistep")
    bad = client.post("/v1/jobs", json={"prompt": "a", **FAST, "noise": "gpu"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "noise"
